"""pipeline/models.py: resolving --model values, the warm model cache, load errors with their fix."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import ctranslate2
import pytest

from scribefleet.config import Settings
from scribefleet.errors import CudaUnavailable, ModelLoadFailed, ModelNotFound, OutOfMemory, TranscriptionFailed
from scribefleet.pipeline.models import ModelCache, ResolvedModel, default_compute_type, device_error, resolve_model


def test_folder_with_model_bin_resolves_to_itself(model_path: Path, settings: Settings) -> None:
    resolved = resolve_model(str(model_path), settings)
    assert resolved.path == model_path.resolve()
    assert resolved.model_id == f"path:{model_path.resolve()}"


def test_tiny_en_is_the_bundled_package(model_path: Path, settings: Settings) -> None:
    resolved = resolve_model("tiny.en", settings.model_copy(update={"offline": True}))
    assert resolved == ResolvedModel(path=model_path, model_id="tiny.en")


@pytest.mark.parametrize("name", ["small", "large-v3", "Systran/faster-whisper-base"])
def test_download_names_offline_say_how_to_fix(name: str, settings: Settings) -> None:
    offline = settings.model_copy(update={"offline": True})
    with pytest.raises(ModelNotFound) as info:
        resolve_model(name, offline)
    assert info.value.code == "MODEL_NOT_FOUND"
    assert "local model folder" in info.value.message and "allow downloads" in info.value.message
    assert info.value.details["model"] == name
    assert not (offline.hf_home / "hub").exists() or not any((offline.hf_home / "hub").rglob("model.bin"))


@pytest.mark.parametrize("name", ["whisper-gigantic", "./no/such/folder", "a/b/c"])
def test_unknown_names_are_model_not_found(name: str, settings: Settings) -> None:
    with pytest.raises(ModelNotFound) as info:
        resolve_model(name, settings)
    assert "large-v3" in info.value.message  # lists what would have worked


def test_folder_without_model_bin_says_so(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ModelNotFound, match="no model.bin"):
        resolve_model(str(tmp_path), settings)


def test_default_compute_types() -> None:
    assert default_compute_type("cpu") == "int8"
    assert default_compute_type("cuda") in {"float16", "int8_float16"}


def test_cache_loads_once_and_reports(model_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    events: list[tuple[str, str]] = []
    cache = ModelCache(max_models=1, on_change=lambda event, model_id: events.append((event, model_id)))
    logger = logging.getLogger("scribefleet.models")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="scribefleet.models"):
            first = cache.get(ResolvedModel(model_path, "a"), device="cpu", compute_type="auto", cpu_threads=1)
            again = cache.get(ResolvedModel(model_path, "a"), device="cpu", compute_type="int8", cpu_threads=1)
            assert again is first  # "auto" on CPU is int8: same key, no second load
            assert cache.loaded == ["a"]
            cache.get(ResolvedModel(model_path, "b"), device="cpu", compute_type="int8", cpu_threads=1)
    finally:
        logger.removeHandler(caplog.handler)
    assert cache.loaded == ["b"]  # over max_models: the least recently used went
    assert events == [("loaded", "a"), ("loaded", "b"), ("unloaded", "a")]
    messages = [r.getMessage() for r in caplog.records if r.name == "scribefleet.models"]
    assert any(m.startswith("model a loaded on cpu (int8) in ") and m.endswith(" s") for m in messages)
    assert any(m.startswith("model a unloaded") for m in messages)


def test_cache_is_lru_not_fifo(model_path: Path) -> None:
    cache = ModelCache(max_models=2)
    for model_id in ("a", "b", "a", "c"):
        cache.get(ResolvedModel(model_path, model_id), device="cpu", compute_type="int8", cpu_threads=1)
    assert cache.loaded == ["a", "c"]
    cache.clear()
    assert cache.loaded == []


def test_corrupt_model_is_model_load_failed(model_path: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken model"
    shutil.copytree(model_path, broken)
    (broken / "model.bin").write_bytes(b"not a ctranslate2 model" * 100)
    with pytest.raises(ModelLoadFailed) as info:
        ModelCache(1).get(ResolvedModel(broken, "broken"), device="cpu", compute_type="int8", cpu_threads=1)
    assert info.value.code == "MODEL_LOAD_FAILED" and "broken" in info.value.message


def test_missing_model_bin_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound):
        ModelCache(1).get(ResolvedModel(tmp_path, "empty"), device="cpu", compute_type="int8", cpu_threads=1)


def test_unsupported_compute_type_is_refused_before_loading(model_path: Path) -> None:
    # it used to fail later as MODEL_LOAD_FAILED; a compute type is an option, so it is INVALID_OPTIONS up front
    from scribefleet.errors import UsageError

    with pytest.raises(UsageError):
        ModelCache(1).get(ResolvedModel(model_path, "x"), device="cpu", compute_type="int3_quantum", cpu_threads=1)


@pytest.mark.skipif(ctranslate2.get_cuda_device_count() > 0, reason="this machine has a usable GPU")
def test_cuda_without_gpu_is_cuda_unavailable_with_the_fix(model_path: Path) -> None:
    cache = ModelCache(1)
    with pytest.raises(CudaUnavailable) as info:
        cache.get(ResolvedModel(model_path, "tiny.en"), device="cuda", compute_type="auto", cpu_threads=1)
    assert "nvidia-cublas-cu12" in info.value.message and "--device cpu" in info.value.message
    assert cache.loaded == []


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("CUDA failed with error out of memory", OutOfMemory),
        ("std::bad_alloc", OutOfMemory),
        ("Library libcublas.so.12 is not found or cannot be loaded", CudaUnavailable),
        ("Could not load library libcudnn_ops.so.9", CudaUnavailable),
        ("CUDA driver version is insufficient for CUDA runtime version", CudaUnavailable),
        ("Unsupported model binary version", TranscriptionFailed),
    ],
)
def test_device_error_sorts_ctranslate2_messages(message: str, expected: type) -> None:
    err = device_error(RuntimeError(message), fallback=TranscriptionFailed, context="transcribing x.wav")
    assert type(err) is expected
    assert err.message.startswith("transcribing x.wav: ") and message in err.message
    assert err.details["error"] == message
    if expected is OutOfMemory:
        assert err.retryable and "--batch-size" in err.message


def test_the_compute_type_asked_for_is_the_one_loaded(make_job, tmp_path) -> None:
    from helpers import DATA
    from scribefleet.options import TranscribeOptions
    from scribefleet.pipeline.job import run_transcription
    from pipeline.conftest import ProgressLog

    loaded = {}
    for compute_type in ("float32", "auto"):
        job = make_job(DATA / "en01.wav", name=compute_type, options=TranscribeOptions(compute_type=compute_type))
        loaded[compute_type] = run_transcription(job, ModelCache(1), ProgressLog())["compute_type"]
    assert loaded == {"float32": "float32", "auto": "int8_float32"}  # int8 on CPU: int8 weights, float32 activations


def test_unknown_or_unsupported_compute_types_are_refused(model_path) -> None:
    from pydantic import ValidationError

    from scribefleet.errors import UsageError
    from scribefleet.options import TranscribeOptions

    with pytest.raises(ValidationError, match="unknown compute type 'bogus'; choose from auto"):
        TranscribeOptions(compute_type="bogus")
    assert TranscribeOptions(compute_type="INT8").compute_type == "int8"
    # float16 is a real compute type, but this CPU cannot run it: CTranslate2 would quietly use float32
    with pytest.raises(UsageError, match="compute type float16 is not supported on cpu; this cpu supports") as err:
        ModelCache(1).get(ResolvedModel(model_path, "tiny.en"), device="cpu", compute_type="float16", cpu_threads=1)
    assert err.value.code == "INVALID_OPTIONS" and "int8" in err.value.details["supported"]


@pytest.mark.parametrize("batched", [False, True], ids=["sequential-caller", "batched-caller-on-2-workers"])
def test_on_a_cpu_clips_are_encoded_aligned_and_generated_in_parts_with_the_same_words(model_path: Path,
                                                                                       real_speech, batched) -> None:
    """CpuClips (the cache's CPU models) gives the words the whole-batch calls give, in parts of the batch, on one
    worker or (a batched caller with 2 threads) on two at once."""
    import numpy as np
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    from scribefleet.pipeline.models import GENERATE_CLIPS, CpuClips

    path, _ = real_speech["sonnet001"]
    once = decode_audio(str(path))
    audio = np.concatenate([once, np.zeros(16000, dtype=np.float32)] * 3)  # 7 clips of real speech: one batch
    cached = ModelCache(max_models=1).get(ResolvedModel(path=model_path, model_id="tiny.en"), device="cpu",
                                          compute_type="int8", cpu_threads=2, batched=batched)  # fmt: skip
    assert isinstance(cached.model, CpuClips) and cached.model.num_workers == (2 if batched else 1)
    plain = WhisperModel(str(model_path), device="cpu", compute_type="int8", cpu_threads=2)

    def words(model: WhisperModel) -> list[tuple[str, float, float]]:
        segments, _ = BatchedInferencePipeline(model).transcribe(audio, batch_size=8, word_timestamps=True)
        segments = list(segments)
        assert len(segments) > GENERATE_CLIPS  # one clip a segment: the batch was split
        return [(w.word, w.start, w.end) for s in segments for w in s.words]

    ours, theirs = words(cached), words(plain)
    assert len(ours) > 300 and [w for w, _, _ in ours] == [w for w, _, _ in theirs]
    assert max(abs(a[1] - b[1]) + abs(a[2] - b[2]) for a, b in zip(ours, theirs)) <= 0.04


def test_clip_workers_only_for_a_batched_caller_on_a_cpu_with_threads_to_share(model_path: Path) -> None:
    """One CTranslate2 worker per thread (at most MAX_CLIP_WORKERS) for batched decoding on a CPU; one elsewhere.
    The two layouts are two loads in the cache, so a sequential job never decodes on one worker's threads."""
    from scribefleet.pipeline.models import MAX_CLIP_WORKERS, clip_workers

    assert clip_workers("cpu", 2, batched=True) == 2
    assert clip_workers("cpu", 64, batched=True) == MAX_CLIP_WORKERS
    assert clip_workers("cpu", 1, batched=True) == 1
    assert clip_workers("cpu", 8, batched=False) == 1
    assert clip_workers("cuda", 8, batched=True) == 1
    assert clip_workers("cpu", 8, batched=True, asked=1) == 1  # SCRIBEFLEET_CPU_WORKERS=1: one call on 8 threads
    assert clip_workers("cpu", 8, batched=True, asked=8) == 8 and clip_workers("cpu", 2, batched=True, asked=8) == 2
    one = ModelCache(max_models=1, cpu_workers=1).get(ResolvedModel(path=model_path, model_id="tiny.en"),
                                                      device="cpu", compute_type="int8", cpu_threads=2, batched=True)
    assert one.model.num_workers == 1
    events: list[tuple[str, str]] = []
    cache = ModelCache(max_models=2, on_change=lambda event, model_id: events.append((event, model_id)))
    resolved = ResolvedModel(path=model_path, model_id="tiny.en")
    batched = cache.get(resolved, device="cpu", compute_type="int8", cpu_threads=2, batched=True)
    sequential = cache.get(resolved, device="cpu", compute_type="int8", cpu_threads=2)
    assert batched is not sequential and batched.model.num_workers == 2 and sequential.model.num_workers == 1
    assert cache.get(resolved, device="cpu", compute_type="int8", cpu_threads=2, batched=True) is batched
    assert events == [("loaded", "tiny.en")]  # the slot's model list names each model once (engines/base.py)
    cache.clear()
    assert events[1:] == [("unloaded", "tiny.en")]  # when its last load goes
