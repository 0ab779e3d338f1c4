"""The dispatcher ("the brain"): decides what runs where, and is the only writer of task state."""

from scribefleet.dispatch.dispatcher import Dispatcher, request_cancel
from scribefleet.dispatch.monitor import DispatchEvent

__all__ = ["DispatchEvent", "Dispatcher", "request_cancel"]
