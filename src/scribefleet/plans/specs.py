"""The kind-specific fields of plan tasks: one pydantic model per kind.

A task mapping holds the common fields (id, kind, needs, ...) and the fields of
its kind side by side; `build_spec` validates the latter and returns the
task's `spec` dict, which is what the store keeps and a slot receives. The spec
dict validates again with the same model (`SPECS[kind].model_validate(spec)`),
so the code that runs a task reads typed fields, not loose keys.

Paths in specs are made absolute against the plan file's folder, so a spec
means the same thing whatever the working directory of the slot that runs it.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from scribefleet.options import FetchOptions, PublishOptions, TranscribeOptions, is_http_url
from scribefleet.plans.variables import scalar_text
from scribefleet.store.models import TASK_KINDS

Kind = Literal["transcribe", "shell", "aggregate", "llm"]
KINDS: tuple[str, ...] = TASK_KINDS  # declared once, in store/models.py
assert set(get_args(Kind)) == set(KINDS), "plans.specs.Kind must list store.models.TaskKind"
AGGREGATE_FORMATS = ("txt", "json", "md")
_TEXT_PLACEHOLDER = re.compile(r"\{\{\s*text\s*\}\}")


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TranscribeSpec(_Spec):
    """Transcribe one media file or URL into `out/<stem>.<format>` for each format (and publish them to S3)."""

    input: str = Field(min_length=1)  # a path, or an http(s) URL of one media (not a playlist)
    out: str = Field(min_length=1)
    options: TranscribeOptions = Field(default_factory=TranscribeOptions)
    fetch: FetchOptions | None = None  # how a URL input is downloaded: cookies, proxy, socket_timeout_s, limits
    publish: PublishOptions | None = None  # {target: s3://bucket/prefix/, endpoint_url?, region?}


class ShellSpec(_Spec):
    """Run `run` with `bash -c` in the slot's environment plus `env`, from `cwd`."""

    run: str = Field(min_length=1)
    cwd: str | None = None  # None = the plan file's folder (filled in by build_spec)
    env: dict[str, str] = Field(default_factory=dict)

    @field_validator("env", mode="before")
    @classmethod
    def _stringify_env(cls, value: object) -> object:
        if isinstance(value, dict):
            return {k: _env_text(v) for k, v in value.items()}
        return value

    @field_validator("run", "cwd")
    @classmethod
    def _no_nul(cls, value: str | None) -> str | None:
        if value is not None and "\0" in value:  # bash -c refuses it at run time: INTERNAL_ERROR
            raise ValueError("cannot hold a NUL character")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        # the slot's Popen refused these at run time with a bare ValueError: INTERNAL_ERROR
        bad = [k for k in value if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k)]
        if bad:
            raise ValueError(f"environment variable name(s) {', '.join(map(repr, bad))} are not valid: letters, "
                             "digits and _, not starting with a digit")  # fmt: skip
        if any("\0" in v for v in value.values()):
            raise ValueError("an environment variable's value cannot hold a NUL character")
        return value


class AggregateSpec(_Spec):
    """Combine the outputs of the task's needs (or `inputs`) into one `output` file."""

    output: str = Field(min_length=1)
    format: Literal["txt", "json", "md"]
    #: explicit files to combine; None = the outputs of the tasks it needs, in needs order
    inputs: list[str] | None = None
    title: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _format_from_suffix(cls, data: Any) -> Any:
        if isinstance(data, dict) and "format" not in data and isinstance(data.get("output"), str):
            suffix = Path(data["output"]).suffix.lstrip(".").lower()
            if suffix in AGGREGATE_FORMATS:
                return {**data, "format": suffix}
        return data


class LlmSpec(_Spec):
    """Send `prompt` with the text of `input` in place of {{text}} to a chat endpoint; write the answer to `output`."""

    prompt: str = Field(min_length=1)
    input: str = Field(min_length=1)
    output: str = Field(min_length=1)
    system: str | None = None
    model: str | None = None  # None = the configured default
    endpoint: str | None = None  # None = the slot's or the configured endpoint
    max_tokens: int | None = Field(default=None, gt=0)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)

    @field_validator("prompt")
    @classmethod
    def _needs_placeholder(cls, value: str) -> str:
        if not _TEXT_PLACEHOLDER.search(value):
            raise ValueError("the prompt must contain {{text}} where the input's text goes")
        return _TEXT_PLACEHOLDER.sub("{{text}}", value)


