"""Groups: the ready transcribe tasks that ride along with one just placed on a slot.

Many short files decode slowly one at a time: a file of 20 s fills one clip of
a batch of 8. So when the dispatcher places a transcribe task on a slot of an
engine that `runs_groups`, it attaches other ready transcribe tasks that would
decode alike (same model, options, window and resources: `group_key`) as the
run's `members`, up to `group_max` tasks per slot, spread evenly over the
groups placed in the same round. The slot decodes their speech in shared
batches (worker/group.py, pipeline/cobatch.py), each file keeping its own
checkpoints, progress, result and error.

Not grouped: long files (`pipeline.spread_plan.is_long`: 6 minutes or more,
by the store's `audio_s`, which creation reads from the header and the decode
stage measures), so that their windows can be spread over free slots
(lending.py) instead of riding on one slot while others idle (they fill the
model's batches alone anyway); URL tasks (two URLs of the same media share one
work dir under a lock, which a group would wait on in a circle), remote tasks, unbatched
decoding (`--batch-size 1`, `--no-vad`: nothing to share), diarized files
(their speaker models would run side by side in one slot), tasks of the same
content as one running or placed (placement's rule), and a task whose last
attempt ended with its group's slot dying (`solo`): it runs alone, so a file
that crashes slots fails alone instead of taking its group along each time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence

from scribefleet.pipeline.spread_plan import is_long
from scribefleet.store.models import Task

#: spec fields that differ between files of one group (everything else must be equal)
_PER_FILE = ("input_path", "display", "work_dir", "outputs", "rerun_stages", "rerun_id", "publish")


def group_key(task: Task) -> str | None:
    """What tasks must share to decode in one batch; None for a task that never joins a group."""
    spec = task.spec
    if task.kind != "transcribe" or spec.get("remote") or spec.get("url") or not spec.get("input_path"):
        return None
    if is_long(task.audio_s):
        return None  # spread over free slots instead (lending.py)
    options = dict(spec.get("options") or {})
    if int(options.get("batch_size", 8)) <= 1 or options.get("vad") is False or options.get("diarize"):
        return None  # nothing to share; or (diarize) several speaker models at once in one slot
    options.pop("formats", None)
    same = {k: v for k, v in spec.items() if k not in _PER_FILE} | {"options": options, "resources": task.resources}
    return json.dumps(same, sort_keys=True, default=str)


def attach(
    placed: Sequence[tuple[Task, str]],
    ready: Iterable[Task],
    busy_content: Iterable[str],
    group_max: int,
    solo: set[str] = frozenset(),  # type: ignore[assignment]
) -> dict[str, list[Task]]:
    """Members for the tasks just placed (lead task id -> other tasks to run with it on its slot)."""
    if group_max <= 1:
        return {}
    leads = [(task, key) for task, _ in placed if task.id not in solo and (key := group_key(task)) is not None]
    if not leads:
        return {}
    members: dict[str, list[Task]] = {task.id: [] for task, _ in leads}
    taken = {task.id for task, _ in placed}
    busy = set(busy_content) | {task.content_key for task, _ in placed if task.content_key}
    for task in ready:
        if task.id in taken or task.id in solo or (task.content_key and task.content_key in busy):
            continue
        key = group_key(task)
        room = [lead for lead, k in leads if k == key and len(members[lead.id]) + 1 < group_max]
        if key is None or not room:
            continue
        lead = min(room, key=lambda t: len(members[t.id]))  # even groups: the slots finish together
        members[lead.id].append(task)
        taken.add(task.id)
        if task.content_key:
            busy.add(task.content_key)
    return {lead: tasks for lead, tasks in members.items() if tasks}
