"""The store: the single source of truth of a state directory (SQLite, WAL)."""

from scribefleet.store.models import Batch, Event, Task, TaskState
from scribefleet.store.store import Store

__all__ = ["Batch", "Event", "Store", "Task", "TaskState"]
