"""Who is in which channel: joining, holding a channel's publications aside, leaving.

A base of :class:`.Hub`, as :class:`.backlog.Backlogs` is: the membership side of the
engine, which calls ``on_first``/``on_last`` as a channel gains its first local
subscriber and loses its last (the plugin subscribes the broker there), and keeps the
count of memberships its metrics read (``stats.subscriptions``), once per join or leave.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from .clients import Channel, Client, Format, Group, Held, HubStats
from .watchers import Watchers

log = logging.getLogger("realtime.hub")


class Membership:
    """The channels of a hub and their members, by format (``{channel: {format: group}}``)."""

    channels: dict[str, Channel]
    on_first: Callable[[str], None] | None
    on_last: Callable[[str], None] | None
    confirm: Callable[[str], Awaitable[None]] | None
    stats: HubStats
    watchers: Watchers
    _holding: dict[str, int]

    def join(self, channel: str, client: Client, fmt: Format) -> None:
        """Put ``client`` in ``channel``; publications reach it in ``fmt``."""
        if client.closing or channel in client.channels:
            return
        self._add(channel, client, fmt)

    def _add(self, channel: str, client: Client, fmt: Any) -> None:
        """``client`` is in ``channel`` now, in ``fmt`` (a format, or a :class:`Held`)."""
        members = self.channels.get(channel)
        if members is None:
            members = self.channels[channel] = {}
            if self.on_first is not None:
                self.on_first(channel)
            if self.watchers:
                self.watchers.first(channel)
        self._group(members, fmt, client).add(client)
        client.channels.append(channel)
        self.stats.subscriptions += 1
        if self.watchers and client.name:
            self.watchers.subscribed(client, channel)

    @staticmethod
    def _group(members: Channel, fmt: Any, client: Client) -> Group:
        group = members.get(fmt)
        if group is None:
            group = members[fmt] = Group(client.framing)
        return group

    def hold(self, channel: str, client: Client) -> Held:
        """Put ``client`` in ``channel`` with its publications kept aside, not sent.

        For a protocol that must read the channel's history before going live (stream
        recovery over a distributed broker): publications from now until
        :meth:`release` are collected in the returned :class:`Held`, so none is missed
        or sent twice around the read.
        """
        held = Held()
        if client.closing or channel in client.channels:
            return held
        self._add(channel, client, held)
        self._holding[channel] = self._holding.get(channel, 0) + 1
        return held

    def release(self, channel: str, client: Client, held: Held, fmt: Format) -> None:
        """From :meth:`hold` to a member receiving in ``fmt``, in one step: what was
        published until now is in ``held.publications``, what comes next is sent."""
        members = self.channels.get(channel)
        if members is None or members.pop(held, None) is None:
            return  # left (or gone) meanwhile
        self._unhold(channel)
        self._group(members, fmt, client).add(client)

    def _unhold(self, channel: str) -> None:
        left = self._holding[channel] - 1
        if left:
            self._holding[channel] = left
        else:
            del self._holding[channel]

    def leave(self, channel: str, client: Client) -> None:
        if channel not in client.channels:
            return
        client.channels.remove(channel)
        self.stats.subscriptions -= 1
        if self.watchers and client.name:
            self.watchers.unsubscribed(client, channel)
        members = self.channels.get(channel)
        if members is None:
            return
        for fmt, clients in list(members.items()):
            if clients.discard(client) and not clients:
                del members[fmt]
                if isinstance(fmt, Held):
                    self._unhold(channel)
        if not members:
            del self.channels[channel]
            if self.on_last is not None:
                self.on_last(channel)
            if self.watchers:
                self.watchers.last(channel)

    async def ready(self, channel: str) -> bool:
        """Wait until publications on ``channel`` reach this process (after :meth:`join`).

        With Redis that is one round trip; False if the broker could not confirm it
        (Redis down: the client stays, and hears the channel once Redis is back).
        """
        if self.confirm is None:
            return True
        try:
            await self.confirm(channel)
        except Exception as exc:
            log.debug("channel %r not confirmed by the broker: %r", channel, exc)
            return False
        return True

    def channel_counts(self) -> dict[str, int]:
        """Subscribers of every channel with any, for the broker's cluster-wide view."""
        return {
            channel: sum(len(clients) for clients in members.values())
            for channel, members in self.channels.items()
        }

    def subscribers(self, channel: str) -> int:
        return sum(len(clients) for clients in self.channels.get(channel, {}).values())
