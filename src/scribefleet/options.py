"""Per-job transcription options: one typed model, shared by CLI, store, slots and API.

`TranscribeOptions` travels as JSON from the CLI (or HTTP API) through the
store to a slot. `result_key()` names the options that change the transcript
itself; together with the media's content hash it is the key under which a
finished transcript is reused (same content + same options = transcribed once).
"""

from __future__ import annotations

import hashlib
import json
import re
from enum import Enum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: longest model name and initial prompt a job may carry (a prompt is read as at most 224 tokens anyway)
MAX_MODEL_CHARS = 200
MAX_PROMPT_CHARS = 4000
FORMATS = ("srt", "vtt", "json", "txt", "tsv")
#: CTranslate2's compute types ("auto" picks the fastest accurate one for the device); which of them a
#: device really supports is checked where the model loads (pipeline.models)
COMPUTE_TYPES = (
    "auto", "default", "int8", "int8_float32", "int8_float16", "int8_bfloat16", "int16", "float16", "bfloat16",
    "float32",
)
#: the bucket names botocore accepts (its handlers.VALID_BUCKET); an access point ARN is taken as it is
_BUCKET = re.compile(r"^(?:[A-Za-z0-9._-]{1,255}|arn:.+)$")


def is_http_url(text: str) -> bool:
    """Whether `text` names an http(s) URL rather than a path; the scheme in any case (RFC 3986: `HTTPS://` is
    `https://`), as every library that fetches it reads it."""
    return text[:8].lower().startswith(("http://", "https://"))


