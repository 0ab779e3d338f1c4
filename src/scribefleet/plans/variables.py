"""`${name}` substitution in plan fields: plan variables, overrides and foreach items.

Only the exact forms `${name}` and `${name.attr}` are ours, where `attr` is one
of stem, name, parent, suffix (path parts of the value). Everything else that
starts with a dollar is left alone, so bash in shell commands keeps working:
`$HOME`, `$(date)`, `${VAR:-x}`, `${#VAR}`. `$$` is a literal dollar (write
`$${name}` for a literal `${name}`, and `$$$$` for bash's `$$`).

An undefined `${name}` is a plan error, with one exception: inside a shell
task's `run`, `cwd` and `env`, an undefined name in capitals (`${HOME}`,
`${LD_LIBRARY_PATH}`) is an environment variable and is left for bash.

In a shell task's `run`, a foreach item (`${item}`, `${item.stem}`...) is
file names, not code: it is quoted for bash where it stands, so `talk 1.wav`,
`it's.wav` and `$(rm -rf x).wav` are each one literal word, bare or inside
quotes. The plan's own variables are inserted as written (they may hold
several arguments).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

NAME_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*"
_NAME = re.compile(rf"^{NAME_PATTERN}$")
_REFERENCE = re.compile(rf"\$\$|\$\{{({NAME_PATTERN})(?:\.([A-Za-z_]+))?\}}")
ATTRIBUTES = ("stem", "name", "parent", "suffix")
RESERVED = ("item",)


@dataclass(frozen=True)
class Undefined:
    """A `${name}` with no value, and where it is in the text."""

    name: str
    reason: str
    offset: int  # characters into the text


def is_var_name(name: str) -> bool:
    return bool(_NAME.match(name))


def path_attribute(value: str, attribute: str) -> str:
    """`stem`, `name`, `parent` or `suffix` of a value read as a path."""
    path = PurePosixPath(value)
    if attribute == "parent":
        return str(path.parent)
    return str(getattr(path, attribute))


def shell_quote_at(text: str, offset: int, value: str) -> str:
    """`value` escaped so that bash reads it as one literal piece of a word at `offset` of the script `text`:
    quoted where it stands bare, escaped inside "..." and inside '...' (so `${item}` and `"${item}"` both work)."""
    state, i = "", 0  # "" bare, "'" or '"' inside that quote
    while i < offset:
        c = text[i]
        if c == "\\" and state != "'":
            i += 1  # the next character is escaped
        elif c in "'\"" and state in ("", c):
            state = c if state == "" else ""
        i += 1
    if state == "'":
        return value.replace("'", "'\\''")
    if state == '"':
        return re.sub(r'([\\$`"])', r"\\\1", value)
    return shlex.quote(value) if value else ""  # an empty part (a suffix-less item's .suffix) adds nothing


def substitute(text: str, scope: Mapping[str, str], *, bash_names: bool = False,
               shell_quoted: Collection[str] = ()) -> tuple[str, list[Undefined]]:
    """`text` with its references replaced, and the references that could not be. The values of the names in
    `shell_quoted` are escaped for bash where they stand (`shell_quote_at`)."""
    undefined: list[Undefined] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, attribute = match.group(1), match.group(2)
        if name not in scope:
            if bash_names and attribute is None and name.isupper():
                return match.group(0)  # an environment variable, for bash
            reason = "is only defined inside a foreach task" if name == "item" else "is not defined"
            undefined.append(Undefined(name, reason, match.start()))
            return match.group(0)
        if attribute is None:
            value = scope[name]
        elif attribute not in ATTRIBUTES:
            reason = f"has no attribute (use {', '.join(ATTRIBUTES)})"
            undefined.append(Undefined(f"{name}.{attribute}", reason, match.start()))
            return match.group(0)
        else:
            value = path_attribute(scope[name], attribute)
        return shell_quote_at(text, match.start(), value) if name in shell_quoted else value

    return _REFERENCE.sub(replace, text), undefined


def substitute_tree(
    value: Any, scope: Mapping[str, str], on_undefined: Callable[[Undefined], None], *, bash_names: bool = False,
    shell_quoted: Collection[str] = (),
) -> Any:
    """Substitute in every string of a YAML value (mapping values and list items; never keys)."""
    if isinstance(value, str):
        result, undefined = substitute(value, scope, bash_names=bash_names, shell_quoted=shell_quoted)
        for item in undefined:
            on_undefined(item)
        return result
    if isinstance(value, dict):
        return {k: substitute_tree(v, scope, on_undefined, bash_names=bash_names) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute_tree(v, scope, on_undefined, bash_names=bash_names) for v in value]
    return value


def scalar_text(value: Any) -> str | None:
    """A YAML scalar as the text it stands for in a plan (`true`, `3`, `0.5`); None if not a scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if value is None:
        return ""
    return None


def resolve_vars(
    declared: Mapping[str, Any],
    overrides: Mapping[str, str],
    report: Callable[[str, str], None],
) -> dict[str, str]:
    """Final values of the plan's variables; `report(name, message)` for each problem.

    Declared values may use other variables (`out: ${root}/out`), in any order;
    overrides are taken literally and win over declared values.
    """
    raw: dict[str, str] = {}
    for name, value in declared.items():
        text = scalar_text(value)
        if not isinstance(name, str) or not is_var_name(name) or name in RESERVED:
            report(str(name), f"'{name}' cannot be a variable name (letters, digits, _; not {', '.join(RESERVED)})")
        elif text is None:
            report(name, f"variable '{name}' must be a string or a number, not a {type(value).__name__}")
        else:
            raw[name] = text
    for name, value in overrides.items():
        if not is_var_name(name) or name in RESERVED:
            report(name, f"--var {name}=...: '{name}' cannot be a variable name")
    resolved: dict[str, str] = {n: v for n, v in overrides.items() if is_var_name(n) and n not in RESERVED}
    failed: set[str] = set()
    visiting: list[str] = []

    def resolve(name: str) -> str | None:
        if name in resolved or name in failed:
            return resolved.get(name)
        if name in visiting:
            cycle = " -> ".join([*visiting[visiting.index(name) :], name])
            report(name, f"variables refer to each other in a cycle: {cycle}")
            failed.add(name)
            return None
        visiting.append(name)
        scope: dict[str, str] = {}
        for ref in {m.group(1) for m in _REFERENCE.finditer(raw[name]) if m.group(1)}:
            value = resolve(ref) if ref in raw or ref in resolved else None
            if value is not None:
                scope[ref] = value
            elif ref in raw:
                failed.add(name)  # broken by a cycle already reported
        visiting.pop()
        if name in failed:
            return None
        text, undefined = substitute(raw[name], scope)
        for item in undefined:
            report(name, f"variable '{name}' uses ${{{item.name}}}, which {item.reason}")
        resolved[name] = text
        return text

    for name in raw:
        resolve(name)
    return resolved
