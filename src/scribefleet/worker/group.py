"""A slot's group of transcribe tasks: each its own job in a thread, their clips decoded in shared batches.

The dispatcher (dispatch/groups.py) may hand a slot one run with other runs
attached as `members` (engines/base.py): transcribe tasks with the same model
and options. `run_group` runs the lead and every member as if each were alone
(its own stages, checkpoints, progress and result or error), each in a thread
seated at one `pipeline.cobatch.SharedBatches`, so their speech clips fill
shared batches. A member's reply is sent as soon as it ends; the lead's is
returned to be sent last, because an engine reads the lead's end as the slot
being free again. A file that fails (unreadable, too large) fails alone: its
thread leaves the shared batches and the others go on.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from scribefleet.pipeline.cobatch import SharedBatches, seated

Slot = Any  # worker.slot.Slot, which imports this module: named, not imported, to keep the package acyclic


class _OneLoadAtATime:
    """The slot's model cache, loading for one thread at a time (two jobs must not load one model twice)."""

    def __init__(self, cache: Any) -> None:
        self._cache, self._lock = cache, threading.Lock()

    def get(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return self._cache.get(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


def _load_model(models: _OneLoadAtATime, run: dict[str, Any], slot: Slot) -> None:
    """Load the group's model in this thread, which makes the shared calls (see cobatch.SharedBatches.serve)."""
    from scribefleet.errors import ScribefleetError
    from scribefleet.options import TranscribeOptions
    from scribefleet.pipeline.models import ResolvedModel

    spec = run.get("spec") or {}
    try:
        options = TranscribeOptions(**(spec.get("options") or {}))
        models.get(
            ResolvedModel(path=Path(spec["model_path"]), model_id=str(spec["model_id"])), device=slot.device,
            compute_type=options.compute_type, cpu_threads=int(spec.get("cpu_threads") or slot.cpu_threads),
            batched=options.decodes_clips,
        )  # fmt: skip
    except (KeyError, TypeError, ValueError, ScribefleetError):  # pydantic's ValidationError is a ValueError
        pass  # each job meets the same problem and fails with it on its own


def run_group(slot: Slot, message: dict[str, Any]) -> list[dict[str, Any]]:
    """Run the lead task of `message` and its members together; send the members' replies, return the lead's."""
    lead = {k: v for k, v in message.items() if k != "members"}
    runs = [lead, *message["members"]]
    slot.current_task = str(lead["task_id"])
    slot.log.info("group of %d transcribe tasks: %s", len(runs), ", ".join(str(r["task_id"]) for r in runs))
    shared = SharedBatches()
    seats = [shared.seat() for _ in runs]  # all seated before any starts, so no batch leaves without one
    models = _OneLoadAtATime(slot.models())
    _load_model(models, lead, slot)
    replies: list[dict[str, Any] | None] = [None] * len(runs)

    def work(i: int) -> None:
        with seated(seats[i]):
            replies[i] = slot.execute(runs[i], models=lambda: models)
        if i > 0:
            slot.send(replies[i])

    threads = [threading.Thread(target=work, args=(i,), name=f"task-{r['task_id']}", daemon=True) for i, r in enumerate(runs)]
    for thread in threads:
        thread.start()
    shared.serve()  # this thread makes the shared pipeline calls until every job has left
    for thread in threads:
        thread.join()
    slot.log.info("group done: %d requests decoded in %d shared pipeline calls", shared.requests, shared.calls)
    assert replies[0] is not None
    return [replies[0]]
