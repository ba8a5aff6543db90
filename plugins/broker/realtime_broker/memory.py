"""The default broker: this process only, no extra hop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Mapping
from typing import Any

from .base import (
    MAX_CONTROL_SIZE,
    Broker,
    BrokerUnavailable,
    HistoryResult,
    Publication,
    StreamPosition,
    as_publication,
)
from .history import MemoryStreams
from .presence import MemoryPresenceManager
from .results import PublishResult, ResultCache, check_idempotency_key

#: Seconds between two sweeps of expired history (each looks at a bounded number of
#: streams: see :meth:`.history.MemoryStreams.prune`).
PRUNE_INTERVAL = 1.0


class MemoryBroker(Broker):
    """Delivers on the loop, synchronously: no task and no extra hop per broadcast.

    Subscribing takes effect at once (:meth:`ready` returns at once) and nothing can
    be missed. Publications in channels that keep history are numbered and kept here
    (:class:`.history.MemoryStreams`); the others carry no numbering (``epoch``
    ``""``, ``offset`` 0). History lives as long as the process: a restart starts
    every stream in a new epoch. So do the idempotency keys' results
    (:class:`.results.ResultCache`): one process is the whole cluster here.
    """

    distributed = False
    history_supported = True
    recovers_atomically = True

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self.streams = MemoryStreams()
        self.results = ResultCache()
        self.presence_manager = MemoryPresenceManager(self.report_presence, self.tracker.decided)
        self._pruner: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        await super().start()
        self._prune()

    async def close(self) -> None:
        if self._pruner is not None:
            self._pruner.cancel()
            self._pruner = None
        await super().close()

    def _prune(self) -> None:
        loop = self.loop
        if loop is None:
            return
        now = time.monotonic()
        self.streams.prune(now)
        self.results.prune(now)
        self._pruner = loop.call_later(PRUNE_INTERVAL, self._prune)

    def _deliver(self, channel: str, publication: Publication, key: str = "") -> PublishResult:
        """Number and keep it where the channel keeps history, then deliver: one step
        (timed as the publish: ``publish_sync`` comes here too, not through publish).
        A ``key`` already seen answers its first result and delivers nothing."""
        started = time.perf_counter()
        try:
            now = time.monotonic()
            if key and (seen := self.results.get(channel, key, now)) is not None:
                return seen
            kept = self.keeps_history(channel)
            position = None
            if kept is not None:
                publication = self.streams.add(channel, publication, *kept, now)
                position = StreamPosition(publication.offset, publication.epoch)
            result = PublishResult(self.deliver_locally(channel, publication), position)
            if key:
                self.results.put(channel, key, position, now)
            return result
        finally:
            self.publish_seconds.observe(time.perf_counter() - started)

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        return self._deliver(channel, as_publication(data)).receivers

    async def publish_result(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        check_idempotency_key(idempotency_key)
        return self._deliver(channel, as_publication(data), idempotency_key)

    async def _read_history(
        self, channel: str, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        return self.streams.read(
            channel, time.monotonic(), limit=limit, since=since, reverse=reverse
        )

    async def _remove_history(self, channel: str) -> None:
        self.streams.remove(channel)

    async def publish_control(self, data: bytes) -> None:
        """To this process's control handlers, now: nobody else can send or hear one."""
        if not isinstance(data, bytes):
            raise TypeError("a control message is bytes")
        if len(data) > MAX_CONTROL_SIZE:
            raise ValueError(f"the control message is {len(data)} bytes, over {MAX_CONTROL_SIZE}")
        if self.loop is None:
            raise BrokerUnavailable("the broker is not running")
        self.report_control(data)

    def publish_sync(self, channel: str, data: str | bytes | Publication) -> int:
        """From a worker thread: hand over to the loop in FIFO order, wait for the count.

        A loop too busy to take it within ``handoff_timeout`` is the broker being
        unavailable (503, like the other brokers), not the script being slow; the
        hand-off is then withdrawn, so nothing is delivered after the caller was told so.
        """
        return self._handoff(channel, data, "").receivers

    def publish_result_sync(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        """:meth:`publish_sync` answering the whole result (see :meth:`publish_result`)."""
        check_idempotency_key(idempotency_key)
        return self._handoff(channel, data, idempotency_key)

    def _handoff(self, channel: str, data: str | bytes | Publication, key: str) -> PublishResult:
        loop = self.loop
        if loop is None:
            raise BrokerUnavailable("the broker is not running")
        publication = as_publication(data)
        if self.on_loop_thread():
            return self._deliver(channel, publication, key)
        future: concurrent.futures.Future[PublishResult] = concurrent.futures.Future()

        def handoff() -> None:
            if not future.set_running_or_notify_cancel():
                return  # the script gave up waiting and was told nothing was sent
            try:
                future.set_result(self._deliver(channel, publication, key))
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(handoff)
        except RuntimeError:
            raise BrokerUnavailable("the broker is not running") from None
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise BrokerUnavailable(
                    "the server did not take the message in time; message not sent"
                ) from None
        # The loop took it just now: delivery runs without awaiting anything.
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            raise BrokerUnavailable("the server did not finish delivering in time") from None
