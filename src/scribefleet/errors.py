"""Every error scribefleet raises on purpose, in one tree with stable codes.

The `code` of each class is a public contract (CLI summaries, store rows,
HTTP bodies): add codes, never rename them. `docs/errors.md` lists every code
with what to do about it, and a test keeps the two in step.

    ScribefleetError                    INTERNAL_ERROR
    +-- UsageError                      INVALID_OPTIONS
    |   +-- FeatureUnavailable          FEATURE_UNAVAILABLE
    +-- StateLocked                     STATE_LOCKED
    +-- InputError
    |   +-- InputNotFound               INPUT_NOT_FOUND
    |   +-- MediaUnreadable             MEDIA_UNREADABLE
    |   +-- MediaEmpty                  MEDIA_EMPTY
    |   +-- FileTooLarge                FILE_TOO_LARGE
    |   +-- DownloadFailed              DOWNLOAD_FAILED
    |   +-- UrlUnsupported              URL_UNSUPPORTED
    |   +-- DownloadTooLarge            DOWNLOAD_TOO_LARGE
    |   +-- UrlBotCheck                 URL_BOT_CHECK
    |   +-- UrlNotAllowed               URL_NOT_ALLOWED
    +-- ModelError
    |   +-- ModelNotFound               MODEL_NOT_FOUND
    |   +-- ModelLoadFailed             MODEL_LOAD_FAILED
    +-- DeviceError
    |   +-- CudaUnavailable             CUDA_UNAVAILABLE
    |   +-- OutOfMemory                 OUT_OF_MEMORY
    +-- TaskError
    |   +-- TranscriptionFailed         TRANSCRIPTION_FAILED
    |   +-- DiarizationFailed           DIARIZATION_FAILED
    |   |   +-- DiarizationModelMissing DIARIZATION_MODEL_MISSING
    |   +-- SlotCrashed                 SLOT_CRASHED
    |   +-- TaskTimeout                 TASK_TIMEOUT
    |   +-- UserCanceled                USER_CANCELED
    |   +-- DependencyFailed            DEPENDENCY_FAILED
    |   +-- ShellCommandNotAllowed      SHELL_COMMAND_NOT_ALLOWED
    |   +-- ShellFailed                 SHELL_FAILED
    |   +-- LlmUnreachable              LLM_UNREACHABLE
    |   +-- LlmFailed                   LLM_FAILED
    +-- OutputWriteFailed               OUTPUT_WRITE_FAILED
    +-- PublishFailed                   PUBLISH_FAILED
    +-- PlanInvalid                     PLAN_INVALID
    +-- Unauthorized                    UNAUTHORIZED
    +-- ControllerUnreachable           CONTROLLER_UNREACHABLE
    +-- RayUnreachable                  RAY_UNREACHABLE
    +-- InvalidRequest                  INVALID_REQUEST        (the controller's HTTP API:)
    +-- CsrfFailed                      CSRF_FAILED
    +-- NotFound                        NOT_FOUND
    +-- MethodNotAllowed                METHOD_NOT_ALLOWED
    +-- UrlNotSupported                 URL_NOT_SUPPORTED
    +-- JobNotComplete                  JOB_NOT_COMPLETE
    +-- RequestTooLarge                 REQUEST_TOO_LARGE
    +-- TooManyAttempts                 TOO_MANY_ATTEMPTS
    +-- RemoteWorkerError               (remote GPU workers, seed 001:)
        +-- RemoteWorkerUnauthorized    REMOTE_WORKER_UNAUTHORIZED
        +-- RemoteWorkerUnreachable     REMOTE_WORKER_UNREACHABLE
        +-- RemoteWorkerTimeout         REMOTE_WORKER_TIMEOUT
        +-- RemoteWorkerCapacity        REMOTE_WORKER_CAPACITY
        +-- RemoteDispatchFailed        REMOTE_DISPATCH_FAILED
        +-- RemoteFailed                REMOTE_FAILED
"""

from __future__ import annotations

from typing import Any, ClassVar

from scribefleet.masking import redact, redact_value


