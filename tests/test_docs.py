"""The docs tell the truth: every setting, CLI flag, error code, environment variable and HTTP route that
exists is documented, and nothing more; the README's commands, paths and links exist.

The apps are built in process and never started; nothing here runs a model or a server.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from scribefleet import errors
from scribefleet.cli.main import app
from scribefleet.config import Settings
from scribefleet.service.app import create_app
from scribefleet.service.controller import Controller
from scribefleet.service.worker_app import WorkerService, create_worker_app
from service.harness import service_settings

ROOT = Path(__file__).parents[1]
DOCS = ROOT / "docs"


def test_every_setting_is_documented_and_nothing_else() -> None:
    text = (DOCS / "configuration.md").read_text()
    table = text.split("### The default shell allowlist")[0]
    documented = set(re.findall(r"`(SCRIBEFLEET_[A-Z0-9_]+)`", table))
    in_code = {f"SCRIBEFLEET_{name.upper()}" for name in Settings.model_fields}
    assert documented == in_code


def _cli_flags() -> dict[str, set[str]]:
    group = typer.main.get_command(app)
    flags: dict[str, set[str]] = {}
    for name, cmd in group.commands.items():  # type: ignore[attr-defined]
        for sub_name, sub in getattr(cmd, "commands", {name: cmd}).items():
            key = name if sub is cmd else f"{name} {sub_name}"
            flags[key] = {opt for p in sub.params for opt in p.opts if opt.startswith("-")}
    return flags


def test_every_cli_flag_is_documented() -> None:
    text = (DOCS / "cli.md").read_text()
    missing = []
    for command, opts in _cli_flags().items():
        section = re.search(rf"^## `scribefleet {re.escape(command)}`.*?(?=^## |\Z)", text, flags=re.M | re.S)
        assert section, f"docs/cli.md has no section for `scribefleet {command}`"
        missing += [f"{command} {o}" for o in opts if f"`{o}`" not in section.group(0) and o != "--help"]
    assert not missing, f"undocumented flags: {missing}"


def test_no_documented_flag_is_missing() -> None:
    text = (DOCS / "cli.md").read_text()
    real = _cli_flags()
    for match in re.finditer(r"^## `scribefleet ([a-z ]+)`(.*?)(?=^## |\Z)", text, flags=re.M | re.S):
        command, body = match.group(1).strip(), match.group(2)
        assert command in real, f"docs/cli.md documents a command that does not exist: {command}"
        for opt in set(re.findall(r"^\| `(-{1,2}[a-z][a-z0-9_-]*)`", body, flags=re.M)):
            assert opt in real[command], f"docs/cli.md documents {command} {opt}, which does not exist"


def test_the_security_doc_covers_each_defence_and_names_real_settings() -> None:
    text = (DOCS / "security.md").read_text()
    headings = set(re.findall(r"^## (.+)$", text, flags=re.M))
    for topic in ("TLS", "Tokens", "sessions and CSRF", "Limits", "Files and paths", "SSRF"):
        assert any(topic in h for h in headings), f"docs/security.md has no section on {topic}"
    settings = {f"SCRIBEFLEET_{name.upper()}" for name in Settings.model_fields}
    named = set(re.findall(r"`(SCRIBEFLEET_[A-Z0-9_]+)`", text))
    assert named and named <= settings, f"docs/security.md names settings that do not exist: {named - settings}"
    for setting in ("SCRIBEFLEET_MAX_JSON_KB", "SCRIBEFLEET_AUTH_FAIL_LIMIT", "SCRIBEFLEET_UMASK", "SCRIBEFLEET_API_MODEL_ROOT"):
        assert setting in named, f"docs/security.md does not explain {setting}"


# ---------------------------------------------------------------------------------------------------------
# Error codes: every code the code can produce has a row in docs/errors.md, and every row is a real code.

SRC = ROOT / "src" / "scribefleet"
UPPER_SNAKE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+")
#: upper-snake strings of the code that are neither error codes nor environment variables
#: (sqlite3's error names, os.sysconf's names, a value of CUDA_DEVICE_ORDER)
NOT_CODES = re.compile(r"SQLITE_[A-Z]+|SC_[A-Z_]+|PCI_BUS_ID")


@functools.cache
def _python_sources() -> list[tuple[str, ast.Module]]:
    """(path under src/, syntax tree) of every module: parsed once, for the scans below."""
    return [(str(p.relative_to(SRC.parent)), ast.parse(p.read_text())) for p in sorted(SRC.rglob("*.py"))]


@functools.cache
def _upper_snake_strings() -> dict[str, set[str]]:
    """Every upper-snake string literal of src/ (code -> files): Python constants, and JS/HTML strings;
    a JS code built as "HTTP_" + status appears as `HTTP_<status>`, the way docs/errors.md writes it."""
    found: dict[str, set[str]] = {}
    for where, tree in _python_sources():
        skip: set[int] = set()
        nodes = list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.JoinedStr):  # the pieces of an f-string are no whole value
                skip.update(id(v) for v in node.values)
            if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
                skip.update(id(n) for n in ast.walk(node.value))
        for node in nodes:
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
                if UPPER_SNAKE.fullmatch(node.value):
                    found.setdefault(node.value, set()).add(where)
    for path in sorted(SRC.rglob("*")):
        where = str(path.relative_to(SRC.parent))
        if path.suffix in (".js", ".html"):
            for m in re.finditer(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_?)["'](\s*\+)?""", path.read_text()):
                value = m.group(1)
                if value.endswith("_") and m.group(2):
                    found.setdefault(value + "<status>", set()).add(where)
                elif UPPER_SNAKE.fullmatch(value):
                    found.setdefault(value, set()).add(where)
    return found


