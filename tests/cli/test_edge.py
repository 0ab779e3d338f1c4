"""cli/edge.py: whisper-style booleans, the one exit-code rule, one Settings per invocation."""

from __future__ import annotations

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
    assert edge.exit_code_of(KeyboardInterrupt()) == 130


def test_settings_are_built_once_per_invocation() -> None:
    app = typer.Typer()
    seen: list[Settings] = []

    @app.command()
    def show(ctx: typer.Context) -> None:
        seen.extend([edge.settings_of(ctx), edge.settings_of(ctx)])

    assert CliRunner().invoke(app, []).exit_code == 0
    assert len(seen) == 2 and seen[0] is seen[1]
