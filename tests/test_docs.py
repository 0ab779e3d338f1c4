"""The docs tell the truth: every setting and CLI flag that exists is documented, and nothing more."""

from __future__ import annotations

import re
from pathlib import Path

import typer.main

from scribefleet.cli.main import app
from scribefleet.config import Settings

DOCS = Path(__file__).parents[1] / "docs"


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
