"""What the admin page shows, sampled once a second by one task per process.

One task does all of it, whatever the number of pages open: every 100 ms it measures
the event loop's lag (how late a 100 ms sleep wakes up), and every second it takes a
sample (connections, deliveries per second from the hub's running count, the worst
lag of that second) into a five-minute ring, then wakes every open event stream with
one shared snapshot. The cluster's nodes are asked of the broker only while a page
is watching, in a task of their own, so a slow broker never delays the lag probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from realtime import Host
from realtime_broker import BrokerError, get_broker
from realtime_hub import Disconnect, HubClosed, get_hub

log = logging.getLogger("realtime.admin")

#: Samples kept: five minutes, one a second.
HISTORY = 300
#: Channels listed at most, the busiest first.
MAX_CHANNELS = 1000
#: Longest channel search accepted.
MAX_QUERY = 128
#: Recent disconnects in each snapshot.
MAX_DISCONNECTS = 50
#: Seconds the broker's list of channels is reused for.
CHANNELS_TTL = 1.0
#: How long the broker may take to list nodes or channels.
BROKER_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    """One second of the live chart."""

    time: float
    connections: int
    deliveries_per_second: float
    lag_seconds: float

    def as_list(self) -> list[float]:
        return [
            round(self.time, 3),
            self.connections,
            round(self.deliveries_per_second, 1),
            round(self.lag_seconds, 6),
        ]


def top_channels(
    counts: Mapping[str, int], query: str = "", limit: int = MAX_CHANNELS
) -> list[tuple[str, int]]:
    """The ``limit`` channels with most subscribers whose name contains ``query``."""
    needle = query[:MAX_QUERY].lower()
    found: Iterable[tuple[str, int]] = (
        (name, n) for name, n in counts.items() if not needle or needle in name.lower()
    )
    return heapq.nlargest(limit, found, key=lambda item: (item[1], item[0]))


def disconnect_record(record: Disconnect) -> dict[str, Any]:
    """A hub disconnect record as JSON."""
    return {
        "time": record.time,
        "code": record.code,
        "reason": record.reason,
        "protocol": record.protocol,
    }


class Monitor:
    """The sampler and lag probe of one host; :meth:`snapshot` is what a page is sent."""

    def __init__(
        self,
        host: Host,
        *,
        interval: float = 1.0,
        probe: float = 0.1,
        api_status: Callable[[], tuple[bool, str]] = lambda: (False, ""),
    ) -> None:
        self.host = host
        self.interval = interval
        self.probe = probe
        self.api_status = api_status
        self.samples: deque[Sample] = deque(maxlen=HISTORY)
        #: Streams open now (the event stream route keeps this count).
        self.watchers = 0
        self.nodes: list[dict[str, Any]] = []
        self.nodes_error = ""
        self._nodes_task: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._tick = asyncio.Event()
        self.stopping = asyncio.Event()
        self._last: tuple[float, int] | None = None
        self._lag = 0.0
        self._channels: tuple[float, str, str, Mapping[str, int]] | None = None

    # -- the task ----------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="realtime-admin")

    async def stop(self) -> None:
        """Wake every stream so it ends, then stop sampling."""
        self.stopping.set()
        self.wake()
        for task in (self._task, self._nodes_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._nodes_task = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sample = loop.time() + self.interval
        while True:
            start = loop.time()
            await asyncio.sleep(self.probe)
            self._lag = max(self._lag, loop.time() - start - self.probe)
            if loop.time() >= next_sample:
                next_sample += self.interval
                try:
                    self.sample()
                except Exception:  # never let one bad second end the page's data
                    log.exception("admin: sampling failed")

    def sample(self, now: float | None = None) -> Sample:
        """Take one sample (the task's every second; tests call it directly)."""
        now = time.time() if now is None else now
        connections, deliveries = 0, 0
        with contextlib.suppress(HubClosed):
            stats = get_hub(self.host).stats
            connections, deliveries = stats.connected, stats.deliveries
        rate = 0.0
        if self._last is not None and now > self._last[0]:
            rate = max(0, deliveries - self._last[1]) / (now - self._last[0])
        self._last = (now, deliveries)
        sample = Sample(now, connections, rate, max(0.0, self._lag))
        self._lag = 0.0
        self.samples.append(sample)
        if self.watchers and (self._nodes_task is None or self._nodes_task.done()):
            self._nodes_task = asyncio.get_running_loop().create_task(self._refresh_nodes())
        self.wake()
        return sample

    def wake(self) -> None:
        """Wake every stream waiting for a sample (at each sample, and to stop)."""
        tick, self._tick = self._tick, asyncio.Event()
        tick.set()

    async def next_tick(self, within: float) -> bool:
        """Wait for the next sample; False after ``within`` seconds or when stopping."""
        if self.stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tick.wait(), within)
            return not self.stopping.is_set()
        return False

    async def _refresh_nodes(self) -> None:
        try:
            broker = get_broker(self.host)
            async with asyncio.timeout(BROKER_TIMEOUT):
                self.nodes = [dict(node) for node in await broker.cluster_nodes()]
            self.nodes_error = ""
        except (BrokerError, TimeoutError) as exc:
            self.nodes_error = f"the broker cannot list the nodes: {exc or type(exc).__name__}"

    # -- what a page gets --------------------------------------------------------------

    def local_name(self) -> str:
        with contextlib.suppress(BrokerError):
            return str(get_broker(self.host).name)
        return ""

    def recent_disconnects(self) -> list[dict[str, Any]]:
        """The newest first, at most :data:`MAX_DISCONNECTS`."""
        try:
            records = get_hub(self.host).recent_disconnects
        except HubClosed:
            return []
        newest = list(itertools.islice(reversed(records), MAX_DISCONNECTS))
        return [disconnect_record(record) for record in newest]

    def counts(self) -> dict[str, Any]:
        """Live connections by protocol and ended ones by close code, in this process."""
        try:
            stats = get_hub(self.host).stats
        except HubClosed:
            return {"protocols": {}, "disconnect_codes": {}}
        return {"protocols": dict(stats.protocols), "disconnect_codes": dict(stats.disconnects)}

    def snapshot(self, *, history: bool = False) -> dict[str, Any]:
        """The page's data: this process's latest sample, the nodes, recent disconnects."""
        latest = self.samples[-1] if self.samples else None
        local = self.local_name()
        nodes = []
        for node in self.nodes or self._local_node():
            entry = dict(node)
            if entry.get("name") == local and latest is not None:
                entry["deliveries_per_second"] = round(latest.deliveries_per_second, 1)
            nodes.append(entry)
        available, reason = self.api_status()
        data: dict[str, Any] = {
            "node": local,
            "sample": latest.as_list() if latest else None,
            "nodes": nodes,
            "nodes_error": self.nodes_error,
            "disconnects": self.recent_disconnects(),
            **self.counts(),
            "api": {"available": available, "reason": reason},
        }
        if history:
            data["history"] = [s.as_list() for s in self.samples]
        return data

    async def _all_channels(self) -> tuple[str, str, Mapping[str, int]]:
        try:
            broker = get_broker(self.host)
            async with asyncio.timeout(BROKER_TIMEOUT):
                return "cluster", "", await broker.cluster_channels()
        except (BrokerError, TimeoutError) as exc:
            error = f"the broker cannot list channels: {exc or 'timeout'}"
            with contextlib.suppress(HubClosed):
                return "local", error, get_hub(self.host).channel_counts()
            return "local", error, {}

    def _local_node(self) -> list[dict[str, Any]]:
        with contextlib.suppress(BrokerError):
            return [get_broker(self.host).local_node()]
        return []

    async def channels(self, query: str) -> dict[str, Any]:
        """Channels and their subscribers, cluster-wide if the broker can tell, else here.

        The broker's answer is kept for :data:`CHANNELS_TTL`: every open page asks every
        few seconds and on each search, and one question a second is enough.
        """
        now = time.monotonic()
        if self._channels is None or now - self._channels[0] >= CHANNELS_TTL:
            self._channels = (now, *await self._all_channels())
        _, where, error, counts = self._channels
        listed = top_channels(counts, query)
        return {
            "where": where,
            "error": error,
            "total": len(counts),
            "channels": [[name, n] for name, n in listed],
        }
