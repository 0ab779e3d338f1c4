"""TranscribeOptions: every field takes its own type only, text options are bounded, --language takes Whisper's languages."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from scribefleet.options import LANGUAGES, MAX_MODEL_CHARS, MAX_PROMPT_CHARS, PER_WINDOW, FORMATS, Device, TranscribeOptions

#: for each field, values of a wrong type (what a JSON client can send)
WRONG_TYPES: dict[str, list[Any]] = {
    "model": [42, True, None, ["tiny.en"], {"name": "tiny.en"}],
    "language": [42, True, 1.5, ["en"], {"en": 1}],
    "task": [1, True, None, ["transcribe"]],
    "formats": [None, 5, True, 1.5, {"srt": 1}, [1], ["srt", None], [["srt"]]],
    "device": [1, True, None, ["cpu"], 1.5],
    "compute_type": [8, True, None, ["int8"]],
    "batch_size": ["8", 8.5, True, None, [8]],
    "vad": ["yes", 1, 0, None, "true"],
    "word_timestamps": ["no", 1, None, []],
    "beam_size": ["5", 5.0, True, None],
    "initial_prompt": [7, True, ["hello"], {"text": "hello"}],
    "temperature": ["0.5", True, [0.5]],
    "diarize": ["yes", 1, None, []],
    "speakers": ["2", 2.5, True, [2]],
    "min_speakers": ["1", 1.5, True],
    "max_speakers": ["3", 3.5, False],
    "speaker_names": [42, True, ["people"], {"dir": "people"}],
}


def test_every_field_is_covered() -> None:
    assert set(WRONG_TYPES) == set(TranscribeOptions.model_fields)


@pytest.mark.parametrize(("field", "value"), [(f, v) for f, vs in WRONG_TYPES.items() for v in vs])
def test_a_wrong_type_is_refused(field: str, value: Any) -> None:
    with pytest.raises(ValidationError):
        TranscribeOptions.model_validate({field: value})
    with pytest.raises(ValidationError):
        TranscribeOptions.model_validate_json('{"%s": %s}' % (field, __import__("json").dumps(value)))


def test_the_right_types_still_pass() -> None:
    options = TranscribeOptions.model_validate(
        {"model": "tiny.en", "language": "EN", "task": "translate", "formats": "srt, VTT", "device": "cpu",
         "compute_type": "INT8", "batch_size": 4, "vad": False, "word_timestamps": True, "beam_size": 2,
         "initial_prompt": "Glossary", "temperature": 0}
    )  # fmt: skip
    assert options.formats == ("srt", "vtt") and options.device is Device.CPU and options.temperature == 0.0
    assert TranscribeOptions(formats=["all"]).formats == FORMATS
    assert TranscribeOptions.model_validate_json('{"device": "cuda", "formats": ["json"]}').device is Device.CUDA


def test_text_options_are_bounded() -> None:
    TranscribeOptions(initial_prompt="p" * MAX_PROMPT_CHARS, model="m" * MAX_MODEL_CHARS)
    for too_long in ({"initial_prompt": "p" * (MAX_PROMPT_CHARS + 1)}, {"model": "m" * (MAX_MODEL_CHARS + 1)}, {"model": ""}):
        with pytest.raises(ValidationError):
            TranscribeOptions.model_validate(too_long)


def test_language_codes_are_whispers_own() -> None:
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    assert sorted(LANGUAGES) == sorted(_LANGUAGE_CODES)


@pytest.mark.parametrize(
    ("given", "kept"),
    [("de", "de"), ("DE", "de"), (" es ", "es"), ("German", "de"), ("haitian creole", "ht"), ("yue", "yue"),
     (None, None), ("", None), ("auto", None), ("detect", None), ("Auto-Per-Window", PER_WINDOW)],
)
def test_codes_names_and_auto_are_accepted(given: str | None, kept: str | None) -> None:
    assert TranscribeOptions(language=given).language == kept


@pytest.mark.parametrize("given", ["xx", "english please", "en-US", "klingon"])
def test_unknown_languages_are_refused_with_the_valid_codes(given: str) -> None:
    with pytest.raises(ValidationError) as caught:
        TranscribeOptions(language=given)
    message = str(caught.value)
    assert f"unknown language {given!r}" in message
    assert all(f" {code}," in message for code in ("de", "fr", "ja"))  # the list of codes to pick from
    assert PER_WINDOW in message


def test_fixed_language_and_per_window() -> None:
    assert TranscribeOptions(language="de").fixed_language == "de"
    per_window = TranscribeOptions(language=PER_WINDOW)
    assert per_window.fixed_language is None and per_window.language_per_window
    assert not TranscribeOptions().language_per_window


def test_a_url_scheme_has_no_case() -> None:
    """RFC 3986: `HTTP://host/x` and `Https://` are URLs; they were taken for paths (INPUT_NOT_FOUND)."""
    from scribefleet.options import PublishOptions, http_url_problem, is_http_url

    for url in ("http://h/x", "HTTP://h/x", "Https://h/x", "hTtPs://h"):
        assert is_http_url(url) and http_url_problem(url) is None, url
    for text in ("httpx://h", "ftp://h/x", "http:/h", "talks/http://x", "", "HTTP"):
        assert not is_http_url(text), text
    assert PublishOptions(target="s3://b/", endpoint_url="HTTP://minio:9000").endpoint_url == "HTTP://minio:9000"