def _documented_codes() -> set[str]:
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*(?:<[a-z]+>)?)` \|", (DOCS / "errors.md").read_text(), flags=re.M))


def test_every_code_the_code_can_produce_is_documented() -> None:
    """A class of errors.py, or a code string built anywhere else (a slot's reply, the UI's script)."""
    documented, variables = _documented_codes(), _variables_in_code()
    classes = {cls.code for cls in [errors.ScribefleetError, *errors._all_subclasses(errors.ScribefleetError)]}
    missing = sorted(c for c in classes if c not in documented)
    assert not missing, f"error classes with no row in docs/errors.md: {missing}"
    unknown = {
        value: sorted(where) for value, where in _upper_snake_strings().items()
        if value not in documented and value not in variables and not NOT_CODES.fullmatch(value)
    }
    assert not unknown, (
        f"strings that look like error codes but have no row in docs/errors.md: {unknown} (document them, "
        "or, if they are no code, name them in NOT_CODES or read them as environment variables)"
    )


def test_every_documented_code_exists() -> None:
    unknown = _documented_codes() - set(errors.ERRORS_BY_CODE) - set(_upper_snake_strings())
    assert not unknown, f"docs/errors.md documents codes nothing produces: {sorted(unknown)}"


# ---------------------------------------------------------------------------------------------------------
# Environment variables: every one the code reads or sets is in docs/configuration.md; every one a doc names exists.

ENV_MAPPINGS = re.compile(r"(os\.)?environ|env")  # the names a mapping of environment variables has in src/


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    return f"{_dotted(node.value)}.{node.attr}" if isinstance(node, ast.Attribute) else ""


@functools.cache
def _variables_read_or_set() -> dict[str, set[str]]:
    """Names given to os.getenv / os.environ.get / env[...] / env.get(...) / ... anywhere in src/."""
    found: dict[str, set[str]] = {}
    for where, tree in _python_sources():
        for node in ast.walk(tree):
            key: ast.AST | None = None
            if isinstance(node, ast.Call) and node.args:
                func = _dotted(node.func)
                owner, _, method = func.rpartition(".")
                if func in ("os.getenv", "os.putenv", "os.unsetenv") or (
                    method in ("get", "pop", "setdefault") and ENV_MAPPINGS.fullmatch(owner)
                ):
                    key = node.args[0]
            elif isinstance(node, ast.Subscript) and ENV_MAPPINGS.fullmatch(_dotted(node.value)):
                key = node.slice
            name = key.value if isinstance(key, ast.Constant) else None
            if isinstance(name, str) and re.fullmatch(r"[A-Z][A-Z0-9_]+", name):
                found.setdefault(key.value, set()).add(where)
    return found


def _settings_variables() -> set[str]:
    """Every variable Settings reads: SCRIBEFLEET_<FIELD>, or the choices of the field's alias."""
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        choices = [str(c) for c in getattr(alias, "choices", [alias] if isinstance(alias, str) else [])]
        own = f"SCRIBEFLEET_{name.upper()}"
        assert not choices or own in choices, f"Settings.{name}: its alias lacks {own}, so the documented name does nothing"
        names.update(c.upper() for c in choices or [own])
    return names


def _cli_variables() -> set[str]:
    group = typer.main.get_command(app)
    names: set[str] = set()
    for cmd in [group, *group.commands.values()]:  # type: ignore[attr-defined]
        for sub in [cmd, *getattr(cmd, "commands", {}).values()]:
            for param in sub.params:
                envvar = getattr(param, "envvar", None)
                names.update([envvar] if isinstance(envvar, str) else envvar or [])
    return names


def _variables_in_code() -> set[str]:
    return _settings_variables() | _cli_variables() | set(_variables_read_or_set())


def test_every_variable_the_code_reads_or_sets_is_documented() -> None:
    """Settings and their seed aliases, CLI envvars, and what src/ reads or sets itself (a slot's environment)."""
    text = (DOCS / "configuration.md").read_text()
    missing = sorted(v for v in _variables_in_code() if not re.search(rf"\b{v}\b", text))
    assert not missing, f"variables the code reads or sets that docs/configuration.md does not name: {missing}"


def test_every_variable_a_doc_names_exists() -> None:
    """Every SCRIBEFLEET_* (and seed name WORKER_* / REMOTE_WORKER_*) in README and docs/ is read by the code."""
    real, codes = _variables_in_code(), set(errors.ERRORS_BY_CODE)
    wrong = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        named = re.findall(r"\b((?:SCRIBEFLEET|WORKER|REMOTE_WORKER)_[A-Z0-9_]*[A-Z0-9])\b(?!_?<)", page.read_text())
        for name in set(named):
            if name not in real and name not in codes:
                wrong.append(f"{page.name}: {name}")
    assert not wrong, f"docs name variables that nothing reads: {sorted(wrong)}"


# ---------------------------------------------------------------------------------------------------------
# HTTP routes: every route of the controller (docs/api.md) and of the remote worker (docs/remote-workers.md)
# is documented with its method, its query parameters and its header parameters; every route a doc names exists.

METHODS = "GET|POST|PUT|PATCH|DELETE|HEAD"
#: `GET /api/jobs/{id}/logs?format=jsonl|text`, `POST /api/handler/run[?wait_s=N]`, `GET /v1/jobs?idempotencyKey=K`
DOC_ROUTE = re.compile(rf"`({METHODS}) (/[^`\s\[?]*)(\[?\?[^`\s]*)?[^`]*`")


@dataclass(frozen=True)
class Route:
    """One (method, path) of an app, path parameters as `{}`, with what FastAPI declares for it."""

    method: str
    path: str
    query: frozenset[str]
    headers: frozenset[str]
    source: str


def _norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


def _routes(app_: Any) -> dict[tuple[str, str], Route]:
    routes = {}
    for route in app_.routes:
        if hasattr(route, "effective_route_contexts"):  # FastAPI >= 0.16x: included routers are lazy
            pairs = [(ctx.path, ctx.original_route) for ctx in route.effective_route_contexts()]
        else:
            pairs = [(route.path, route)]
        for path, original in pairs:
            dependant = getattr(original, "dependant", None)
            query = frozenset(p.alias for p in dependant.query_params) if dependant else frozenset()
            headers = frozenset(p.alias.lower() for p in dependant.header_params) if dependant else frozenset()
            endpoint = getattr(original, "endpoint", None)
            source = inspect.getsource(endpoint) if inspect.isfunction(endpoint) else ""
            for method in original.methods or {"GET"}:
                if method != "HEAD":  # answered wherever GET is (service/guards.py)
                    routes[(method, _norm(path))] = Route(method, _norm(path), query, headers, source)
    return routes


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[tuple[str, str], Route]]]:
    """The routes of the controller's and the worker's apps, built in process (never started), by doc page."""
    base = tmp_path_factory.mktemp("apps")
    with pytest.MonkeyPatch.context() as env:  # module scope runs before the autouse clean environment
        for key in [k for k in os.environ if k.startswith(("SCRIBEFLEET_", "WORKER_", "REMOTE_WORKER_"))]:
            env.delenv(key)
        settings = service_settings(base, worker_token="worker-token-0123456789", worker_model="tiny.en")
        controller = Controller(settings, base / "state", slots=1, device="cpu")
        worker = WorkerService(settings, base / "worker", slots=1, device="cpu")
        try:
            yield {
                "api.md": _routes(create_app(controller, settings)),
                "remote-workers.md": _routes(create_worker_app(worker)),
            }
        finally:
            controller.stop()
            worker.stop()


