"""Who hears of the hub's clients and channels coming and going (the events plugin).

A watcher is told, on the loop, when a protocol says a client is connected
(:meth:`.Hub.identify`), when an identified client subscribes, leaves a channel or
disconnects, and when a channel gets its first local subscriber or loses its last.
Nothing is told, and nothing costs more than an empty-list check, while nobody watches.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .clients import Client

log = logging.getLogger("realtime.hub")


class HubWatcher(Protocol):
    """What a watcher implements; each call must be quick and must not raise."""

    def connected(self, client: Client) -> None: ...
    def disconnected(self, client: Client, code: int, reason: str) -> None: ...
    def subscribed(self, client: Client, channel: str) -> None: ...
    def unsubscribed(self, client: Client, channel: str) -> None: ...
    def first(self, channel: str) -> None: ...
    def last(self, channel: str) -> None: ...


class Watchers(list["HubWatcher"]):
    """The hub's watchers; each call goes to every one, a failing one logged."""

    def _each(self, method: str, *args: object) -> None:
        for watcher in self:
            try:
                getattr(watcher, method)(*args)
            except Exception:
                log.exception("a hub watcher failed in %s", method)

    def connected(self, client: Client) -> None:
        self._each("connected", client)

    def disconnected(self, client: Client, code: int, reason: str) -> None:
        self._each("disconnected", client, code, reason)

    def subscribed(self, client: Client, channel: str) -> None:
        self._each("subscribed", client, channel)

    def unsubscribed(self, client: Client, channel: str) -> None:
        self._each("unsubscribed", client, channel)

    def first(self, channel: str) -> None:
        self._each("first", channel)

    def last(self, channel: str) -> None:
        self._each("last", channel)
