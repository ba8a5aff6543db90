"""Cluster-wide first and last: a user's first connection anywhere, a channel's last
subscriber gone, each decided once, by the store, in one process.

A process *holds* a key of a kind (the user ``alice`` of kind ``users``) for a member
of its own (a connection), and *releases* it. The tracker keeps the holds in the
broker's presence store, as the members of an internal channel per kind (``user`` is
the key, the member id is this process's uid and the member): the presence scripts
already decide, atomically, which join is a user's first and which leave its last,
and they say so to the one call that made the change. So :meth:`Tracker.on_change`
handlers hear ``(kind, key, True)`` when a key gets its first holder anywhere and
``(kind, key, False)`` when its last is gone, in exactly one process of the cluster.

A killed process's holds are not renewed and expire with ``presence_ttl``; whichever
process next renews, reads or :meth:`sweeps <Tracker.sweep>` that kind prunes them,
and hears the releases that leaves the keys with no holder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from .presence import Member, PresenceEvent, PresenceMode

if TYPE_CHECKING:
    from .base import Broker

log = logging.getLogger(__name__)

#: The internal channels holding each kind's holds: never a client's channel.
TRACK_PREFIX = "\x01track:"
#: How those channels keep presence: listed (so renewed and read), never announced.
TRACKED = PresenceMode(listed=True, announced=False)

#: ``(kind, key, held)``: ``key`` got its first holder (True) or lost its last (False).
ChangeHandler = Callable[[str, str, bool], object]


def is_tracked(channel: str) -> bool:
    """Whether ``channel`` is one of the tracker's internal channels."""
    return channel.startswith(TRACK_PREFIX)


class Tracker:
    """One broker's holds, kept in its presence store (see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._handlers: list[ChangeHandler] = []

    @property
    def supported(self) -> bool:
        """Whether the broker keeps presence, which tracking needs."""
        return self._broker.presence_manager is not None

    def on_change(self, handler: ChangeHandler) -> None:
        """Be told of the first holds and last releases this process's calls decide."""
        self._handlers.append(handler)

    def _member(self, key: str, member: str) -> Member:
        # Qualified by this process's uid: two processes' connection ids may be equal.
        return Member(client=f"{self._broker.uid}/{member}", user=key)

    async def hold(self, kind: str, key: str, member: str) -> None:
        """``member`` (of this process) holds ``key``; renewed until :meth:`release`.

        Never raises for the store being out of reach (added once it is back).
        """
        manager = self._broker.presence_manager
        if manager is not None:
            await manager.join(TRACK_PREFIX + kind, self._member(key, member), False)

    async def release(self, kind: str, key: str, member: str) -> None:
        """``member`` no longer holds ``key`` (a no-op if it did not)."""
        manager = self._broker.presence_manager
        if manager is not None:
            await manager.leave(TRACK_PREFIX + kind, self._member(key, member).client, False)

    async def sweep(self, kind: str) -> None:
        """Prune the expired holds of ``kind`` (a killed process's), hearing what that
        releases. Raises the broker's errors when its store is out of reach."""
        manager = self._broker.presence_manager
        if manager is not None:
            await manager.stats(TRACK_PREFIX + kind)

    def decided(self, channel: str, event: PresenceEvent) -> None:
        """The presence store decided a user-level change in a call of this process."""
        if not is_tracked(channel) or not event.user_changed:
            return
        kind = channel[len(TRACK_PREFIX) :]
        for handler in self._handlers:
            try:
                handler(kind, event.member.user, event.joined)
            except Exception:
                log.exception("handling a tracked change failed")