def _doc_routes(text: str) -> list[tuple[str, str, set[str]]]:
    """(method, path, query parameter names) of each route a page names as `METHOD /path`."""
    return [
        (m.group(1), _norm(m.group(2)), set(re.findall(r"[?&]([A-Za-z_][\w\[\]]*)=", m.group(3) or "")))
        for m in DOC_ROUTE.finditer(text)
    ]


def test_every_route_is_documented_with_its_parameters(apps: dict[str, dict[tuple[str, str], Route]]) -> None:
    problems = []
    for page, routes in apps.items():
        text = (DOCS / page).read_text()
        named = _doc_routes(text)
        for (method, path), route in sorted(routes.items()):
            mentions = [q for m, p, q in named if (m, p) == (method, path)]
            if not mentions:
                problems.append(f"{page} does not document {method} {path}")
                continue
            listed = set().union(*mentions)
            problems += [f"{page}: {method} {path} takes ?{q}= (not documented)" for q in sorted(route.query - listed)]
            problems += [f"{page}: {method} {path} reads the header {h} (not documented)" for h in sorted(route.headers)
                         if h not in text.lower()]
    assert not problems, "\n".join(problems)


def test_every_documented_route_exists(apps: dict[str, dict[tuple[str, str], Route]]) -> None:
    """In api.md a route of the controller; in any other page one of the controller or the worker."""
    everywhere = {**apps["remote-workers.md"], **apps["api.md"]}
    problems = []
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        routes = apps["api.md"] if page.name == "api.md" else everywhere
        for method, path, query in _doc_routes(page.read_text()):
            route = routes.get(("GET" if method == "HEAD" else method, path))
            if route is None:
                problems.append(f"{page.name} documents {method} {path}, which does not exist")
                continue
            problems += [f"{page.name}: {method} {path} has no query parameter {q}" for q in sorted(query)
                         if q not in route.query and f'"{q}"' not in route.source]
    assert not problems, "\n".join(problems)


