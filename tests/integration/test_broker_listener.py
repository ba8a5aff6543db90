"""The Redis broker's listener in this test's own loop, against a real redis-server.

Nothing may stop the listener silently: any error restarts it with a log line, a task
that dies anyway is logged and reported by ``problem()`` (``/-/health``), and checking
numbers against Redis must not hide a genuine loss.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from realtime_broker import DEFAULT_CHANNEL
from realtime_broker.redis import RedisBroker

from ..conftest import RedisServer

SETTINGS = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 65536}


class Doomed(BaseException):
    """Not an Exception: what even a catch-all lets through (the task then dies)."""


class Flaky(RedisBroker):
    """A real Redis broker whose next read from the subscription can be made to fail."""

    def __init__(self, url: str) -> None:
        super().__init__(url, SETTINGS)
        self.failures: list[BaseException] = []
        self.received: list[str | bytes] = []
        self.losses: list[tuple[str, int]] = []
        self.subscribe(DEFAULT_CHANNEL, lambda pub: self.received.append(pub.data) or 1)
        self.on_loss(lambda channel, missed: self.losses.append((channel, missed)))

    async def _read(self, pubsub: PubSub, wait: float | None) -> dict[str, Any] | None:
        if self.failures:
            raise self.failures.pop()
        return await super()._read(pubsub, wait)


@pytest.fixture
async def broker(redis_server: RedisServer) -> AsyncIterator[Flaky]:
    broker = Flaky(redis_server.url)
    await broker.start()
    assert broker.subscribed
    yield broker
    await broker.close()


async def until(condition: Callable[[], object], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


async def test_any_error_restarts_the_listener_with_a_log_line(
    broker: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "realtime.broker")
    await broker.publish(DEFAULT_CHANNEL, "a")
    await until(lambda: broker.received == ["a"])
    broker.failures.append(RuntimeError("a surprise"))  # no RedisError, no OSError
    await broker.publish(DEFAULT_CHANNEL, "b")  # wakes the listener, which then fails
    await until(lambda: broker.subscription_losses == 1 and broker.subscribed)
    await broker.publish(DEFAULT_CHANNEL, "c")
    await until(lambda: broker.received == ["a", "b", "c"])
    assert broker.losses == []  # nothing was published while it was down
    assert broker.problem() is None
    text = caplog.text
    assert "the redis listener failed and restarts (RuntimeError: a surprise)" in text
    assert "Traceback" in text and "resubscribed to redis" in text


async def test_a_listener_that_dies_anyway_is_logged_and_reported_unhealthy(
    broker: Flaky, caplog: pytest.LogCaptureFixture
) -> None:
    broker.failures.append(Doomed())
    await broker.publish(DEFAULT_CHANNEL, "wake up")
    await until(lambda: broker.problem() is not None)
    assert broker.problem() == (
        "the redis subscription task stopped (see the log); restart this process"
    )
    assert "redis listener died" in caplog.text
    assert any(r.levelno == logging.CRITICAL for r in caplog.records)


async def test_a_genuine_loss_is_still_reported_after_resubscribing(
    broker: Flaky, redis_server: RedisServer
) -> None:
    # Another subscriber keeps listening, so Redis numbers (and keeps) what this
    # process misses while its own subscription is cut.
    other = Redis.from_url(redis_server.url, client_name="other-process")
    pubsub = other.pubsub()
    await pubsub.subscribe(broker.key(DEFAULT_CHANNEL))
    try:
        await broker.publish(DEFAULT_CHANNEL, "before")
        await until(lambda: broker.received == ["before"])
        clients = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").splitlines()
        mine = [c.split()[0].removeprefix("id=") for c in clients if " name= " in c]
        assert len(mine) == 1, clients
        redis_server.cli("CLIENT", "KILL", "ID", mine[0])
        for n in range(3):  # while this process reconnects (50 ms at least)
            await broker.publish(DEFAULT_CHANNEL, f"missed {n}")
        await until(lambda: broker.losses)
        assert broker.losses == [(DEFAULT_CHANNEL, 3)]
        await until(lambda: broker.subscribed)
        await broker.publish(DEFAULT_CHANNEL, "after")
        await until(lambda: broker.received[-1:] == ["after"])
        assert broker.received == ["before", "after"]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await other.aclose()


async def test_a_redis_outage_is_no_reason_to_send_clients_elsewhere_and_ends_within_2_s(
    broker: Flaky, redis_server: RedisServer
) -> None:
    # Redis down is down for every process: /-/health stays 200 (the page still loads
    # and catches up), broadcasts answer 503 meanwhile. A process alone in not hearing
    # Redis is reported: see test_broker_acl.py.
    assert broker.problem() is None
    await asyncio.to_thread(redis_server.stop)
    await until(lambda: not broker.subscribed)
    await asyncio.sleep(3)  # long enough for the backoff to reach its cap
    assert broker.problem() is None
    await asyncio.to_thread(redis_server.start)
    back = time.monotonic()
    await until(lambda: broker.subscribed)
    # The cap on the wait between attempts is 1 s; the rest is slack for a busy machine.
    assert time.monotonic() - back < 2.0
    await broker.publish(DEFAULT_CHANNEL, "again")
    await until(lambda: broker.received[-1:] == ["again"])
