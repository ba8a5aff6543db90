"""The Redis broker's subscription connections (:mod:`.link`) and what goes out on them.

A plain Redis has one link: every channel and the control channel, with SUBSCRIBE. Redis
Cluster (:mod:`.clustered`) has one per shard, with SSUBSCRIBE, and says here which
link carries a channel and how a link reaches its shard. (Un)subscriptions are
batched per link and sent on its connection only while it is up; the listener
(:mod:`.listener`) reads what comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..base import Broker
from .connection import make_client
from .link import Link
from .names import Names
from .sequence import Mark
from .tally import Tally

log = logging.getLogger("realtime.broker")


class Subscriptions(Broker):
    """The links of :class:`.listener.RedisListener`, which sets what is declared here."""

    timeout: float
    names: Names
    tally: Tally
    _links: list[Link]
    _subscribed: asyncio.Event | None
    _down_since: float

    #: The names in Redis (Redis Cluster has its own, see :mod:`.names`).
    NAMES: ClassVar[type[Names]] = Names
    #: The commands that (un)subscribe, and the message types of what they bring.
    SUBSCRIBE, UNSUBSCRIBE = "SUBSCRIBE", "UNSUBSCRIBE"
    MESSAGE_TYPES = frozenset({"message"})
    MARKS: ClassVar[Mapping[str, Mark]] = {
        "subscribe": Mark.SUBSCRIBED,
        "unsubscribe": Mark.UNSUBSCRIBED,
    }

    def key(self, channel: str) -> str:
        """The Pub/Sub channel carrying ``channel``'s publications."""
        return self.names.key(channel)

    def _link_of(self, channel: str) -> Link:
        """The link carrying ``channel`` (the only one, on a plain Redis)."""
        return self._links[0]

    async def _connect(self, link: Link) -> tuple[Redis, PubSub]:
        """A new client and Pub/Sub connection for ``link``, connected."""
        client = make_client(self.url, self.timeout, 0)
        pubsub = client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await _close(client, pubsub)
            raise
        return client, pubsub

    def _always(self, link: Link) -> list[str]:
        """What ``link`` subscribes besides its channels: the control channel."""
        return [self.names.control] if link.control else []

    @property
    def _live(self) -> set[str]:
        """Channels Redis confirmed, on every link."""
        return set().union(*(link.live for link in self._links))

    @property
    def _flush_tasks(self) -> list[asyncio.Task[None]]:
        return [link.flush_task for link in self._links if link.flush_task is not None]

    def _link_changed(self, link: Link, up: bool) -> None:
        """``link`` came up or went down: the subscription is up while all links are."""
        assert self._subscribed is not None
        link.up = up
        if not up:
            link.down_since = time.monotonic()
        if all(each.up for each in self._links):
            self._subscribed.set()
        elif self._subscribed.is_set():
            self._subscribed.clear()
            self._down_since = time.monotonic()

    @property
    def subscribed(self) -> bool:
        return self._subscribed is not None and self._subscribed.is_set()

    def _request(self, channel: str, wanted: bool) -> None:
        """Have Redis (un)subscribe ``channel`` soon, in the order asked, batched.

        Only the last wish per channel is sent: one given up and wanted again is
        SUBSCRIBEd again, which Redis confirms again, and the listener starts afresh.
        """
        link = self._link_of(channel)
        if link.pubsub is None:
            return  # no subscription now: the next one subscribes the current set
        link.changes[channel] = wanted
        self._schedule_flush(link)

    def _schedule_flush(self, link: Link) -> None:
        if link.flush_task is None and link.changes and link.pubsub is not None:
            link.flush_task = asyncio.get_running_loop().create_task(
                self._flush(link), name=f"redis subscriptions ({link.name})"
            )

    async def _flush(self, link: Link) -> None:
        """Send the subscription changes asked for, on the listener's connection.

        Only on a connection that is up: redis-py would otherwise connect again behind
        the listener's back. Whatever is not sent is not lost: the listener subscribes
        to every channel wanted at that moment whenever it connects. The confirmations
        come back through the listener, in order with the messages.
        """
        pubsub = link.pubsub
        try:
            while link.changes:
                pubsub = link.pubsub
                connection = pubsub.connection if pubsub is not None else None
                if connection is None or not connection.is_connected:
                    return
                changes, link.changes = link.changes, {}
                stop = [self.key(c) for c, wanted in changes.items() if not wanted]
                start = [self.key(c) for c, wanted in changes.items() if wanted]
                if stop:
                    link.unsubscribing.update(name.encode() for name in stop)
                    await self._send(connection, self.UNSUBSCRIBE, stop)
                if start:
                    await self._send(connection, self.SUBSCRIBE, start)
        except (RedisError, OSError) as exc:
            # The connection is failing: its listener notices and subscribes afresh.
            log.debug("sending subscriptions failed: %s", exc)
        except Exception:
            self.tally.add("flush", "sending subscriptions to redis failed", exc_info=True)
        finally:
            link.flush_task = None
            if link.pubsub is not pubsub:
                # The listener connected again meanwhile: what was asked since is its.
                self._schedule_flush(link)

    def _groups(self, names: list[str]) -> list[list[str]]:
        """``names`` in the groups one command may (un)subscribe: all at once here."""
        return [names]

    async def _send(self, connection: Any, command: str, names: list[str]) -> None:
        """(Un)subscribe ``names`` on ``connection``, in as few commands as allowed, in one
        write; the confirmations come back through the listener."""
        commands = [(command, *group) for group in self._groups(names) if group]
        packed = connection.pack_commands(commands)
        await connection.send_packed_command(packed, check_health=False)


async def _close(client: Redis | None, pubsub: PubSub | None) -> None:
    """Close a subscription's connection and client, whatever state they are in."""
    if pubsub is not None:
        # Through Any: redis-py types aclose() from 8.2 on and not before.
        close_pubsub: Any = pubsub.aclose
        with contextlib.suppress(Exception):
            await close_pubsub()
    if client is not None:
        with contextlib.suppress(Exception):
            await client.aclose()