def test_every_documented_header_is_in_the_code() -> None:
    """A header the API pages name (`X-CSRF-Token`, `Idempotency-Key`, `Retry-After`...) is read or set by src/."""
    code = "\n".join(p.read_text() for p in SRC.rglob("*") if p.suffix in (".py", ".js")).lower()
    header = re.compile(r"`((?:[Xx]-[A-Za-z-]+)|(?:[A-Z][a-z]+(?:-[A-Z][A-Za-z]*)+))(?::[^`]*)?`")
    missing = {
        f"{page}: {name}" for page in ("api.md", "remote-workers.md", "ui.md")
        for name in header.findall((DOCS / page).read_text()) if name.lower() not in code
    }
    assert not missing, f"headers the docs name that the code never reads or sets: {sorted(missing)}"


# ---------------------------------------------------------------------------------------------------------
# README: two set-up commands; every command, flag, path and link it names exists.

README = ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"README.md has no section '## {heading}'"
    return match.group(1)


def _code_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks, continuation lines joined, comments dropped."""
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.M | re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def _make_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), flags=re.M))


def test_the_quick_start_is_two_commands() -> None:
    commands = _code_lines(_section(README.read_text(), "Quick start"))
    assert commands == ["make run", "make test"], f"the quick start must be `make run` and `make test`, not {commands}"
    assert {"run", "test"} <= _make_targets()


def _commands_in_readme(text: str) -> list[str]:
    """Each `scribefleet ...` command line of the code blocks and inline code, up to its end (a pipe, `;`, `)`...)."""
    spans = _code_lines(text) + re.findall(r"`([^`\n]*scribefleet [a-z][^`\n]*)`", text)
    return [m.group(0) for span in spans for m in re.finditer(r"(?<![\w./-])scribefleet [a-z][^|;)&#]*", span)]


def test_every_command_and_flag_of_the_readme_exists() -> None:
    text, real = README.read_text(), _cli_flags()
    problems = []
    for line in _commands_in_readme(text):
        words = line.split()
        command = next((c for c in (" ".join(words[1:3]), words[1]) if c in real), None)
        if command is None:
            problems.append(f"no command `scribefleet {' '.join(words[1:3])}`")
            continue
        flags = {w.split("=")[0] for w in words if re.fullmatch(r"--?[a-z][\w-]*(=.*)?", w)}
        problems += [f"`scribefleet {command}` has no flag {f}" for f in sorted(flags - real[command])]
    for target in re.findall(r"(?<![\w-])make ([a-z][\w-]*)", text):
        if target not in _make_targets():
            problems.append(f"the Makefile has no target {target}")
    for module in re.findall(r"python -m (scribefleet[\w.]*)", text):
        spec = importlib.util.find_spec(module)
        if spec is None or (spec.submodule_search_locations and importlib.util.find_spec(f"{module}.__main__") is None):
            problems.append(f"no runnable module {module}")
    for path in re.findall(r"(?<![\w./$-])((?:bench|docker|docs|examples|src|tests)/[\w./-]+\.\w+)", text):
        if not (ROOT / path).exists():
            problems.append(f"no file {path}")
    assert not problems, f"README.md names what does not exist: {problems}"


def test_readme_paths_of_the_api_exist(apps: dict[str, dict[tuple[str, str], Route]]) -> None:
    """The URLs of its curl examples and the routes its prose names (`/health`, `/api/runtime`...)."""
    text = README.read_text()
    every = {**apps["api.md"], **apps["remote-workers.md"]}
    routes = [re.escape(path).replace(r"\{\}", "[^/]+") for _, path in every]
    paths = re.findall(r"(?:localhost|127\.0\.0\.1|gpu-box|gpu-server)(?::\d+)?(/[\w/.$-]*)", text)
    paths += re.findall(r"`(/(?:api|v1|health|metrics|ui)[\w/{}.-]*)`", text)
    missing = [p for p in paths if p != "/v1" and not any(re.fullmatch(r, p) for r in routes)]
    assert not missing, f"README.md names routes that do not exist: {missing}"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_link_of_the_readme_and_the_docs_resolves() -> None:
    problems = []
    for page in [README, *sorted(DOCS.glob("*.md"))]:
        text = page.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # a web address
            file, _, anchor = target.partition("#")
            linked = (page.parent / file).resolve() if file else page
            if not linked.exists():
                problems.append(f"{page.name}: {target} (no such file)")
            elif anchor and linked.suffix == ".md":
                anchors = {_slug(h) for h in re.findall(r"^#+ (.+)$", linked.read_text(), flags=re.M)}
                if anchor not in anchors:
                    problems.append(f"{page.name}: {target} (no such heading)")
    assert not problems, f"links that lead nowhere: {problems}"