def http_url_problem(url: str) -> str | None:
    """Why `url` is not a well-formed http(s) URL, or None: checked where a URL comes in, because urllib,
    requests and botocore each fail on a malformed one with a bare ValueError, and only once a slot runs it."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url):
        return "it holds a control character (a line break?)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - reading it checks it: "Port out of range 0-65535", a port that is no number
    except ValueError as exc:  # "Invalid IPv6 URL" too
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "it is not an http:// or https:// URL with a host"
    if any(ch.isspace() for ch in parts.netloc):
        return f"its host {parts.netloc!r} holds a space"
    return None

#: `--language` value that detects the language of each window on its own (pipeline/language.py)
PER_WINDOW = "auto-per-window"

#: Whisper's language codes (faster_whisper.tokenizer's list, which a test keeps in step) and their names
LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala",
    "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}
_LANGUAGE_BY_NAME = {name: code for code, name in LANGUAGES.items()}


#: fields whose validators accept loose input (a string is parsed), checked for their type first
_TEXT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "language": str, "compute_type": str, "task": str, "device": (str, Enum),
}
_KIND_NAMES = {str: "a string", (str, Enum): "a string"}


class Device(str, Enum):
    """Where a slot runs its model."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class TranscribeOptions(BaseModel):
    """Everything that shapes one transcription job."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = Field(default="tiny.en", min_length=1, max_length=MAX_MODEL_CHARS, strict=True)
    language: str | None = None  # a code from LANGUAGES; None = detect for the file; PER_WINDOW = per window
    task: Literal["transcribe", "translate"] = "transcribe"
    formats: tuple[str, ...] = FORMATS
    device: Device = Device.AUTO
    compute_type: str = "auto"
    batch_size: int = Field(default=8, ge=1, le=256, strict=True)  # 1 = sequential decoding
    vad: bool = Field(default=True, strict=True)
    word_timestamps: bool = Field(default=False, strict=True)
    beam_size: int = Field(default=5, ge=1, le=20, strict=True)
    initial_prompt: str | None = Field(default=None, max_length=MAX_PROMPT_CHARS, strict=True)
    temperature: float | None = Field(default=None, ge=0.0, le=1.0, strict=True)  # None = fallback ladder
    #: label who speaks (pipeline.diarize); the speaker count is given, bounded or estimated
    diarize: bool = Field(default=False, strict=True)
    speakers: int | None = Field(default=None, ge=1, le=64, strict=True)
    min_speakers: int | None = Field(default=None, ge=1, le=64, strict=True)
    max_speakers: int | None = Field(default=None, ge=1, le=64, strict=True)
    #: a folder of a clip per known person (file stem = name) or a subfolder of clips per person (folder name =
    #: name), naming the speakers that match
    speaker_names: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _strict_types(cls, data: object) -> object:
        # lax validators below would turn 42 into "42" or a stray type into a crash: a wrong type is
        # refused here, before them, as a validation error (INVALID_OPTIONS at every edge)
        if isinstance(data, dict):
            for name, kinds in _TEXT_FIELDS.items():
                value = data.get(name)
                if value is not None and not isinstance(value, kinds):
                    raise ValueError(f"{name} must be {_KIND_NAMES[kinds]}, not {type(value).__name__}")
        return data

    @field_validator("formats", mode="before")
    @classmethod
    def _parse_formats(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            value = [v for v in value.replace(" ", "").split(",") if v]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ValueError("formats must be a list of format names or one comma-separated string")
        items = tuple(v.lower() for v in value)
        if "all" in items:
            return FORMATS
        bad = [f for f in items if f not in FORMATS]
        if bad or not items:
            raise ValueError(
                f"unknown format(s) {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)} or all"
            )
        return tuple(dict.fromkeys(items))

    @field_validator("compute_type", mode="before")
    @classmethod
    def _known_compute_type(cls, value: object) -> object:
        if isinstance(value, str) and value.lower() not in COMPUTE_TYPES:
            raise ValueError(f"unknown compute type {value!r}; choose from {', '.join(COMPUTE_TYPES)}")
        return value.lower() if isinstance(value, str) else value

    @field_validator("language", mode="before")
    @classmethod
    def _parse_language(cls, value: object) -> str | None:
        text = "" if value is None else str(value).strip().lower()
        if text in ("", "auto", "detect"):
            return None
        if text == PER_WINDOW or text in LANGUAGES:
            return text
        if text in _LANGUAGE_BY_NAME:
            return _LANGUAGE_BY_NAME[text]
        raise ValueError(
            f"unknown language {value!r}: give a Whisper language code or its English name "
            f"({', '.join(LANGUAGES)}; e.g. de or german), auto to detect it once per file, "
            f"or {PER_WINDOW} to detect it per stretch of about 20 s"
        )

    @property
    def fixed_language(self) -> str | None:
        """The language to decode in when the user named one; None when it is to be detected."""
        return None if self.language == PER_WINDOW else self.language

    @property
    def language_per_window(self) -> bool:
        return self.language == PER_WINDOW

    @model_validator(mode="after")
    def _speaker_counts(self) -> "TranscribeOptions":
        asked = [
            name for name in ("speakers", "min_speakers", "max_speakers", "speaker_names") if getattr(self, name) is not None
        ]
        if asked and not self.diarize:
            raise ValueError(f"{', '.join(asked)} only apply with diarize: turn diarize on")
        if self.speakers is not None and (self.min_speakers is not None or self.max_speakers is not None):
            raise ValueError("give either speakers (an exact count) or min_speakers/max_speakers (bounds), not both")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise ValueError(f"min_speakers {self.min_speakers} is above max_speakers {self.max_speakers}")
        return self

    @property
    def is_batched(self) -> bool:
        return self.batch_size > 1

    @property
    def decodes_clips(self) -> bool:
        """Batched decoding of VAD clips: without VAD there is nowhere safe to cut a clip, so `vad: false`
        decodes sequentially whatever the batch size (no word split across two clips)."""
        return self.is_batched and self.vad

    def result_key(self, model_id: str) -> str:
        """Hash of what changes the transcript; `model_id` is the resolved model's identity.

        `diarize` and the speaker options are not in it: they change only who is said to speak, which the
        diarize stage's own checkpoint records (pipeline.diarize.checkpoint_identity), so adding them to a
        finished file runs that stage alone."""
        payload = {
            "model": model_id,
            "language": self.language,
            "task": self.task,
            "batched": self.is_batched,
            "vad": self.vad,
            "words": self.word_timestamps,
            "beam": self.beam_size,
            "prompt": self.initial_prompt,
            "temperature": self.temperature,
            "compute_type": self.compute_type,  # precision changes the words, so float32 after int8 is new work
        }
        blob = json.dumps(payload, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


class FetchOptions(BaseModel):
    """How a media URL is downloaded (yt-dlp's own option names in the docs); none of it changes the transcript."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cookies: str | None = None  # a Netscape cookies file, as yt-dlp's --cookies (YouTube's bot check)
    proxy: str | None = None  # http://, https:// or socks5:// proxy URL
    socket_timeout_s: float | None = Field(default=None, gt=0)
    max_download_mb: int | None = Field(default=None, gt=0)  # None: the max_file_mb setting
    max_duration_s: float | None = Field(default=None, gt=0)  # None: no limit


class PublishOptions(BaseModel):
    """Where outputs are uploaded after the local atomic write: an s3:// prefix and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target: str  # s3://bucket/prefix/
    endpoint_url: str | None = None  # an S3-compatible server (MinIO, R2...); None: AWS or AWS_ENDPOINT_URL
    region: str | None = None  # None: AWS_REGION / AWS_DEFAULT_REGION / the AWS config file
    multipart_threshold_mb: int = Field(default=64, ge=5)

    @field_validator("target")
    @classmethod
    def _s3_url(cls, value: str) -> str:
        if not value.startswith("s3://") or not value[5:].split("/", 1)[0]:
            raise ValueError(f"publish target {value!r} is not an s3://bucket/prefix/ URL")
        if not _BUCKET.match(value[5:].split("/", 1)[0]):  # botocore refuses it only at the upload
            raise ValueError(f"publish target {value!r}: a bucket name has only letters, digits, '.', '-' and '_'")
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        # botocore raises a bare ValueError for 'minio:9000' only when the upload starts, after the transcription
        if value is not None and (not re.match(r"https?://[^/\s]+", value, re.IGNORECASE) or http_url_problem(value)):
            raise ValueError(f"S3 endpoint {value!r} is not an http(s):// URL (e.g. http://minio:9000)")
        return value
