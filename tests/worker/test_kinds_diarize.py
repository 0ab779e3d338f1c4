"""A transcribe task with diarize takes the diarization settings of the slot running it, never of its spec."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import DATA
from scribefleet.config import Settings
from scribefleet.errors import DiarizationModelMissing
from scribefleet.options import TranscribeOptions
from scribefleet.pipeline.models import ModelCache
from scribefleet.worker.kinds import TaskContext, run_transcribe


def _context(tmp_path: Path, settings: Settings) -> TaskContext:
    models = ModelCache(1)
    return TaskContext(
        task_id="t1", slot_name="cpu0", device="cpu", cpu_threads=1, log_path=tmp_path / "t1.log",
        settings=settings, progress=lambda stage, fraction, extra=None: None, _models=lambda: models,
    )


def test_the_slot_settings_choose_the_backend_and_keep_the_token_secret(tmp_path: Path, model_path: Path) -> None:
    secret = "hf_not_for_logs_42"
    settings = Settings(_env_file=None, cache_dir=tmp_path / "cache", diarization_backend="pyannote", hf_token=secret)
    spec = {
        "input_path": str(DATA / "en01.wav"),
        "work_dir": str(tmp_path / "work"),
        "outputs": {"srt": str(tmp_path / "out" / "en01.srt")},
        "options": TranscribeOptions(diarize=True).model_dump(mode="json"),
        "model_path": str(model_path),
        "model_id": "tiny.en",
        "diarizer": {"backend": "resemblyzer"},  # a spec cannot choose for the slot
    }
    with pytest.raises(DiarizationModelMissing) as exc:
        run_transcribe(spec, _context(tmp_path, settings))
    assert secret not in repr(exc.value.to_dict())
    assert (tmp_path / "work" / "transcript.json").exists()  # transcribed; only diarization is missing


def test_the_token_reaches_slots_only_when_secrets_are_revealed() -> None:
    settings = Settings(_env_file=None, hf_token="hf_abc")
    assert settings.model_dump(mode="json")["hf_token"] == "**********"
    assert settings.model_dump(mode="json", context={"reveal_secrets": True})["hf_token"] == "hf_abc"


def test_hf_token_is_read_from_hugging_faces_own_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_env")
    assert Settings(_env_file=None).hf_token.get_secret_value() == "hf_env"
