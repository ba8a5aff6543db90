"""Several plain Redis instances sharded by channel (``redis+shards://``), as Centrifugo
shards its Redis engine: each channel lives on one of them, always the same.

::

    redis+shards://[[user]:password@]host:6379,host:6380[,...][/DB][?options]

lists the shards in order (``rediss+shards://`` for TLS); the credentials, database
and options apply to each (``redis://`` URLs made from it). A channel's shard is the
jump consistent hash (Lamping and Veach) of the FNV-1a 64 hash of its name over the
number of shards, as centrifuge-go's ``consistentIndex``: the same channel lands on
the same index as in Centrifugo, and adding a shard at the end moves only about
1/N of the channels (to the new one). Changing the list moves channels, with their
history, presence and numbering left behind on the old shard: subscribers there are
told (a new epoch) and recover what history the new shard has, nothing more.

:class:`ShardedBroker` is a broker composed of one :class:`.broker.RedisBroker` per
shard, each with its own subscription, commands pool, sequence checks and loss
reports. Per channel, on its shard: subscriptions, publishing (with idempotency
keys), history and its positions, presence (joins, leaves, members, and the
tracker's internal channels, each on the shard of its name). Every shard also keeps
this process's client count, which each shard's publish script reads in the same
step that publishes (how a publish answers "how many clients"). On the first shard
only: control messages, the channel maps and node info behind ``cluster_channels``
and ``cluster_nodes``.

What a shard's outage costs: its channels only. Publishing, history and presence on
them answer 503 (:class:`.errors.BrokerUnavailable`, naming the shard) until it is
back; their subscribers are told what they missed when it is (Centrifuge clients
recover or are told "insufficient state", raw /ws clients are closed with 1012);
the other shards' channels never notice. The first shard's outage also stops the
server API's per-user commands (control messages) and its ``channels`` and ``info``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from ..base import Broker, HistoryResult, Publication, StreamPosition
from ..presence import Member, PresenceEvent, PresenceManager, PresenceMode, PresenceStats
from ..results import PublishResult
from ..tracking import Tracker
from .broker import RedisBroker

log = logging.getLogger("realtime.broker")

SCHEMES = {"redis+shards": "redis", "rediss+shards": "rediss"}
_MASK = (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    value = 0xCBF29CE484222325
    for byte in data:
        value = ((value ^ byte) * 0x100000001B3) & _MASK
    return value


def jump_hash(key: int, buckets: int) -> int:
    """The bucket in ``[0, buckets)`` for ``key``: Lamping and Veach's jump consistent
    hash, in 64-bit arithmetic and floating point as the Go code computes it."""
    if buckets < 1:
        raise ValueError("at least one bucket")
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & _MASK
        jump = int(float(bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


@lru_cache(maxsize=65536)
def shard_index(channel: str, shards: int) -> int:
    """Which of ``shards`` shards ``channel`` lives on (centrifuge-go's consistentIndex)."""
    return 0 if shards == 1 else jump_hash(fnv1a_64(channel.encode()), shards)


def shard_urls(url: str) -> list[str]:
    """The ``redis://`` (or ``rediss://``) URL of each shard a ``redis+shards://`` URL lists."""
    parts = urlsplit(url)
    scheme = SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"not a sharded Redis URL (redis+shards://...): {url!r}")
    userinfo, at, hosts = parts.netloc.rpartition("@")
    listed = [host.strip() for host in hosts.split(",") if host.strip()]
    if not listed:
        raise ValueError(f"a sharded Redis URL lists at least one host:port: {url!r}")
    if len(set(listed)) != len(listed):
        raise ValueError(f"a sharded Redis URL lists each shard once: {url!r}")
    tail = parts.path + (f"?{parts.query}" if parts.query else "")
    return [f"{scheme}://{userinfo}{at}{host}{tail}" for host in listed]


def _nobody(publication: Publication) -> int:
    """A shard's one subscriber per channel: the sharded broker delivers itself."""
    return 0


class _Shard(RedisBroker):
    """One shard: a RedisBroker whose deliveries, losses, presence events, control
    messages, policies, counters and identity are its sharded broker's."""

    def __init__(
        self, parent: ShardedBroker, index: int, url: str, settings: Mapping[str, Any]
    ) -> None:
        self._parent = parent
        self.index = index
        super().__init__(url, settings)
        # The same lists: what plugins add to the sharded broker counts here too.
        self.counters = parent.counters
        self.channel_counters = parent.channel_counters

    @property
    def tracker(self) -> Tracker:
        """The sharded broker's: its handlers hear what this shard's scripts decide."""
        return self._parent.tracker

    @tracker.setter
    def tracker(self, value: Tracker) -> None:
        pass  # Broker.__init__ makes one; the parent's serves

    def _new_identity(self) -> None:
        parent = self._parent
        self.uid, self.name, self.started = parent.uid, parent.name, parent.started

    def keeps_history(self, channel: str) -> tuple[int, float] | None:
        return self._parent.keeps_history(channel)

    def presence_mode(self, channel: str) -> PresenceMode | None:
        return self._parent.presence_mode(channel)

    def deliver_locally(self, channel: str, publication: Publication) -> int:
        return self._parent.deliver_locally(channel, publication)

    def report_loss(self, channel: str, missed: int) -> None:
        self._parent.report_loss(channel, missed)

    def report_presence(self, channel: str, event: PresenceEvent) -> None:
        self._parent.report_presence(channel, event)

    def report_control(self, data: bytes) -> None:
        if self.index == 0:  # nothing else publishes control messages on the others
            self._parent.report_control(data)

    def local_channels(self) -> dict[str, int]:
        # The channel map lives on the first shard only (cluster_channels reads it there).
        return self._parent.local_channels() if self.index == 0 else {}

    def describe(self) -> str:
        return f"shard {self.index} ({super().describe()})"


