"""scribefleet: media in, transcripts and subtitles out, on every device you have."""

from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError
from scribefleet.options import TranscribeOptions

__version__ = "0.1.0"
__all__ = ["Settings", "ScribefleetError", "TranscribeOptions", "__version__"]
