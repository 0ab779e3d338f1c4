"""The edge every command shares: its Settings, its error messages and its exit code, and the transcribe flags.

Exit codes, for every command: 0 all done; 1 a job (or the run) failed; 2 a
usage or options error (INVALID_OPTIONS, FEATURE_UNAVAILABLE, a bad flag);
130 interrupted (Ctrl-C), with a hint to run the same command again to resume;
143 terminated (SIGTERM, which a command's body takes as it takes Ctrl-C:
`Terminated` is a KeyboardInterrupt, so a run stops its slots and queues
their tasks again, and the batch runner saves its state).

Settings are built once per invocation (`settings_of(ctx)`) and passed down.
The transcribe options (`--model`, `--language`, ...) are declared once here
and shared by `transcribe`, `submit` and `batch`; whisper's and
whisper-ctranslate2's `--flag True|False` spelling of the boolean ones is
accepted (`whisper_booleans`), so `--word_timestamps True` is not taken for an
input file named True.
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from rich.console import Console

from scribefleet.config import Settings
from scribefleet.errors import ScribefleetError, UsageError
from scribefleet.options import FORMATS, FetchOptions, PublishOptions, TranscribeOptions

INTERRUPTED = 130
TERMINATED = 143  # 128 + SIGTERM: what a shell reports of a process SIGTERM ended
TOKEN_HELP = "API token (default: SCRIBEFLEET_TOKEN)."


def stderr_console() -> Console:
    """Where commands talk to people: stderr, no wrapping (lines stay greppable), no markup in messages."""
    return Console(stderr=True, soft_wrap=True, markup=False, highlight=False)


def settings_of(ctx: typer.Context | None) -> Settings:
    """This invocation's Settings: built at the first call, then the same object (kept on the root context)."""
    root = ctx.find_root() if ctx is not None else None
    if root is not None and isinstance(root.obj, Settings):
        return root.obj
    try:
        settings = Settings()
    except ValidationError as exc:
        raise UsageError(f"bad SCRIBEFLEET_* setting: {_messages(exc)}") from exc
    except SettingsError as exc:  # a list setting whose value is not JSON fails before validation
        raise UsageError(f"bad SCRIBEFLEET_* setting: {_unparsable(exc)}") from exc
    if root is not None:
        root.obj = settings
    return settings


def _messages(exc: ValidationError) -> str:
    """Each error as `field: message`; a check of several fields together (no field) as its message alone,
    without pydantic's "Value error, " ("error [INVALID_OPTIONS]: : Value error, ..." before)."""
    parts = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        field = ".".join(map(str, err["loc"]))
        parts.append(f"{field}: {message}" if field else message)
    return "; ".join(parts)


def _unparsable(exc: SettingsError) -> str:
    """pydantic-settings names the field ('error parsing value for field "url_allowlist" ...'): name its variable."""
    m = re.search(r'field "(\w+)"', str(exc))
    name = f"SCRIBEFLEET_{m.group(1).upper()}" if m else "a list setting"
    return f'{name} is not valid JSON: write a list as JSON, e.g. {name}=\'["first", "second"]\''


def with_engine(ctx: typer.Context, engine: str | None, ray_address: str | None, slots_per_gpu: int | None = None) -> Settings:
    """This invocation's Settings with `--engine` / `--ray-address` / `--slots-per-gpu` applied (they win over
    SCRIBEFLEET_ENGINE/_RAY_ADDRESS/_SLOTS_PER_GPU)."""
    settings = settings_of(ctx)
    if engine is not None and engine not in ("local", "ray"):  # the thread engine runs no transcriptions
        raise UsageError(f"--engine {engine!r}: choose local or ray")
    pairs = (("engine", engine), ("ray_address", ray_address), ("slots_per_gpu", slots_per_gpu))
    update = {k: v for k, v in pairs if v is not None}
    if update:
        settings = settings.model_copy(update=update)
        ctx.find_root().obj = settings
    return settings


def pick_controller(controller: str | None, state: Path | None, settings: Settings) -> str | None:
    """The controller a status/logs/cancel talks to: --controller, else SCRIBEFLEET_CONTROLLER unless --state was given."""
    return controller or (None if state is not None else settings.controller)


class Terminated(KeyboardInterrupt):
    """SIGTERM during a command's body: handled as Ctrl-C is (every `except KeyboardInterrupt` stops its work
    the same way), told apart only by its message and exit code."""


class SigtermCatcher:
    """SIGTERM's handler during a command's body: raises Terminated, and remembers that it did (Ray turns an
    exception a signal handler raises inside its calls into a plain KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.received = False

    def __call__(self, signum: int, frame: object) -> None:
        self.received = True
        raise Terminated()

    @contextmanager
    def installed(self) -> Iterator[SigtermCatcher]:
        """Within it, SIGTERM raises Terminated in the main thread (elsewhere, and afterwards, as before)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        before = signal.signal(signal.SIGTERM, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, before)


