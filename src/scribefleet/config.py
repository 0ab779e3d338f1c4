"""Settings: the only reader of os.environ.

Built once at start-up (in cli/ or service/) and passed down. Every field can
be set as `SCRIBEFLEET_<FIELD>` in the environment or in a `.env` file;
the variable names of the systems scribefleet replaces (seed 001's
`WORKER_MAX_FILE_MB`, ...) are accepted as they are. docs/configuration.md
lists them all; a test keeps the two in step.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "scribefleet"


class Settings(BaseSettings):
    """Process-wide configuration (environment, .env file)."""

    model_config = SettingsConfigDict(
        env_prefix="SCRIBEFLEET_", env_file=".env", extra="ignore", populate_by_name=True
    )

    cache_dir: Path = Field(default_factory=_default_cache_dir)
    #: where downloaded models live (becomes HF_HOME of every slot)
    model_dir: Path | None = None
    #: refuse to download models; only local folders and bundled models work
    offline: bool = Field(
        default=False, validation_alias=AliasChoices("SCRIBEFLEET_OFFLINE", "HF_HUB_OFFLINE")
    )
    max_file_mb: int = Field(
        default=2000,
        gt=0,
        validation_alias=AliasChoices("SCRIBEFLEET_MAX_FILE_MB", "WORKER_MAX_FILE_MB"),
    )
    #: attempts per task before it fails for good (slot crashes, timeouts, OOM)
    max_attempts: int = Field(default=3, ge=1)
    #: base wall-clock limit of a transcription task, seconds (seed 000 learned 1800)
    transcribe_timeout_s: float = Field(default=1800.0, gt=0)
    #: extra seconds of limit per second of audio, so a 2-hour file is not killed at 30 min
    timeout_per_audio_s: float = Field(default=2.0, ge=0)
    #: a running task whose progress has not moved this long is reported as stuck
    stuck_after_s: float = Field(default=300.0, gt=0)
    #: seconds between MONITOR summary lines in the log
    monitor_interval_s: float = Field(default=60.0, gt=0)
    #: seconds between slot heartbeats
    heartbeat_s: float = Field(default=5.0, gt=0)
    #: how long hardware facts stay cached
    hardware_cache_ttl_s: float = Field(default=3600.0, ge=0)
    #: models a slot keeps loaded at once (least recently used is unloaded first)
    slot_max_models: int = Field(default=2, ge=1)
    #: long files are transcribed in windows of about this many seconds, each checkpointed
    window_s: float = Field(default=600.0, ge=30)
    #: CPU threads per CPU slot (0 = cores divided by slots)
    cpu_threads: int = Field(default=0, ge=0)
    log_max_mb: int = Field(default=20, ge=1)
    log_backups: int = Field(default=5, ge=0)

    @property
    def hf_home(self) -> Path:
        return self.model_dir or (self.cache_dir / "huggingface")
