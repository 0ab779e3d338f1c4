"""The controller client: how anything outside a controller talks to its HTTP API (docs/api.md).

`ControllerClient` (controller.py) does one request at a time with the token,
timeouts, retries and error codes; `connect` builds one from the settings;
`job_or_batch` and `cancel` are what `status`, `logs` and `cancel` with
`--controller` do with an id that may name a job or a batch.
"""

from scribefleet.client.controller import (
    Backoff, ControllerClient, backoff_delay, cancel, connect, error_from_response, job_or_batch, normalize_url,
)

__all__ = [
    "Backoff", "ControllerClient", "backoff_delay", "cancel", "connect", "error_from_response", "job_or_batch",
    "normalize_url",
]