def exit_code_of(err: BaseException) -> int:
    """The one exit-code rule."""
    if isinstance(err, Terminated):
        return TERMINATED
    if isinstance(err, KeyboardInterrupt):
        return INTERRUPTED
    return 2 if isinstance(err, UsageError) else 1


def render_error(err: ScribefleetError, console: Console | None = None) -> None:
    """The one way an error reaches a person: `error [CODE]: message` on stderr."""
    (console or stderr_console()).print(f"error [{err.code}]: {err.message}", style="red")


def run(body: Callable[[], int], *, resume_hint: str = "what finished is recorded; run the same command again to resume") -> NoReturn:
    """Run a command's body and exit with its code; errors rendered and coded by the one rule. SIGTERM stops
    the body as Ctrl-C does."""
    sigterm = SigtermCatcher()
    try:
        with sigterm.installed():
            code = body()
    except ScribefleetError as err:
        render_error(err)
        code = exit_code_of(err)
    except KeyboardInterrupt as err:
        if sigterm.received:
            err = Terminated()
        said = "terminated (SIGTERM)" if isinstance(err, Terminated) else "interrupted"
        stderr_console().print(f"{said}: {resume_hint}")
        code = exit_code_of(err)
    raise typer.Exit(code)


def transcribe_options(**fields: Any) -> TranscribeOptions:
    """The options model of the flags; INVALID_OPTIONS (exit 2) naming each bad one."""
    try:
        return TranscribeOptions(**fields)
    except ValidationError as exc:
        raise UsageError(_messages(exc)) from exc


def stage_list(value: str | None) -> tuple[str, ...]:
    """`--stages decode,render` as stage names; INVALID_OPTIONS naming the stages there are."""
    from scribefleet.pipeline.stages import STAGES

    names = tuple(dict.fromkeys(s for s in (value or "").replace(" ", "").split(",") if s))
    bad = [s for s in names if s not in STAGES]
    if bad or (value is not None and not names):
        raise UsageError(f"unknown stage(s) {', '.join(bad) or '(none)'} in --stages; choose from {', '.join(STAGES)}")
    return names
def fetch_options(**fields: Any) -> FetchOptions:
    """How URL inputs are downloaded, from the flags; INVALID_OPTIONS naming each bad one."""
    try:
        return FetchOptions(**fields)
    except ValidationError as exc:
        raise UsageError(_messages(exc)) from exc


def publish_options(target: str | None, **fields: Any) -> PublishOptions | None:
    """Where outputs are published (None without --publish); INVALID_OPTIONS naming each bad one."""
    if target is None:
        return None
    try:
        return PublishOptions(target=target, **fields)
    except ValidationError as exc:
        raise UsageError(_messages(exc)) from exc


def path_value(flag: str, what: str = "a folder") -> Callable[[object], Path]:
    """The parser of a path flag (`--out`, `--state`...): INVALID_OPTIONS (exit 2) for an empty value, which
    Path('') would silently turn into the current folder."""

    def parse(value: object) -> Path:
        if isinstance(value, Path):  # the default, converted by click like a given value
            return value
        return Path(_given(flag, str(value), what))

    parse.__name__ = "path"  # what --help shows as the value's kind
    return parse


def text_value(flag: str, what: str) -> Callable[[object], str]:
    """The parser of a text flag whose empty value would silently mean its default (`--language ''`: auto)."""

    def parse(value: object) -> str:
        return _given(flag, str(value), what)

    parse.__name__ = "text"
    return parse


def _given(flag: str, value: str, what: str) -> str:
    if not value.strip():
        raise UsageError(f"{flag} was given an empty value: give {what}, or leave the flag out for its default",
                         flag=flag)  # fmt: skip
    return value


# -- the transcribe flags, declared once --------------------------------------------

