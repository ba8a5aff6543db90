"""Redis Cluster as the broker (``redis+cluster://``, ``rediss+cluster://``).

The same broker as on one Redis (:class:`.broker.RedisBroker`), with three changes:

- Every script runs in one slot: a channel's numbering, history, presence and its
  shard channel share the ``{ch:NAME}`` hash tag; control messages and their proofs
  share ``{control}`` (:class:`.names.ClusterNames`). Commands go through redis-py's
  ``RedisCluster``, which follows the slots' owners.
- Publications, joins, leaves and control messages go out with ``SPUBLISH`` (sharded
  pub/sub): only the shard owning the channel's slot carries them, to the hosts
  subscribed there. The subscription is one link per shard (:mod:`.link`), each a
  Pub/Sub connection to that shard's primary with ``SSUBSCRIBE`` for its channels,
  numbered and checked as on one Redis. A link that fails (its primary died)
  reconnects on its own to whoever serves its slots then (the promoted replica),
  finds what its channels missed, and tells their subscribers; the other links
  never notice.
- The nodes hash (client counts) lives in its own slot, so the publish script cannot
  read it: a publication's count is the other hosts' reports as this host last read
  them (each heartbeat), which is what it was anyway: as last reported.

Shards are taken at start and followed: a failover changes only a shard's address; a
slot moved to another shard (resharding) is noticed when its shard unsubscribes its
channels, or when a link finds its slots served by several nodes, and the links are
made again from the cluster's new shards (see :meth:`RedisClusterBroker._listen`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
import time
from collections.abc import Mapping
from itertools import count
from typing import Any, ClassVar

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import parse_url as parse_node_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from .broker import RedisBroker
from .connection import POOL_SIZE, UNREACHABLE, make_client
from .link import Link, Regroup
from .listener import BACKOFF_MAX, BACKOFF_MIN
from .names import ClusterNames, Names
from .sequence import Mark
from .slots import (
    SLOTS,
    ClusterURL,
    SlotRange,
    first_in,
    owner,
    parse_slots,
    parse_url,
    shards,
    slot_of,
)
from .subscriptions import _close

log = logging.getLogger("realtime.broker")


def publisher_options(url: ClusterURL) -> dict[str, Any]:
    """The URL's credentials, TLS and other options (``?ssl_ca_certs=...``), as
    ``RedisCluster`` takes them: what one node's ``redis://`` URL would give a client."""
    options: dict[str, Any] = dict(parse_node_url(url.node_url(*url.nodes[0])))
    for name in ("host", "port", "db", "connection_class"):
        options.pop(name, None)
    accepted = inspect.signature(RedisCluster.__init__).parameters
    unknown = sorted(name for name in options if name not in accepted)
    if unknown:
        raise ValueError(f"a cluster URL cannot set {', '.join(unknown)}")
    options["ssl"] = url.scheme == "rediss"
    return options


