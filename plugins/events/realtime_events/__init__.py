"""Events for the application's backend: hooks in-process and signed webhooks out.

What happens to connections, channels and users (:data:`EVENT_NAMES`) is emitted
through :class:`Events` (one per host: ``get_events(host)``): each event calls the
matching hook of every plugin that implements it (:mod:`.hookspecs`) and is queued
for every ``--webhook-url``, batched and signed (:mod:`.webhooks`).
"""

from .model import EVENT_NAMES, Event
from .plugin import Events, get_events

__all__ = ["EVENT_NAMES", "Event", "Events", "get_events"]