Model = Annotated[str, typer.Option("--model", "-m", help="A CTranslate2 model folder, a size name (small, large-v3), a Hugging Face repo id, or tiny.en (bundled, offline).")]
Language = Annotated[Optional[str], typer.Option("--language", "-l", parser=text_value("--language", "a language code or name, or auto"), help="Spoken language: a code (en, de...) or name (german); auto (default) detects it across the file; auto-per-window per ~20 s.")]
Task = Annotated[str, typer.Option("--task", help="transcribe, or translate (to English).")]
Formats = Annotated[str, typer.Option("--format", "-f", "--output_format", help=f"Comma-separated from {','.join(FORMATS)}, or all.")]
Device = Annotated[str, typer.Option("--device", help="auto, cpu or cuda. cuda never falls back to the CPU.")]
ComputeType = Annotated[str, typer.Option("--compute-type", "--compute_type", help="auto, int8, int8_float16, float16, float32...")]
BatchSize = Annotated[int, typer.Option("--batch-size", "--batch_size", min=1, help="Batched inference width; 1 = sequential decoding.")]
Vad = Annotated[bool, typer.Option("--vad/--no-vad", help="Skip silence with Silero VAD.")]
WordTimestamps = Annotated[bool, typer.Option("--word-timestamps", "--word_timestamps", help="Add per-word timings (JSON words, TSV stays per segment).")]
BeamSize = Annotated[int, typer.Option("--beam-size", "--beam_size", min=1, help="Beam width.")]
InitialPrompt = Annotated[Optional[str], typer.Option("--initial-prompt", "--initial_prompt", help="Text that primes the first window (names, jargon).")]
Diarize = Annotated[bool, typer.Option("--diarize", "--diarization", help="Label who speaks (speaker diarization).")]
Speakers = Annotated[Optional[int], typer.Option("--speakers", min=1, max=64, help="Exactly this many speakers (with --diarize).")]
MinSpeakers = Annotated[Optional[int], typer.Option("--min-speakers", min=1, max=64, help="At least this many speakers (with --diarize).")]
MaxSpeakers = Annotated[Optional[int], typer.Option("--max-speakers", min=1, max=64, help="At most this many speakers (with --diarize).")]
SpeakerNames = Annotated[Optional[Path], typer.Option("--speaker-names", parser=path_value("--speaker-names"), help="Folder of a clip per known person (file stem = name) or a subfolder of clips per person (folder name = name): matching voices get that name (with --diarize).")]
EngineName = Annotated[Optional[str], typer.Option("--engine", help="Where slots run: local (processes on this machine) or ray (actors on a Ray cluster); default SCRIBEFLEET_ENGINE, local.")]
SlotsPerGpu = Annotated[Optional[int], typer.Option("--slots-per-gpu", min=1, max=26, help="Slots sharing each GPU, each with its own model instance (default SCRIBEFLEET_SLOTS_PER_GPU, 1).")]
RayAddress = Annotated[Optional[str], typer.Option("--ray-address", help="The Ray cluster for --engine ray: an address, or local for a private one; default SCRIBEFLEET_RAY_ADDRESS.")]
Cookies = Annotated[Optional[str], typer.Option("--cookies", parser=text_value("--cookies", "a cookies file"), help="Netscape cookies file for URL downloads, as yt-dlp's --cookies (YouTube's 'confirm you're not a bot').")]
Proxy = Annotated[Optional[str], typer.Option("--proxy", parser=text_value("--proxy", "a proxy URL"), help="Proxy for URL downloads: http://, https:// or socks5://host:port.")]
SocketTimeout = Annotated[Optional[float], typer.Option("--socket-timeout", min=0.1, help="Seconds a URL download may wait for the server before it fails.")]
MaxDuration = Annotated[Optional[float], typer.Option("--max-duration", min=1, help="Refuse URLs whose media lasts longer (seconds), before downloading.")]
Publish = Annotated[Optional[str], typer.Option("--publish", help="Also upload every output to s3://bucket/prefix/ (boto3; AWS settings from the environment).")]
S3EndpointUrl = Annotated[Optional[str], typer.Option("--s3-endpoint-url", help="S3-compatible server for --publish (MinIO, R2...); default: AWS or AWS_ENDPOINT_URL.")]
S3Region = Annotated[Optional[str], typer.Option("--s3-region", help="Region for --publish; default: AWS_REGION / AWS_DEFAULT_REGION.")]
AllowMissing = Annotated[bool, typer.Option("--allow-missing", help="Run the inputs that exist even when others are missing (each missing one becomes a failed job) instead of refusing up front.")]

#: boolean flags whisper / whisper-ctranslate2 spell `--flag True|False`: flag -> (what True means, what False means)
_WHISPER_BOOLEANS = {
    "--word_timestamps": ("--word-timestamps", None), "--word-timestamps": ("--word-timestamps", None),
    "--vad": ("--vad", "--no-vad"), "--vad_filter": ("--vad", "--no-vad"), "--verbose": ("--verbose", None),
}  # fmt: skip
_TRUTH = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def whisper_booleans(argv: list[str]) -> list[str]:
    """`--word_timestamps True` -> `--word-timestamps`, `--verbose False` -> nothing, `--vad False` -> `--no-vad`."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg, nxt = argv[i], argv[i + 1] if i + 1 < len(argv) else None
        flag, _, value = arg.partition("=")
        if flag in _WHISPER_BOOLEANS and (value or nxt or "").lower() in _TRUTH:
            truth = _TRUTH[(value or nxt or "").lower()]
            chosen = _WHISPER_BOOLEANS[flag][0 if truth else 1]
            out += [chosen] if chosen else []
            i += 1 if value else 2
            continue
        out.append(arg)
        i += 1
    return out