class RedisClusterBroker(RedisBroker):
    """``redis+cluster://[user:password@]host:port[,host:port...]`` (or
    ``rediss+cluster://``): any of the cluster's nodes, the rest are found."""

    NAMES: ClassVar[type[Names]] = ClusterNames
    SUBSCRIBE, UNSUBSCRIBE = "SSUBSCRIBE", "SUNSUBSCRIBE"
    MESSAGE_TYPES = frozenset({"smessage"})
    MARKS: ClassVar[Mapping[str, Mark]] = {
        "ssubscribe": Mark.SUBSCRIBED,
        "sunsubscribe": Mark.UNSUBSCRIBED,
    }

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        self.cluster_url = parse_url(url)  # first: a wrong URL fails before anything
        publisher_options(self.cluster_url)
        super().__init__(url, settings)
        #: The link serving each slot (set by start, from the cluster's shards).
        self._by_slot: list[Link] = []
        #: Every node address seen, where the slots' owners are asked.
        self._known: list[tuple[str, int]] = list(self.cluster_url.nodes)
        #: The nodes hash as this process last read it (see the module's doc).
        self._nodes_seen: dict[bytes, bytes] = {}

    def _make_publisher(self) -> Any:
        url = self.cluster_url
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in url.nodes],
            **publisher_options(url),
            max_connections=POOL_SIZE,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            # A few quick retries, where redis-py refreshes the slots' owners: a
            # failover is followed within the broker's timeout, which bounds each call.
            retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 3),
        )

    async def _prepare(self) -> None:
        """Learn the shards (CLUSTER SLOTS) and make a link for each."""
        try:
            async with asyncio.timeout(self.timeout * 3):
                while True:
                    try:
                        ranges = await self._slots()
                        partition = shards(ranges)
                        break
                    except (*UNREACHABLE, ValueError) as exc:
                        log.warning("redis cluster at %s not ready: %s", self.describe(), exc)
                        await asyncio.sleep(0.2)
        except TimeoutError:
            raise RuntimeError(
                f"redis cluster at {self.describe()} did not tell its slots in time: every "
                "slot must be served when the broker starts"
            ) from None
        self._group(ranges, partition)

    def _group(self, ranges: list[SlotRange], partition: list[frozenset[int]]) -> None:
        """A link per shard of ``partition``: the one there is already for the same slots
        (it goes on undisturbed), else a new one."""
        control = slot_of(self.names.control)
        old = {link.slots: link for link in self._links}
        links = []
        for slots in partition:
            link = old.get(slots)
            if link is None:
                first, last = min(slots), max(slots)
                link = Link(f"shard {first}-{last}", control=control in slots, slots=slots)
                link.extra["node"] = owner(ranges, first)
                beacons = (self.names.beacon(i) for i in count())  # type: ignore[attr-defined]
                link.extra["beacon"] = first_in(slots, beacons)
            links.append(link)
        by_slot: list[Link | None] = [None] * SLOTS
        for link in links:
            for slot in link.slots:
                by_slot[slot] = link
        self._links = links
        self._by_slot = [link for link in by_slot if link is not None]
        assert len(self._by_slot) == SLOTS  # shards() saw every slot served
        for channel, event in self._ready.items():
            if self._link_of(channel).slots not in old:
                event.clear()  # on a new link: ready once it has looked the channel up
        if self._subscribed is not None and not all(link.up for link in links):
            self._subscribed.clear()
            self._down_since = time.monotonic()

    async def _listen(self) -> None:
        """A task per link; when the slots moved between shards (a link's slots are no
        longer one node's), the links are made again from the cluster's new shards:
        those whose slots did not change go on undisturbed, the others start afresh,
        finding what their channels missed meanwhile and telling it."""
        tasks: dict[Link, asyncio.Task[None]] = {}
        try:
            while True:
                for link in self._links:
                    if link not in tasks:
                        tasks[link] = asyncio.get_running_loop().create_task(
                            self._listen_on(link), name=f"redis listener ({link.name})"
                        )
                done, _ = await asyncio.wait(tasks.values(), return_when=asyncio.FIRST_COMPLETED)
                for link, task in list(tasks.items()):
                    if task in done:
                        del tasks[link]
                        error = task.exception()
                        if not isinstance(error, Regroup):
                            raise error or RuntimeError(f"the listener of {link.name} ended")
                log.warning("redis cluster's slots moved between shards: following them")
                await self._regroup()
                for link in [link for link in tasks if link not in self._links]:
                    task = tasks.pop(link)
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        finally:
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def _regroup(self) -> None:
        """The cluster's shards now, and a link for each (retried until it tells)."""
        delay = BACKOFF_MIN
        while True:
            try:
                ranges = await self._slots()
                self._group(ranges, shards(ranges))
                return
            except (*UNREACHABLE, ValueError) as exc:
                self.tally.add("regroup", f"cannot learn the redis cluster's shards yet ({exc})")
            await asyncio.sleep(random.uniform(BACKOFF_MIN, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _slots(self) -> list[SlotRange]:
        """Who serves which slot now, asked of the first known node that answers."""
        error: BaseException | None = None
        for host, port in list(self._known):
            client = make_client(self.cluster_url.node_url(host, port), self.timeout, 0)
            try:
                async with asyncio.timeout(self.timeout):
                    reply = await client.execute_command("CLUSTER SLOTS")  # type: ignore[no-untyped-call]
                    ranges = parse_slots(reply)
            except UNREACHABLE as exc:
                error = exc
                continue
            finally:
                await client.aclose()
            for r in ranges:
                if (r.host, r.port) not in self._known:
                    self._known.append((r.host, r.port))
            return ranges
        raise ConnectionError(f"no cluster node answered ({error})")

    # The subscription: one link per shard ------------------------------------------

    def _link_of(self, channel: str) -> Link:
        return self._by_slot[slot_of(self.names.key(channel))]

    async def _connect(self, link: Link) -> tuple[Redis, PubSub]:
        """A connection to whoever serves ``link``'s slots now (after a failover, the
        replica that took over); ``reachable`` says whether it could be made."""
        try:
            connected = await self._connect_to_shard(link)
        except BaseException:
            link.extra["reachable"] = False
            raise
        link.extra["reachable"] = True
        return connected

    async def _connect_to_shard(self, link: Link) -> tuple[Redis, PubSub]:
        ranges = await self._slots()
        owners = {owner(ranges, slot) for slot in link.slots}
        if len(owners - {None}) > 1:
            raise Regroup(f"the slots of {link.name} are served by several nodes now")
        where = owner(ranges, min(link.slots))
        if where is None or None in owners:
            raise ConnectionError(f"no primary serves {link.name} now")
        if where != link.extra.get("node"):
            log.warning("redis cluster %s is served by %s:%d now", link.name, *where)
            link.extra["node"] = where
        client = make_client(self.cluster_url.node_url(*where), self.timeout, 0)
        pubsub = client.pubsub()
        try:
            await pubsub.connect()  # type: ignore[no-untyped-call]
        except BaseException:
            await _close(client, pubsub)
            raise
        link.commands = client
        return client, pubsub

    def _groups(self, names: list[str]) -> list[list[str]]:
        """One SSUBSCRIBE per slot: a command's shard channels must share one."""
        by_slot: dict[int, list[str]] = {}
        for name in names:
            by_slot.setdefault(slot_of(name), []).append(name)
        return list(by_slot.values())

    def _always(self, link: Link) -> list[str]:
        names = super()._always(link)
        beacon = link.extra.get("beacon")
        return [*names, beacon] if beacon else names

    # Health and counts ---------------------------------------------------------------

    def problem(self) -> str | None:
        """Unhealthy while a shard's subscription is down here though its shard can be
        reached: then this process alone misses that shard's broadcasts. A shard that
        cannot be reached (its primary died, no replica took over yet) is down for
        every host alike: sending new clients elsewhere would not help them, and
        broadcasts on its channels answer 503 meanwhile."""
        listener = self._listener
        if listener is None or listener.done():
            return super().problem()
        now = time.monotonic()
        local = [link for link in self._links if not link.up and link.extra.get("reachable", True)]
        if not local:
            return None
        worst = max(now - link.down_since for link in local)
        names = ", ".join(link.name for link in local)
        return f"not subscribed to the redis cluster's {names} for {worst:.1f} s"

    def _hearing(self) -> bool:
        # Counted while any shard is heard: one shard failing over for a few seconds
        # must not take this process's clients out of every count.
        return any(link.up for link in self._links)

    def _nodes_reported(self, flat: list[bytes]) -> Mapping[bytes, bytes]:
        return self._nodes_seen

    async def _reported(self) -> None:
        assert self._publisher is not None
        self._nodes_seen = await self._publisher.hgetall(self.names.nodes)

    async def close(self) -> None:
        await super().close()
        self._by_slot = []
