"""The sizes of a spread plan (pipeline/spread.py), without numpy or PyAV, so the dispatcher can ask them too.

A plan cuts a recording into windows of about duration / (`WINDOWS_PER_SLOT` x
slots), at least `MIN_WINDOW_S` and at most the job's `window_s`. A recording of
`SPREAD_MIN_AUDIO_S` or more (6 minutes) is *long*: its plan over two slots
gives each slot its `WINDOWS_PER_SLOT` windows of at least `MIN_WINDOW_S`, and it
fills the model's batches of clips on its own (8 clips of up to 30 s of speech
by default), so sharing them with other files gains it nothing. The dispatcher
keeps long files out of groups (dispatch/groups.py) and counts every slot that
is not running long work as a helper to come (dispatch/lending.py): short files
decode in groups first, then their slots help the long file's windows.
"""

from __future__ import annotations

#: the shortest window a spread plan cuts: below it a helper's start costs more than its window
MIN_WINDOW_S = 60.0
#: windows per slot: with several each, a late or slow slot leaves the others less to wait for
WINDOWS_PER_SLOT = 3
#: the shortest long recording: a plan over two slots gives each WINDOWS_PER_SLOT windows of MIN_WINDOW_S
SPREAD_MIN_AUDIO_S = 2 * WINDOWS_PER_SLOT * MIN_WINDOW_S


def is_long(audio_s: float | None) -> bool:
    """Whether a recording of `audio_s` seconds (None: not known yet) is spread rather than grouped."""
    return audio_s is not None and audio_s >= SPREAD_MIN_AUDIO_S
