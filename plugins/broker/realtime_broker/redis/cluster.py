"""The cluster's view in Redis: each process's client count, channel map and info.

Each process reports to ``realtime:nodes`` (its client count and when) every
heartbeat while it is subscribed: how ``broadcast()`` answers "how many clients"
cluster-wide. It also keeps ``realtime:{node:NODE}:channels`` (its subscribers per
channel) and ``realtime:{node:NODE}:info`` (its ``uid``, ``name``, ``started``,
``channels`` and ``subs``) for the server API's ``channels`` and ``info``; both expire
``NODE_KEYS_TTL`` after the last write, and a process deletes them when it closes.

The publish script reads ``realtime:nodes`` too, on one Redis. Under Redis Cluster
that is another slot than the channel's, so the script does not: each heartbeat reads
the hash instead, and a publication's count is the others' reports as last read
(:mod:`.clustered`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from ..base import Broker
from ..errors import BrokerUnavailable
from . import scripts
from .connection import UNREACHABLE
from .envelope import parse_counter
from .names import Names

#: A process that has not reported for this long is left out of client counts.
NODE_TTL = 5.0
#: Seconds between two reports.
HEARTBEAT = 1.0
#: How long a process's channel map and info outlive its last write, seconds. Only
#: GC: readers already skip processes whose client count is older than NODE_TTL.
NODE_KEYS_TTL = 10
#: An unchanged map is only renewed (EXPIRE), once this many seconds passed.
NODE_KEYS_RENEW = NODE_KEYS_TTL / 2
#: Most channel map fields written per heartbeat: a larger change (the first write of
#: a huge map) goes out over several heartbeats, so Redis is never held for long.
MAP_FIELDS_PER_BEAT = 10_000


class ClusterMaps:
    """One process's entries in the cluster's view, and the reading of everyone's."""

    def __init__(self, broker: Broker, names: Names, timeout: float) -> None:
        self.broker = broker
        self.names = names
        self.timeout = timeout
        #: This process's field in ``realtime:nodes`` (set by the broker's start).
        self.node = ""
        self.client: Redis | None = None
        self._script: Any = None
        #: What this process's channel map in Redis holds, as far as it knows (``None``:
        #: unknown, so the next heartbeat starts it afresh)...
        self.published: dict[str, int] | None = None
        #: ...and when it (or its TTL) was last written, monotonic seconds.
        self.published_at = 0.0
        #: Counts the times the map was forgotten because Redis may have lost it.
        self.map_resets = 0
        #: Set to have the heartbeat run now rather than at its next beat.
        self.beat_now: asyncio.Event | None = None

    def bind(self, client: Redis, node: str) -> None:
        self.client = client
        self.node = node
        self._script = client.register_script(scripts.script("channels"))
        self.published = None
        self.beat_now = asyncio.Event()

    def forget_map(self) -> None:
        """Redis may have lost this process's map (it came back): write it afresh, now."""
        self.published = None
        self.map_resets += 1
        self.wake()

    def wake(self) -> None:
        if self.beat_now is not None:
            self.beat_now.set()

    def count(self, nodes: Mapping[bytes, bytes]) -> int:
        """This process's clients now, plus every other live process's last report."""
        total = sum(counter() for counter in self.broker.counters)
        return total + sum(self.others(nodes).values())

    def others(self, nodes: Mapping[bytes, bytes]) -> dict[str, int]:
        """Every other process that reported within NODE_TTL, with its client count."""
        now = time.time()
        me = self.node.encode()
        live: dict[str, int] = {}
        for node, value in nodes.items():
            if node == me:
                continue
            with contextlib.suppress(ValueError):
                count, seen = value.split()
                if now - float(seen) < NODE_TTL:
                    live[node.decode(errors="replace")] = int(count)
        return live

    async def report_count(self, count: int) -> None:
        """This process's client count, now (and, now and then, forget the long gone)."""
        assert self.client is not None
        await self.client.hset(self.names.nodes, self.node, f"{count} {time.time():.3f}")

    async def channels(self) -> dict[str, int]:
        """This process's channels now, plus every other live process's last map.

        Two round trips (the nodes hash, then every live map in one pipeline); the cost
        grows with the number of (process, channel) pairs in the cluster.
        """
        total = self.broker.local_channels()
        async with self._asking("the cluster's channels"):
            others = await self._read_nodes()
            maps = await self._read_each(self.names.channels_key(node) for node in others)
        for channels in maps:
            for name, value in channels.items():
                n = parse_counter(value)
                if n:
                    channel = name.decode(errors="replace")
                    total[channel] = total.get(channel, 0) + n
        return total

    async def nodes(self) -> list[dict[str, Any]]:
        """This process now, and every other live process as it last reported.

        A process that reports its client count but no info (an older version, or
        one that just started) is listed under its node name with zeros.
        """
        async with self._asking("the cluster's nodes"):
            others = await self._read_nodes()
            infos = await self._read_each(self.names.info_key(node) for node in others)
        now = time.time()
        result = [self.broker.local_node()]
        for (node, clients), info in zip(others.items(), infos, strict=True):
            fields = {key.decode(errors="replace"): value for key, value in info.items()}
            try:
                started = float(fields.get("started", b""))
            except ValueError:
                started = now
            result.append(
                {
                    "uid": _text(fields.get("uid", node)),
                    "name": _text(fields.get("name", node)),
                    "num_clients": clients,
                    "num_channels": parse_counter(fields.get("channels")) or 0,
                    "num_subs": parse_counter(fields.get("subs")) or 0,
                    "uptime": max(0, int(now - started)),
                }
            )
        return result

    @contextlib.asynccontextmanager
    async def _asking(self, what: str) -> AsyncIterator[None]:
        """Within the broker's timeout, or :class:`BrokerUnavailable` (503)."""
        if self.client is None:
            raise BrokerUnavailable("the broker is not running")
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.broker.describe()} is unavailable ({type(exc).__name__}: "
                f"{exc}); cannot tell {what}"
            ) from exc

    async def _read_nodes(self) -> dict[str, int]:
        assert self.client is not None
        nodes: Any = await self.client.hgetall(self.names.nodes)  # bytes: no decoding
        return self.others(nodes)

    async def _read_each(self, keys: Iterable[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each of ``keys``, in one round trip."""
        assert self.client is not None
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        replies: list[dict[bytes, bytes]] = await pipe.execute()
        return replies

    async def report_channels(self) -> None:
        """Bring this process's channel map and info in Redis up to date (heartbeat).

        Sends nothing while the map is unchanged, but an EXPIRE-only renewal every
        NODE_KEYS_RENEW seconds. A change goes out as one EVALSHA holding only what
        changed (at most MAP_FIELDS_PER_BEAT fields; the rest next heartbeat), so an
        idle process with 10,000 channels costs Redis nothing per second.
        """
        assert self._script is not None
        base, resets = self.published, self.map_resets
        current = self.broker.local_channels()
        if base is None:
            changed, removed = list(current.items()), []
        else:
            changed = [(c, n) for c, n in current.items() if base.get(c) != n]
            removed = [c for c in base if c not in current]
            due = time.monotonic() - self.published_at >= NODE_KEYS_RENEW
            if not changed and not removed and not due:
                return
        changed = changed[:MAP_FIELDS_PER_BEAT]
        removed = removed[: MAP_FIELDS_PER_BEAT - len(changed)]
        target = dict(base or {})
        target.update(changed)
        for channel in removed:
            del target[channel]
        broker = self.broker
        info: dict[str, str | int] = {
            "uid": broker.uid,
            "name": broker.name,
            "started": f"{broker.started:.3f}",
            "channels": len(target),
            "subs": sum(target.values()),
        }
        items: list[str | int] = [f for pair in info.items() for f in pair]
        items += [f for pair in changed for f in pair]
        head = [NODE_KEYS_TTL, int(base is None), int(bool(base)), 2 * len(info), 2 * len(changed)]
        keys = [self.names.channels_key(self.node), self.names.info_key(self.node)]
        try:
            async with asyncio.timeout(self.timeout):
                written = await self._script(keys=keys, args=[*head, *items, *removed])
        except BaseException:
            self.published = None  # what Redis holds now is anyone's guess
            raise
        if self.map_resets != resets:
            return  # forgotten meanwhile (Redis came back): written afresh next time
        if not written:
            self.published = None  # Redis lost it (restarted, evicted): afresh next time
            self.wake()
            return
        self.published = target
        self.published_at = time.monotonic()

    async def maybe_forget_stale_nodes(self) -> None:
        """Now and then (one heartbeat in 20), drop processes long gone from the nodes hash."""
        if random.random() < 0.05:
            await self._forget_stale_nodes()

    async def _forget_stale_nodes(self) -> None:
        assert self.client is not None
        nodes = await self.client.hgetall(self.names.nodes)
        now = time.time()
        stale = []
        for node, value in nodes.items():
            try:
                seen = float(value.split()[1])
            except (ValueError, IndexError):
                seen = 0.0
            if now - seen > NODE_TTL * 12:
                stale.append(node)
        if stale:
            await self.client.hdel(self.names.nodes, *stale)

    async def remove(self) -> None:
        """On close: this process's entries go now, not a TTL later."""
        if self.client is None:
            return
        with contextlib.suppress(*UNREACHABLE):
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=False)
                pipe.hdel(self.names.nodes, self.node)
                pipe.delete(self.names.channels_key(self.node), self.names.info_key(self.node))
                await pipe.execute()
        self.published = None


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