class ScribefleetError(Exception):
    """Base of every error raised on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"  # public contract: add, never rename
    http_status: ClassVar[int] = 500
    #: whether running the same task again may succeed (slot death, OOM, timeout)
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, **details: Any) -> None:
        message = redact(message)  # a presigned link or a KEY=... of a command, masked (DESIGN invariant 5)
        super().__init__(message)
        self.message = message
        self.details = redact_value(details)

    def to_dict(self) -> dict[str, Any]:
        """The wire shape: {"code", "message", "details"}."""
        return {"code": self.code, "message": self.message, "details": self.details}

    @classmethod
    def from_code(cls, code: str, message: str, **details: Any) -> "ScribefleetError":
        """Rebuild an error that crossed a process boundary as (code, message)."""
        klass = ERRORS_BY_CODE.get(code, ScribefleetError)
        err = klass.__new__(klass)
        ScribefleetError.__init__(err, message, **details)
        if klass is ScribefleetError and code != ScribefleetError.code:
            err.code = code  # type: ignore[misc]  # unknown code from a newer peer: keep it
        return err


class UsageError(ScribefleetError):
    """The command line or job options are invalid."""

    code, http_status = "INVALID_OPTIONS", 400


class StateLocked(ScribefleetError):
    """Another scribefleet process is already dispatching from this state directory."""

    code, http_status = "STATE_LOCKED", 409


class InputError(ScribefleetError):
    """Something is wrong with one input; only its own job fails."""

    code, http_status = "INPUT_ERROR", 422


class InputNotFound(InputError):
    """An input path or glob matched nothing."""

    code, http_status = "INPUT_NOT_FOUND", 404


class MediaUnreadable(InputError):
    """The input could not be decoded as audio."""

    code, http_status = "MEDIA_UNREADABLE", 422


class MediaEmpty(InputError):
    """The input has no audio stream, or its audio lasts zero seconds."""

    code, http_status = "MEDIA_EMPTY", 422


class FileTooLarge(InputError):
    """The input is larger than the configured limit (max_file_mb)."""

    code, http_status = "FILE_TOO_LARGE", 413


class DownloadFailed(InputError):
    """A media URL could not be downloaded (HTTP error, network failure, refused connection)."""

    code, http_status = "DOWNLOAD_FAILED", 502


class UrlUnsupported(InputError):
    """A URL holds no media yt-dlp can find (not a media file, no known site, a page without audio)."""

    code, http_status = "URL_UNSUPPORTED", 422


class DownloadTooLarge(InputError):
    """A URL's media is larger or longer than the download limits, known before anything was downloaded."""

    code, http_status = "DOWNLOAD_TOO_LARGE", 413


class UrlBotCheck(InputError):
    """The site (YouTube) asked to sign in to prove the request is not a bot."""

    code, http_status = "URL_BOT_CHECK", 403


class UrlNotAllowed(InputError):
    """A URL resolves to a loopback, link-local or private address the controller may not fetch."""

    code, http_status = "URL_NOT_ALLOWED", 403


class ModelError(ScribefleetError):
    """The speech model cannot be used."""

    code, http_status = "MODEL_ERROR", 500


class ModelNotFound(ModelError):
    """The --model value names no local folder, bundled model or downloadable model."""

    code, http_status = "MODEL_NOT_FOUND", 404


class ModelLoadFailed(ModelError):
    """The model files exist but CTranslate2 could not load them."""

    code, http_status = "MODEL_LOAD_FAILED", 500


class DeviceError(ScribefleetError):
    """The compute device cannot run the job."""

    code, http_status = "DEVICE_ERROR", 503


class CudaUnavailable(DeviceError):
    """A CUDA slot was asked for but the GPU cannot actually be used."""

    code, http_status = "CUDA_UNAVAILABLE", 503


class OutOfMemory(DeviceError):
    """The device ran out of memory; the job is retried with a smaller batch."""

    code, http_status = "OUT_OF_MEMORY", 507
    retryable = True


class TaskError(ScribefleetError):
    """A task failed while running."""

    code, http_status = "TASK_FAILED", 500


class TranscriptionFailed(TaskError):
    """The speech model raised an error that is not one of the known kinds."""

    code, http_status = "TRANSCRIPTION_FAILED", 500


class DiarizationFailed(TaskError):
    """Telling the speakers apart failed (the backend raised, or the stage ran past its time limit)."""

    code, http_status = "DIARIZATION_FAILED", 500


class DiarizationModelMissing(DiarizationFailed):
    """The chosen diarization backend has no model: a package, a model folder or a token is missing."""

    code, http_status = "DIARIZATION_MODEL_MISSING", 424


class SlotCrashed(TaskError):
    """The slot process running the task died too many times."""

    code, http_status = "SLOT_CRASHED", 500
    retryable = True


class TaskTimeout(TaskError):
    """The task ran longer than its timeout and was killed."""

    code, http_status = "TASK_TIMEOUT", 504
    retryable = True


class UserCanceled(TaskError):
    """Somebody canceled the task."""

    code, http_status = "USER_CANCELED", 409


class OutputWriteFailed(ScribefleetError):
    """An output or checkpoint file could not be written (disk full, permissions)."""

    code, http_status = "OUTPUT_WRITE_FAILED", 507


class PublishFailed(ScribefleetError):
    """Uploading an output to S3 failed (credentials, bucket, endpoint); a resume retries only the upload."""

    code, http_status = "PUBLISH_FAILED", 502


class PlanInvalid(ScribefleetError):
    """A plan file cannot be run as written; details name the task ids and lines at fault."""

    code, http_status = "PLAN_INVALID", 422


class DependencyFailed(TaskError):
    """A task this one needs failed, was skipped or was canceled, so this one is skipped."""

    code, http_status = "DEPENDENCY_FAILED", 424