def _env_text(value: object) -> object:
    """YAML numbers and booleans as the text an environment variable holds (`4`, `true`)."""
    return scalar_text(value) if isinstance(value, (bool, int, float)) else value


SPECS: dict[str, type[_Spec]] = {
    "transcribe": TranscribeSpec,
    "shell": ShellSpec,
    "aggregate": AggregateSpec,
    "llm": LlmSpec,
}
#: fields of each kind that hold paths, made absolute against the plan's folder
PATH_FIELDS: dict[str, tuple[str, ...]] = {
    "transcribe": ("input", "out"),
    "shell": ("cwd",),
    "aggregate": ("output",),
    "llm": ("input", "output"),
}
_TRANSCRIBE_OWN = ("input", "out", "fetch", "publish")


def kind_fields(kind: str) -> list[str]:
    """The field names a task of this kind may carry besides the common ones."""
    if kind == "transcribe":
        return [*_TRANSCRIBE_OWN, *TranscribeOptions.model_fields]
    return list(SPECS[kind].model_fields)


def absolute(path: str, base_dir: Path) -> str:
    """`path` (may start with ~) made absolute against `base_dir`, without resolving links."""
    return os.path.normpath(base_dir / Path(path).expanduser())


def build_spec(kind: str, fields: dict[str, Any], base_dir: Path) -> dict[str, Any]:
    """Validate a task's kind fields; the JSON-ready spec dict. Raises pydantic.ValidationError."""
    if kind == "transcribe":
        own = {k: v for k, v in fields.items() if k in _TRANSCRIBE_OWN}
        options = TranscribeOptions.model_validate({k: v for k, v in fields.items() if k not in _TRANSCRIBE_OWN})
        spec: _Spec = TranscribeSpec.model_validate({**own, "options": options})
        data = spec.model_dump(mode="json")
        data["options"] = options.model_dump(mode="json", exclude_unset=True)
        for name in ("fetch", "publish"):
            if data[name] is None:
                del data[name]
            else:
                data[name] = getattr(spec, name).model_dump(mode="json", exclude_defaults=True)
    else:
        data = SPECS[kind].model_validate(fields).model_dump(mode="json")
    if kind == "shell" and data["cwd"] is None:
        data["cwd"] = str(base_dir)
    for name in PATH_FIELDS[kind]:
        if data.get(name) is not None and not is_http_url(data[name]):
            data[name] = absolute(data[name], base_dir)
    if kind == "aggregate" and data["inputs"] is not None:
        data["inputs"] = [absolute(p, base_dir) for p in data["inputs"]]
    return data


def explain(error: ValidationError, kind: str, common: list[str]) -> list[tuple[str | None, str]]:
    """A pydantic error as (field, readable message) pairs, one per mistake."""
    out: list[tuple[str | None, str]] = []
    allowed = [*common, *kind_fields(kind)]
    for err in error.errors():
        loc = [str(p) for p in err["loc"] if p != "options"]
        field = loc[0] if loc else None
        dotted = ".".join(loc)
        if err["type"] == "extra_forbidden":
            close = difflib.get_close_matches(dotted, allowed, n=1)
            takes = ", ".join(kind_fields(kind))
            hint = f" (did you mean '{close[0]}'?)" if close else f" (a {kind} task takes: {takes})"
            out.append((field, f"unknown field '{dotted}'{hint}"))
        elif err["type"] == "missing":
            extra = " (txt, json or md; or give 'output' one of those suffixes)" if dotted == "format" else ""
            out.append((field, f"missing field '{dotted}'{extra}"))
        else:
            message = str(err["msg"]).removeprefix("Value error, ")
            shown = f" (got {err['input']!r})" if not isinstance(err.get("input"), (dict, list)) else ""
            out.append((field, f"field '{dotted}': {message}{shown}" if dotted else message))
    return out