class _ShardedPresence(PresenceManager):
    """Each channel's presence in its shard's store (the tracker's channels too)."""

    def __init__(self, broker: ShardedBroker) -> None:
        self._broker = broker

    def _store(self, channel: str) -> PresenceManager:
        manager = self._broker.shard_of(channel).presence_manager
        assert manager is not None
        return manager

    def local_members(self) -> int:
        return sum(
            shard.presence_manager.local_members()
            for shard in self._broker.shards
            if shard.presence_manager is not None
        )

    async def join(self, channel: str, member: Member, announce: bool) -> None:
        await self._store(channel).join(channel, member, announce)

    async def leave(self, channel: str, client: str, announce: bool) -> None:
        await self._store(channel).leave(channel, client, announce)

    async def members(self, channel: str) -> dict[str, Member]:
        return await self._store(channel).members(channel)

    async def stats(self, channel: str) -> PresenceStats:
        return await self._store(channel).stats(channel)


class ShardedBroker(Broker):
    """``redis+shards://host:6379,host:6380/0``: one RedisBroker per shard, each channel
    on one (see the module docstring for what lives where, and what an outage costs)."""

    history_supported = True
    recovers_atomically = False

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self.shards = [
            _Shard(self, index, shard_url, settings)
            for index, shard_url in enumerate(shard_urls(url))
        ]
        self.presence_manager = _ShardedPresence(self)

    def shard_of(self, channel: str) -> RedisBroker:
        """The shard ``channel`` lives on."""
        return self.shards[shard_index(channel, len(self.shards))]

    @property
    def missed(self) -> int:
        """Publications this process found it missed, on every shard."""
        return sum(shard.missed for shard in getattr(self, "shards", ()))

    @missed.setter
    def missed(self, value: int) -> None:
        pass  # each shard counts its own

    # Life -------------------------------------------------------------------------

    async def start(self) -> None:
        await super().start()
        await asyncio.gather(*(shard.start() for shard in self.shards))

    async def close(self) -> None:
        results = await asyncio.gather(
            *(shard.close() for shard in self.shards), return_exceptions=True
        )
        for shard, result in zip(self.shards, results, strict=True):
            if isinstance(result, Exception):
                log.error("closing %s failed", shard.describe(), exc_info=result)
        await super().close()

    @property
    def up(self) -> bool:
        """While every shard's subscription is up."""
        return all(shard.up for shard in self.shards)

    def problem(self) -> str | None:
        """The shards that have a problem, each named, as a RedisBroker tells its own."""
        problems = [
            f"{shard.describe()}: {problem}"
            for shard in self.shards
            if (problem := shard.problem()) is not None
        ]
        return "; ".join(problems) or None

    def shards_down(self) -> list[str]:
        """The shards whose subscription is down now (described)."""
        return [shard.describe() for shard in self.shards if not shard.up]

    # Subscriptions, per channel on its shard ----------------------------------------

    def _listen_to(self, channel: str) -> None:
        self.shard_of(channel).subscribe(channel, _nobody)

    def _stop_listening(self, channel: str) -> None:
        self.shard_of(channel).unsubscribe(channel, _nobody)

    async def ready(self, channel: str) -> None:
        await super().ready(channel)
        await self.shard_of(channel).ready(channel)

    async def caught_up(self, channel: str, position: StreamPosition) -> None:
        await self.shard_of(channel).caught_up(channel, position)

    # Publishing and history -------------------------------------------------------

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        return (await self.publish_result(channel, data)).receivers

    async def publish_result(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        started = time.perf_counter()
        try:
            return await self.shard_of(channel).publish_result(
                channel, data, idempotency_key=idempotency_key
            )
        finally:
            self.publish_seconds.observe(time.perf_counter() - started)

    async def _read_history(
        self, channel: str, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        return await self.shard_of(channel).history(
            channel, limit=limit, since=since, reverse=reverse
        )

    async def _remove_history(self, channel: str) -> None:
        await self.shard_of(channel).remove_history(channel)

    # On the first shard ------------------------------------------------------------

    async def publish_control(self, data: bytes) -> None:
        await self.shards[0].publish_control(data)

    async def cluster_channels(self) -> dict[str, int]:
        return await self.shards[0].cluster_channels()

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        return await self.shards[0].cluster_nodes()
