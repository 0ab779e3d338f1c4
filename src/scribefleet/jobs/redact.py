"""Server paths out of what the HTTP API and the serverless handler show: a file is named by its name, never
by where it lies.

Error messages come from deep inside (PyAV quotes the path it could not
open, a slot reports the model folder it could not load). Before the API
shows such text, every path under the controller's own folders (state,
cache, models) is replaced by its last component: an upload is named by its
file name, an output by its name, a model by its folder's name.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from scribefleet.config import Settings


def _roots(settings: Settings, state_dir: Path) -> list[str]:
    roots = {state_dir, settings.cache_dir, settings.hf_home, settings.api_model_root}
    out = set()
    for root in roots:
        if root is not None:
            out |= {str(root), str(Path(root).expanduser().resolve())}
    return sorted((r for r in out if r not in ("/", "")), key=len, reverse=True)


def redact_paths(text: str | None, settings: Settings, state_dir: Path) -> str | None:
    """`text` with each path under the controller's folders cut to its last component."""
    if not text:
        return text
    pattern = re.compile("(?:" + "|".join(re.escape(r) for r in _roots(settings, state_dir)) + r")(?:/[^\s'\"(),;]*)?")
    return pattern.sub(lambda m: m.group(0).rstrip("/").rsplit("/", 1)[-1] or "…", text)


def redact_all(value: Any, settings: Settings, state_dir: Path) -> Any:
    """`redact_paths` over every string in a JSON-like value."""
    if isinstance(value, str):
        return redact_paths(value, settings, state_dir)
    if isinstance(value, dict):
        return {k: redact_all(v, settings, state_dir) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_all(v, settings, state_dir) for v in value]
    return value
