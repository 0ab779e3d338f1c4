"""Whisper's language codes and the English names OpenAI's API answers with (`"en"` -> `"english"`).

The table is Whisper's own (options.LANGUAGES, as openai/whisper's tokenizer.py has it): OpenAI's
verbose_json names the detected language this way, and clients compare
against these strings.
"""

from __future__ import annotations

from scribefleet.options import LANGUAGES

def language_name(code: str | None) -> str | None:
    """The English name of a Whisper language code; an unknown code is answered as it is."""
    if code is None:
        return None
    return LANGUAGES.get(code.lower(), code)
