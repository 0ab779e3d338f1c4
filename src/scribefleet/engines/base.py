"""What every engine (local, remote, Ray) offers the dispatcher, and the slot it hosts.

An engine hosts slots. The dispatcher asks it to start slots, hand a task to a
free slot, cancel a task, and tells it nothing else; the engine reports back
through `poll()` events. Only the dispatcher changes task state.
"""

from __future__ import annotations

from scribefleet.worker.slot_spec import SlotSpec

__all__ = ["SlotSpec"]
