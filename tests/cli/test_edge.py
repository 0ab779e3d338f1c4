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


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["transcribe", "a.wav", "--out", ""], "--out"),
        (["transcribe", "a.wav", "--output_dir="], "--out"),
        (["transcribe", "a.wav", "--language", ""], "--language"),
        (["transcribe", "a.wav", "-l", "  "], "--language"),
        (["transcribe", "a.wav", "--cookies", ""], "--cookies"),
        (["transcribe", "a.wav", "--diarize", "--speaker-names", ""], "--speaker-names"),
        (["submit", "a.wav", "-o", ""], "--out"),
        (["submit", "a.wav", "--language", ""], "--language"),
        (["batch", "-i", "in", "--out", ""], "--out"),
        (["batch", "-i", "in", "--state", ""], "--state"),
        (["dispatch", "--out", ""], "--out"),
        (["logs", "x", "--state", ""], "--state"),
        (["cancel", "x", "--state", ""], "--state"),
        (["status", "--state", ""], "--state"),
        (["plan", "run", "plan.yaml", "--state", ""], "--state"),
        # an empty controller or token fell back to SCRIBEFLEET_CONTROLLER / SCRIBEFLEET_TOKEN
        (["submit", "a.wav", "--controller", ""], "--controller"),
        (["status", "x", "--token", " "], "--token"),
        (["batch", "-i", "in", "--controller", ""], "--controller"),
        (["cancel", "x", "--token", ""], "--token"),
        (["logs", "x", "--controller", ""], "--controller"),
    ],
)
def test_an_empty_value_is_refused_not_taken_for_the_default(
    argv: list[str], flag: str, tmp_path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """`--language ''` silently meant auto, `--out ''` the current folder (Path('') is '.')."""
    from scribefleet.cli.main import main

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capfd.readouterr().err
    assert exit_.value.code == 2, err
    assert f"error [INVALID_OPTIONS]: {flag} was given an empty value" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []  # nothing was written
