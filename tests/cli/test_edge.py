"""cli/edge.py: whisper-style booleans, the one exit-code rule, one Settings per invocation."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from scribefleet.cli import edge
from scribefleet.config import Settings
from scribefleet.errors import FeatureUnavailable, InputNotFound, UsageError


def test_whisper_booleans_become_flags() -> None:
    argv = ["transcribe", "a.wav", "--word_timestamps", "True", "--verbose", "False", "--vad", "false", "b.wav",
            "--vad_filter=True", "--word-timestamps", "c.wav"]  # fmt: skip
    assert edge.whisper_booleans(argv) == ["transcribe", "a.wav", "--word-timestamps", "--no-vad", "b.wav", "--vad",
                                           "--word-timestamps", "c.wav"]  # fmt: skip


def test_one_exit_code_rule() -> None:
    assert edge.exit_code_of(UsageError("x")) == 2 and edge.exit_code_of(FeatureUnavailable("x")) == 2
    assert edge.exit_code_of(InputNotFound("x")) == 1
    assert edge.exit_code_of(KeyboardInterrupt()) == 130 and edge.exit_code_of(edge.Terminated()) == 143


def test_settings_are_built_once_per_invocation() -> None:
    app = typer.Typer()
    seen: list[Settings] = []

    @app.command()
    def show(ctx: typer.Context) -> None:
        seen.extend([edge.settings_of(ctx), edge.settings_of(ctx)])

    assert CliRunner().invoke(app, []).exit_code == 0
    assert len(seen) == 2 and seen[0] is seen[1]


def test_a_list_setting_that_is_not_json_is_a_usage_error_naming_its_variable(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # pydantic-settings decodes list settings as JSON before validating them: 'SCRIBEFLEET_URL_ALLOWLIST=127.0.0.1'
    # raised its SettingsError through every command (serve, status...) as a raw traceback
    from scribefleet.cli.main import main

    monkeypatch.setenv("SCRIBEFLEET_URL_ALLOWLIST", "127.0.0.1")
    with pytest.raises(SystemExit) as exit_:
        main(["status", "--state", str(tmp_path)])
    err = capfd.readouterr().err
    assert exit_.value.code == 2, err
    assert "[INVALID_OPTIONS]" in err and "SCRIBEFLEET_URL_ALLOWLIST is not valid JSON" in err
    assert "Traceback" not in err
