"""pyannote.audio's diarization pipeline, when the user provides it (SCRIBEFLEET_DIARIZATION_BACKEND=pyannote):
loaded from a local folder or, with a Hugging Face token, from the hub; DIARIZATION_MODEL_MISSING says which
setting to fix otherwise. The offline default (resemblyzer) is pipeline/diarize.py's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from scribefleet.errors import DiarizationModelMissing
from scribefleet.pipeline.media import SAMPLE_RATE

#: what the pyannote backend loads from the hub when only a token is given
PYANNOTE_DEFAULT_MODEL = "pyannote/speaker-diarization-3.1"

#: (start_s, end_s, label)
Turn = tuple[float, float, str]


def _missing_pyannote_model(reason: str) -> DiarizationModelMissing:
    return DiarizationModelMissing(
        f"{reason} - set SCRIBEFLEET_DIARIZATION_MODEL to a local pyannote pipeline folder (holding its config.yaml), "
        f"or SCRIBEFLEET_HF_TOKEN (or HF_TOKEN) to a Hugging Face token that accepted the conditions of "
        f"{PYANNOTE_DEFAULT_MODEL}; or use the offline backend (SCRIBEFLEET_DIARIZATION_BACKEND=resemblyzer)",
        setting="SCRIBEFLEET_DIARIZATION_MODEL",
        token_setting="SCRIBEFLEET_HF_TOKEN",
    )


def load_pyannote(config: Any, device: str = "cpu") -> Any:
    """pyannote.audio's Pipeline from a local folder or the hub (with a token); DIARIZATION_MODEL_MISSING otherwise.
    `config`: a DiarizerConfig (its `model` and `hf_token`)."""
    token = config.hf_token.get_secret_value() if config.hf_token is not None else None
    if not config.model and not token:
        raise _missing_pyannote_model("the pyannote diarization backend has no model")
    source = config.model or PYANNOTE_DEFAULT_MODEL
    folder = Path(source).expanduser()
    if folder.is_dir():
        source = str(folder / "config.yaml") if (folder / "config.yaml").is_file() else str(folder)
    elif source.startswith((".", "/", "~")) or folder.suffix in (".yaml", ".yml") and not folder.is_file():
        raise _missing_pyannote_model(f"the pyannote pipeline folder {source} does not exist")
    try:
        import torch
        from pyannote.audio import Pipeline
    except ImportError as exc:
        raise DiarizationModelMissing(
            f"the pyannote diarization backend needs pyannote.audio ({exc.name} is missing) - pip install pyannote.audio",
            setting="SCRIBEFLEET_DIARIZATION_BACKEND",
            missing=exc.name,
        ) from exc
    # pyannote.audio 4 names the argument `token`, 3.x `use_auth_token`
    auth = "token" if "token" in inspect.signature(Pipeline.from_pretrained).parameters else "use_auth_token"
    try:
        pipeline = Pipeline.from_pretrained(source, **({auth: token} if token else {}))
    except Exception as exc:
        raise _missing_pyannote_model(f"pyannote could not load {source} ({type(exc).__name__})") from exc
    if pipeline is None:  # 3.x returns None for a gated model the token may not read
        raise _missing_pyannote_model(f"pyannote could not load {source} (gated: the token has no access)")
    if device == "cuda" and torch.cuda.is_available():
        pipeline.to(torch.device("cuda"))
    return pipeline


def pyannote_turns(
    audio: Any,
    config: Any,
    bounds: tuple[int, int] | None,
    device: str,
    check: Callable[[], None],
    progress: Callable[[float], None],
) -> list[Turn]:
    """The speaker turns pyannote's pipeline finds in 16 kHz `audio` (floats or media.Samples), within `bounds`
    (min, max speakers); `check()` raises to stop it (the diarize stage's deadline)."""
    import torch

    pipeline = load_pyannote(config, device)
    counts: dict[str, int] = {}
    if bounds is not None and bounds[0] == bounds[1]:
        counts["num_speakers"] = bounds[0]
    elif bounds is not None:
        counts |= {"min_speakers": bounds[0], "max_speakers": bounds[1]}

    def hook(step: str, artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None) -> None:
        check()
        if total and completed is not None:
            progress(min(0.99, completed / total))

    waveform = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)[None, :])
    output = pipeline({"waveform": waveform, "sample_rate": SAMPLE_RATE}, hook=hook, **counts)
    annotation = getattr(output, "speaker_diarization", output)  # pyannote.audio 4 wraps the annotation
    progress(1.0)
    return sorted((float(seg.start), float(seg.end), str(label)) for seg, _, label in annotation.itertracks(yield_label=True))
