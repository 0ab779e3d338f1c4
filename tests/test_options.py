"""options.py: what --language accepts, and refusing the rest before any work starts."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scribefleet.options import LANGUAGES, PER_WINDOW, TranscribeOptions


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
