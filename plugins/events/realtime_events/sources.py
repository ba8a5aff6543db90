"""Where events come from: the hub's clients and channels, and the broker's tracker.

``connect``, ``disconnect``, ``subscribe`` and ``unsubscribe`` happen on the process
holding the client, so that process emits them. ``user_online``/``user_offline`` and
``channel_occupied``/``channel_vacated`` are about the whole cluster: this process
holds a user for each of its identified clients, and a channel while it has local
subscribers, in the broker's tracker, and emits only the first holds and last
releases the store says this process's own calls decided (a killed host's, once they
expire, by whichever process sweeps them away).

Tracker calls go through a few ordered queues (a client's hold before its release),
bounded: past the bound a call is dropped and counted, never waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import zlib
from typing import TYPE_CHECKING

from realtime import LogThrottle, Telemetry
from realtime_broker import Broker
from realtime_hub import Client, Hub

if TYPE_CHECKING:
    from .plugin import Events

log = logging.getLogger("realtime.events")

USERS = "users"
CHANNELS = "channels"
#: The member a process holds a channel as (one hold per process and channel).
THIS_PROCESS = "process"
#: Ordered queues of tracker calls, and how many calls each may hold.
LANES = 4
LANE_SIZE = 100_000


class Sources:
    """Watches the hub (as a hub watcher) and the tracker, and emits."""

    def __init__(self, events: Events, hub: Hub, broker: Broker, telemetry: Telemetry) -> None:
        self.events = events
        self.hub = hub
        self.broker = broker
        self.tracker = broker.tracker
        wanted = events.wanted
        #: Whether users and channels are held in the tracker: only if someone listens.
        self.users = bool(wanted & {"user_online", "user_offline"}) and self.tracker.supported
        self.channels = (
            bool(wanted & {"channel_occupied", "channel_vacated"}) and self.tracker.supported
        )
        self._lanes: list[asyncio.Queue[tuple[bool, str, str, str]]] = [
            asyncio.Queue(LANE_SIZE) for _ in range(LANES)
        ]
        self._tasks: list[asyncio.Task[None]] = []
        self._dropped = telemetry.counter(
            "realtime_event_tracking_dropped_total",
            "Holds and releases not sent to the broker's tracker (its queue was full)",
        )
        self._throttle = LogThrottle()

    def start(self, sweep_every: float) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._lane(lane)) for lane in self._lanes]
        if self.users or self.channels:
            self.tracker.on_change(self._changed)
            self._tasks.append(loop.create_task(self._sweep(sweep_every)))
        self.hub.watch(self)

    async def settle(self, grace: float) -> None:
        """Stopping: wait (up to ``grace``) until every hold and release is sent."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                for lane in self._lanes:
                    await lane.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # The hub's clients and channels (a hub watcher) ---------------------------------

    def connected(self, client: Client) -> None:
        self.events.emit("connect", client=client.name, user=client.user,
                         protocol=client.protocol)  # fmt: skip
        if client.user and self.users:
            self._track(True, USERS, client.user, client.name)

    def disconnected(self, client: Client, code: int, reason: str) -> None:
        self.events.emit("disconnect", client=client.name, user=client.user,
                         protocol=client.protocol, code=code, reason=reason)  # fmt: skip
        if client.user and self.users:
            self._track(False, USERS, client.user, client.name)

    def subscribed(self, client: Client, channel: str) -> None:
        self.events.emit("subscribe", client=client.name, user=client.user, channel=channel)

    def unsubscribed(self, client: Client, channel: str) -> None:
        self.events.emit("unsubscribe", client=client.name, user=client.user, channel=channel)

    def first(self, channel: str) -> None:
        if self.channels:
            self._track(True, CHANNELS, channel, THIS_PROCESS)

    def last(self, channel: str) -> None:
        if self.channels:
            self._track(False, CHANNELS, channel, THIS_PROCESS)

    # The tracker ----------------------------------------------------------------

    def _track(self, hold: bool, kind: str, key: str, member: str) -> None:
        if not self._tasks:
            return
        lane = self._lanes[zlib.crc32(f"{kind}/{key}/{member}".encode()) % LANES]
        try:
            lane.put_nowait((hold, kind, key, member))
        except asyncio.QueueFull:
            self._dropped.inc()
            self._throttle.warn(log, "full", "event tracking is behind: a %s dropped",
                                "hold" if hold else "release")  # fmt: skip

    async def _lane(self, lane: asyncio.Queue[tuple[bool, str, str, str]]) -> None:
        while True:
            hold, kind, key, member = await lane.get()
            try:
                if hold:
                    await self.tracker.hold(kind, key, member)
                else:
                    await self.tracker.release(kind, key, member)
            except Exception:
                held = self._throttle.allow("call")
                if held is not None:
                    log.exception("event tracking failed%s", self._throttle.suffix(held))
            finally:
                lane.task_done()

    def _changed(self, kind: str, key: str, held: bool) -> None:
        if kind == USERS:
            self.events.emit("user_online" if held else "user_offline", user=key)
        elif kind == CHANNELS:
            self.events.emit("channel_occupied" if held else "channel_vacated", channel=key)

    async def _sweep(self, every: float) -> None:
        """Prune expired holds (a killed host's), so their releases are heard."""
        while True:
            await asyncio.sleep(every)
            for kind in [k for k, on in ((USERS, self.users), (CHANNELS, self.channels)) if on]:
                try:
                    await self.tracker.sweep(kind)
                except Exception as exc:
                    self._throttle.warn(log, "sweep", "sweeping %s failed: %s", kind, exc)
