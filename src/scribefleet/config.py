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
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, SerializationInfo, field_serializer
from pydantic_settings import BaseSettings, SettingsConfigDict


# Default allowlist of shell-task commands (regexes, each matched against one simple
# command of the line with its leading VAR=value assignments removed). It permits
# `export VAR=...` chains (seed 000 needed `export LD_LIBRARY_PATH=... && source
# env/bin/activate && python script.py`), `source`/`cd`, ordinary file and media tools,
# and scripts named by path. It is a guard against mistakes, not a sandbox: `python`
# can do anything. Extend it with SCRIBEFLEET_SHELL_ALLOW (a JSON list) or set
# SCRIBEFLEET_SHELL_ALLOW_ALL=1.
SHELL_ALLOW_DEFAULT: list[str] = [
    r"export( .*)?",
    r"(source|\.) \S+( .*)?",
    r"cd( .*)?",
    r"(\S*/)?(echo|printf|true|false|test|\[|\[\[|sleep|cat|head|tail|wc|sort|uniq|cut|tr|tee"
    r"|grep|egrep|fgrep|sed|awk|ls|mkdir|cp|mv|ln|touch|rm|rmdir|find|basename|dirname|realpath"
    r"|readlink|date|pwd|which|nproc|seq|exit|wait|set|unset|shift|read|stat|du|df|diff|cmp|file"
    r"|mktemp|gzip|gunzip|zcat|tar|zip|unzip|sha1sum|sha256sum|md5sum|python|python3(\.\d+)?"
    r"|pip3?|uv|ffmpeg|ffprobe|sox|jq|nvidia-smi|scribefleet|whisper|yt-dlp|ollama|llama-server)( .*)?",
    r"(\./|\.\./|~/|/)\S+\.(sh|py)( .*)?",
]


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
    #: most transcribe tasks (same model and options) one slot runs together, their clips in shared batches; 1 = off
    group_max: int = Field(default=8, ge=1, le=64)
    #: long files are transcribed in windows of about this many seconds, each checkpointed
    window_s: float = Field(default=600.0, ge=30)
    #: lend free slots to a long transcription: its windows are decoded on every free slot at once
    spread: bool = True
    #: CPU threads per CPU slot (0 = cores divided by slots)
    cpu_threads: int = Field(default=0, ge=0)
    #: model workers sharing a CPU slot's threads in batched decoding (0 = one per thread, at most 4; 1 = one call
    #: on all the threads, which a lone short file decodes faster on and batches slower)
    cpu_workers: int = Field(default=0, ge=0, le=64)
    #: slots sharing each GPU (`--slots-per-gpu`), each its own process with its own model instance
    slots_per_gpu: int = Field(default=1, ge=1, le=26)
    #: host memory one slot is counted at when slots are planned (worker/budget.py); 0 = estimated from the model
    slot_memory_mb: int = Field(default=0, ge=0)
    #: seconds between two plain progress lines of a running file when stderr is not a terminal
    progress_log_s: float = Field(default=10.0, gt=0)
    log_max_mb: int = Field(default=20, ge=1)
    log_backups: int = Field(default=5, ge=0)

    #: regexes a shell task's commands must match (see SHELL_ALLOW_DEFAULT above)
    shell_allow: list[str] = Field(default_factory=lambda: list(SHELL_ALLOW_DEFAULT))
    #: skip the shell allowlist entirely (trusted plans only)
    shell_allow_all: bool = False
    #: seconds between the dispatcher's looks at the store for cancel requests and new tasks
    cancel_poll_s: float = Field(default=0.5, gt=0)
    #: least seconds between two progress writes of one task to the store
    progress_write_s: float = Field(default=1.0, ge=0)
    #: a slot that has not said ready this long after starting is killed and restarted
    slot_ready_timeout_s: float = Field(default=180.0, gt=0)
    #: a slot that dies this many times in a row before becoming ready is given up
    slot_restart_limit: int = Field(default=3, ge=1)
    #: a ready slot that sends nothing (not even a heartbeat) this long is hung: killed, restarted,
    #: its task re-queued; never less than two heartbeats
    slot_silent_after_s: float = Field(default=30.0, gt=0)

    #: default wall-clock limit of a plan's shell task, seconds (seed 000: 600 was too short)
    shell_timeout_s: float = Field(default=1800.0, gt=0)
    #: most of a shell task's output its log keeps (its start, then its last 64 KB): a command that prints
    #: without end must not fill the disk the store and the outputs live on
    task_log_max_mb: int = Field(default=100, ge=1)
    #: default wall-clock limit of a plan's llm task, seconds; above llm_timeout_s (one request),
    #: so a request that times out fails as LLM_UNREACHABLE and is retried instead of being killed
    llm_task_timeout_s: float = Field(default=900.0, gt=0)
    #: default wall-clock limit of a plan's aggregate task, seconds
    aggregate_timeout_s: float = Field(default=300.0, gt=0)

    #: GPUs scribefleet may use: indices (nvidia-smi order) or UUIDs, comma-separated;
    #: a CUDA_VISIBLE_DEVICES set for scribefleet itself is honoured the same way
    gpus: str | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBEFLEET_GPUS", "CUDA_VISIBLE_DEVICES")
    )

    #: check a GPU slot's CUDA (driver, libraries, one pinned device) before it takes tasks;
    #: off, a GPU slot that fails it still takes tasks (GPU slots that only run shell tasks)
    slot_preflight: bool = True
    #: what hosts the slots: `local` (slot processes on this machine) or `ray` (Ray actors on a
    #: Ray cluster; needs `pip install 'scribefleet[ray]'`, see docs/ray.md)
    engine: str = "local"
    #: the Ray engine's cluster: an address (`ray://host:10001`, `host:6379`), `local` for a
    #: private cluster on this machine, or unset for Ray's own choice (RAY_ADDRESS, else a
    #: cluster started on this machine with `ray start`, else a private one)
    ray_address: str | None = None
    #: the Ray engine's node label: a custom resource a node must declare to host slots
    #: (`ray start --resources '{"scribefleet": 8}'`); each slot takes one unit of it. None: any node
    ray_slot_resource: str | None = None

    #: OpenAI-compatible chat endpoint of `llm` tasks (default: a local Ollama); a task's
    #: `endpoint` and a slot's entry in llm_slot_endpoints come first
    llm_endpoint: str = "http://127.0.0.1:11434"
    #: slot name -> endpoint, so each GPU slot talks to its own local server (seed 002)
    llm_slot_endpoints: dict[str, str] = Field(default_factory=dict)
    #: model of `llm` tasks that name none; None = the first model the endpoint lists
    llm_model: str | None = None
    #: sent as `Authorization: Bearer ...`; a secret: never logged, never in events or errors
    llm_api_key: SecretStr | None = None
    #: seconds one llm request may take (connect, send, wait for the answer)
    llm_timeout_s: float = Field(default=600.0, gt=0)
    #: longer input text is cut to this many characters (a warning in the result); 0 = never cut
    llm_max_input_chars: int = Field(default=24000, ge=0)

    #: who labels the speakers of `diarize` jobs: "resemblyzer" (offline, CPU, the `diarization` extra) or
    #: "pyannote" (pyannote.audio's pipeline from diarization_model or the hub with hf_token)
    diarization_backend: Literal["resemblyzer", "pyannote"] = "resemblyzer"
    #: the pyannote backend's pipeline: a local folder holding its config.yaml, or a hub id
    #: (default pyannote/speaker-diarization-3.1 when only hf_token is set)
    diarization_model: str | None = None
    #: Hugging Face token for gated models (pyannote's); a secret: never logged, never in events or errors
    hf_token: SecretStr | None = Field(default=None, validation_alias=AliasChoices("SCRIBEFLEET_HF_TOKEN", "HF_TOKEN"))
    #: wall-clock limit of one file's diarization stage, seconds (DIARIZATION_FAILED past it)
    diarize_timeout_s: float = Field(default=1800.0, gt=0)
    #: cosine similarity a voice needs to an enrollment clip (speaker_names) to take its name
    speaker_match_threshold: float = Field(default=0.75, ge=-1.0, le=1.0)

    #: controller URL used by `batch`, `submit`, and `status`/`logs`/`cancel` when no --controller is given
    controller: str | None = None
    #: API token the CLI sends to the controller (`Authorization: Bearer ...`); a secret, never logged
    token: SecretStr | None = None
    #: seconds one HTTP request to the controller may wait for connect, each read and each write
    controller_timeout_s: float = Field(default=30.0, gt=0)
    #: retries of one request (connect errors, 429/503; other 5xx only where repeating is safe)
    controller_retries: int = Field(default=4, ge=0)
    #: how long `batch` keeps waiting for an unreachable controller before it stops (state kept)
    controller_wait_s: float = Field(default=600.0, gt=0)
    #: polling of a controller job: first delay, doubled (with jitter) up to the max while nothing changes
    controller_poll_min_s: float = Field(default=1.0, gt=0)
    controller_poll_max_s: float = Field(default=30.0, gt=0)

    #: where `scribefleet serve` listens (seed 001's controller address)
    host: str = "127.0.0.1"
    port: int = Field(default=8476, ge=0, le=65535)
    #: the controller's state folder: store, uploads, job outputs, logs
    state_dir: Path = Path("scribefleet-data")
    #: API tokens of the controller, comma-separated; secrets, compared in constant time, never logged
    api_tokens: SecretStr | None = None
    #: a file with one API token per line (blank lines and # comments ignored)
    api_token_file: Path | None = None
    #: serve without authentication; refused unless the controller listens on a loopback address
    auth_disabled: bool = False
    #: lifetime of a browser session (login with a token), seconds
    session_ttl_s: float = Field(default=43200.0, gt=0)
    #: the model OpenAI-compatible requests get for `whisper-1` (and OpenAI's other model names)
    api_default_model: str = "tiny.en"
    #: models API clients may name besides the bundled tiny.en and the size names (tiny ... large-v3):
    #: Hugging Face repo ids or model folders of this server, as a JSON list
    api_models: list[str] = Field(default_factory=list)
    #: a folder whose subfolders (each a CTranslate2 model with model.bin) API clients may name by folder name
    api_model_root: Path | None = None
    #: hours a controller keeps an uploaded file after every job made from it has ended (an upload no job
    #: uses: after this or an hour, whichever is longer); 0 keeps uploads for good
    upload_retention_hours: float = Field(default=168.0, ge=0)
    #: the largest JSON request body, KiB (uploads have max_file_mb); larger ones get 413 REQUEST_TOO_LARGE
    max_json_kb: int = Field(default=256, ge=1)
    #: wrong API tokens from one client address within auth_fail_window_s before its tokens are refused (429)
    auth_fail_limit: int = Field(default=10, ge=1)
    #: the window of auth_fail_limit, seconds; also the first pause, which doubles with each further one
    auth_fail_window_s: float = Field(default=300.0, gt=0)
    #: file mode mask of everything `serve` creates (state folder, store, uploads, outputs), octal:
    #: 077 = folders 0700, files 0600
    umask: str = Field(default="077", pattern=r"^0?[0-7]{3}$")

    # -- remote GPU workers (seed 001's names accepted as they are; docs/remote-workers.md) --
    #: the worker service's bearer token (`scribefleet worker` refuses to start without one); a secret
    worker_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBEFLEET_WORKER_TOKEN", "WORKER_TOKEN")
    )
    #: jobs a worker admits at once (queued or running there); one more is answered 429
    worker_max_concurrent_jobs: int = Field(
        default=1, ge=1,
        validation_alias=AliasChoices("SCRIBEFLEET_WORKER_MAX_CONCURRENT_JOBS", "WORKER_MAX_CONCURRENT_JOBS"),
    )
    #: the model of worker jobs that name none
    worker_model: str = Field(
        default="large-v3", validation_alias=AliasChoices("SCRIBEFLEET_WORKER_MODEL", "WORKER_MODEL")
    )
    #: answer the worker's GET /v1/ping without a token
    worker_ping_public: bool = Field(
        default=False, validation_alias=AliasChoices("SCRIBEFLEET_WORKER_PING_PUBLIC", "WORKER_PING_PUBLIC")
    )
    #: a worker job nobody has asked about for this long (its controller is gone) is canceled
    worker_abandon_s: float = Field(default=900.0, gt=0)
    #: the remote worker(s) of the controller: one URL, or several comma-separated
    remote_worker_url: str | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBEFLEET_REMOTE_WORKER_URL", "REMOTE_WORKER_URL")
    )
    #: the token the controller sends to its workers (their WORKER_TOKEN); a secret
    remote_worker_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SCRIBEFLEET_REMOTE_WORKER_TOKEN", "REMOTE_WORKER_TOKEN")
    )
    #: off: never remote; optional: jobs that ask for it; required: every job
    remote_worker_mode: Literal["off", "optional", "required"] = Field(
        default="off", validation_alias=AliasChoices("SCRIBEFLEET_REMOTE_WORKER_MODE", "REMOTE_WORKER_MODE")
    )
    #: how long a remote job may wait for capacity, and then run, before it fails
    remote_worker_timeout_s: float = Field(
        default=3600.0, gt=0,
        validation_alias=AliasChoices("SCRIBEFLEET_REMOTE_WORKER_TIMEOUT_S", "REMOTE_WORKER_TIMEOUT_SECONDS"),
    )
    #: a job on a worker that has not answered for this long goes to another worker that does (a new attempt)
    remote_worker_failover_s: float = Field(default=300.0, gt=0)
    #: first delay between two polls of a remote job (doubled with jitter while nothing changes)
    remote_worker_poll_s: float = Field(
        default=5.0, gt=0,
        validation_alias=AliasChoices("SCRIBEFLEET_REMOTE_WORKER_POLL_S", "REMOTE_WORKER_POLL_SECONDS"),
    )

    @field_serializer("worker_token", "remote_worker_token", when_used="json")
    def _masked_json(self, value: SecretStr | None) -> str | None:
        # slots never need these: masked even in the init message that hands a slot its settings
        return None if value is None else str(value)
    #: networks (CIDR or address) and host names the controller may fetch media URLs from although they are
    #: loopback, link-local or private; everything internal is refused otherwise (the CLI fetches any URL)
    url_allowlist: list[str] = Field(default_factory=list)

    @field_serializer("llm_api_key", "hf_token", when_used="json")
    def _secret_json(self, value: SecretStr | None, info: SerializationInfo) -> str | None:
        # JSON shows "**********", except for the init message that hands a slot its settings
        if value is None:
            return None
        return value.get_secret_value() if (info.context or {}).get("reveal_secrets") else str(value)

    @property
    def umask_bits(self) -> int:
        return int(self.umask, 8)

    @property
    def hf_home(self) -> Path:
        return self.model_dir or (self.cache_dir / "huggingface")
