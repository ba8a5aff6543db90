"""Hooks a plugin (or the app's code, as a plugin) implements to hear of events.

Each is called once per event, on the serving loop, with keyword arguments (declare
only those you need). A hook may be ``async``; it runs in a task of its own, so a
slow one delays nobody, and one that raises is logged. ``channel_vacated`` and
``user_offline`` come from where the broker's store decides them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from realtime import hookspec

if TYPE_CHECKING:
    from realtime import Host

    from .model import Event


@hookspec
def on_connect(host: Host, event: Event, client: str, user: str, protocol: str) -> object:
    """A client connected (``user`` is ``""`` for an anonymous one)."""


@hookspec
def on_disconnect(
    host: Host, event: Event, client: str, user: str, protocol: str, code: int, reason: str
) -> object:
    """A client's connection ended, with its close code and reason."""


@hookspec
def on_subscribe(host: Host, event: Event, client: str, user: str, channel: str) -> object:
    """A client subscribed to ``channel``."""


@hookspec
def on_unsubscribe(host: Host, event: Event, client: str, user: str, channel: str) -> object:
    """A client left ``channel``."""


@hookspec
def channel_occupied(host: Host, event: Event, channel: str) -> object:
    """``channel`` got its first subscriber anywhere in the cluster."""


@hookspec
def channel_vacated(host: Host, event: Event, channel: str) -> object:
    """``channel``'s last subscriber anywhere is gone."""


@hookspec
def user_online(host: Host, event: Event, user: str) -> object:
    """``user``'s first connection anywhere in the cluster."""


@hookspec
def user_offline(host: Host, event: Event, user: str) -> object:
    """``user``'s last connection anywhere is gone (a killed host's, once it expires)."""