class ShellCommandNotAllowed(TaskError):
    """A shell task's command matched no pattern of the allowlist (shell_allow); it never ran."""

    code, http_status = "SHELL_COMMAND_NOT_ALLOWED", 403


class ShellFailed(TaskError):
    """A shell task's command exited with a non-zero status."""

    code, http_status = "SHELL_FAILED", 500


class LlmUnreachable(TaskError):
    """An llm task's chat endpoint refused the connection, could not be reached, or did not answer in time."""

    code, http_status = "LLM_UNREACHABLE", 503
    retryable = True


class LlmFailed(TaskError):
    """An llm task's chat endpoint answered with an HTTP error or with no usable answer."""

    code, http_status = "LLM_FAILED", 502


class FeatureUnavailable(UsageError):
    """A flag asks for a feature this version does not have yet; refused rather than ignored."""

    code, http_status = "FEATURE_UNAVAILABLE", 501


class Unauthorized(ScribefleetError):
    """The request carried no API token, or one the controller does not accept."""

    code, http_status = "UNAUTHORIZED", 401


class ControllerUnreachable(ScribefleetError):
    """The controller could not be reached (refused, timed out, or kept answering 5xx)."""

    code, http_status = "CONTROLLER_UNREACHABLE", 503
    retryable = True


class RayUnreachable(ScribefleetError):
    """The ray engine could not connect to its Ray cluster (no cluster there, or it refused our token)."""

    code, http_status = "RAY_UNREACHABLE", 503


class StateIncompatible(ScribefleetError):
    """The state directory was written by a newer scribefleet (unknown schema version), or its store is no
    SQLite database (damaged, overwritten)."""

    code, http_status = "STATE_INCOMPATIBLE", 409


class InvalidRequest(ScribefleetError):
    """An HTTP request is malformed: not the expected content type, a broken multipart body."""

    code, http_status = "INVALID_REQUEST", 400


class CsrfFailed(ScribefleetError):
    """A state-changing request authenticated by the session cookie lacks the session's CSRF token."""

    code, http_status = "CSRF_FAILED", 403


class NotFound(ScribefleetError):
    """No such route, job, batch or upload."""

    code, http_status = "NOT_FOUND", 404


class MethodNotAllowed(ScribefleetError):
    """The route exists but not with this HTTP method."""

    code, http_status = "METHOD_NOT_ALLOWED", 405


class UrlNotSupported(ScribefleetError):
    """A job names a media URL and the controller is too old for URLs (kept: codes are never removed)."""

    code, http_status = "URL_NOT_SUPPORTED", 422


class JobNotComplete(ScribefleetError):
    """An output was asked for before its job completed."""

    code, http_status = "JOB_NOT_COMPLETE", 409


class RequestTooLarge(ScribefleetError):
    """A request body is over the controller's limit for its kind (JSON bodies: SCRIBEFLEET_MAX_JSON_KB)."""

    code, http_status = "REQUEST_TOO_LARGE", 413


class TooManyAttempts(ScribefleetError):
    """Too many wrong tokens came from one client address; it must wait (Retry-After) before trying again."""

    code, http_status = "TOO_MANY_ATTEMPTS", 429


class RemoteWorkerError(ScribefleetError):
    """Something went wrong between the controller and a remote worker (seed 001's codes below)."""

    code, http_status = "REMOTE_WORKER_ERROR", 502


class RemoteWorkerUnauthorized(RemoteWorkerError):
    """The worker refused the controller's token: REMOTE_WORKER_TOKEN must equal the worker's WORKER_TOKEN."""

    code, http_status = "REMOTE_WORKER_UNAUTHORIZED", 401


class RemoteWorkerUnreachable(RemoteWorkerError):
    """The worker could not be reached (refused, timed out, 5xx); the job waits and is tried again."""

    code, http_status = "REMOTE_WORKER_UNREACHABLE", 503
    retryable = True


class RemoteWorkerTimeout(RemoteWorkerError):
    """A remote job ran longer than REMOTE_WORKER_TIMEOUT_SECONDS."""

    code, http_status = "REMOTE_WORKER_TIMEOUT", 504


class RemoteWorkerCapacity(RemoteWorkerError):
    """The worker is full (it answers 429), or a job waited longer than the timeout for a free place."""

    code, http_status = "REMOTE_WORKER_CAPACITY", 429
    retryable = True


class RemoteDispatchFailed(RemoteWorkerError):
    """The worker would not create the job (it refused the media or the options)."""

    code, http_status = "REMOTE_DISPATCH_FAILED", 502


class RemoteFailed(RemoteWorkerError):
    """The worker ran the job and it failed; the worker's own code and message are in details."""

    code, http_status = "REMOTE_FAILED", 502


def _all_subclasses(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out


ERRORS_BY_CODE: dict[str, type[ScribefleetError]] = {
    c.code: c for c in [ScribefleetError, *_all_subclasses(ScribefleetError)]
}
