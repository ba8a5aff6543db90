"""Publish results and idempotency keys in both brokers (issue 21, item 4).

``Broker.publish_result`` answers where a publication stands in its channel's stream,
and publishes once per idempotency key within five minutes: with ``memory://`` in the
process, with ``redis://`` across every process sharing Redis (two brokers here, as
two hosts), subscribers getting it once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis

from realtime_broker import (
    MAX_IDEMPOTENCY_KEY,
    Broker,
    MemoryBroker,
    Publication,
    PublishResult,
    StreamPosition,
)
from realtime_broker.redis import RedisBroker
from realtime_broker.results import ResultCache

from ..conftest import RedisServer
from .test_broker_channels import SETTINGS

Make = Callable[[], Broker]


def keeps(channel: str) -> tuple[int, float] | None:
    return (10, 60.0) if channel.startswith("h:") else None


@pytest.fixture(params=["memory", "redis"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """Brokers of one kind: each made and started by ``await started(make())``."""
    brokers: list[Broker] = []
    if request.param == "memory":

        def new() -> Broker:
            broker = MemoryBroker("memory://", {})
            brokers.append(broker)
            return broker

    else:
        server: RedisServer = request.getfixturevalue("redis_server")

        def new() -> Broker:
            broker = RedisBroker(server.url, SETTINGS)
            brokers.append(broker)
            return broker

    yield new
    for broker in brokers:
        await broker.close()


async def started(broker: Broker) -> Broker:
    broker.history_policy = keeps
    await broker.start()
    return broker


async def listening(broker: Broker, channel: str) -> list[Publication]:
    got: list[Publication] = []
    broker.subscribe(channel, lambda pub: got.append(pub) or 1)
    await broker.ready(channel)
    return got


async def test_a_result_carries_the_offset_and_epoch_where_the_channel_keeps_history(
    make: Make,
) -> None:
    broker = await started(make())
    got = await listening(broker, "h:a")
    first = await broker.publish_result("h:a", "one")
    second = await broker.publish_result("h:a", Publication('"two"', json=True))
    assert first.position is not None and second.position is not None
    assert (first.position.offset, second.position.offset) == (1, 2)
    assert first.position.epoch == second.position.epoch != ""
    assert not first.suppressed
    if isinstance(broker, MemoryBroker):  # Redis counts what each process reports
        assert first.receivers == 1
    page = await broker.history("h:a", limit=-1)
    assert page.position == second.position
    plain = await broker.publish_result("plain", "x")
    assert plain.position is None and not plain.suppressed  # no history: no position
    await asyncio.sleep(0.05)
    assert [p.data for p in got] == ["one", '"two"']


async def test_the_same_key_publishes_once_and_answers_the_first_result(make: Make) -> None:
    broker = await started(make())
    got = await listening(broker, "h:k")
    first = await broker.publish_result("h:k", "once", idempotency_key="order-17")
    again = await broker.publish_result("h:k", "twice", idempotency_key="order-17")
    assert again == PublishResult(0, first.position, suppressed=True)
    # Keys are per channel, and another key publishes.
    other = await broker.publish_result("h:other", "x", idempotency_key="order-17")
    assert not other.suppressed
    new = await broker.publish_result("h:k", "new", idempotency_key="order-18")
    assert new.position == StreamPosition(2, first.position.epoch)  # type: ignore[union-attr]
    # A channel without history remembers the key too (with no position).
    await broker.publish_result("plain", "p", idempotency_key="k")
    assert (await broker.publish_result("plain", "p", idempotency_key="k")).suppressed
    await asyncio.sleep(0.05)
    assert [p.data for p in got] == ["once", "new"]
    assert [p.data for p in (await broker.history("h:k", limit=-1)).publications] == [
        "once",
        "new",
    ]


async def test_keys_are_bounded_in_size(make: Make) -> None:
    broker = await started(make())
    with pytest.raises(ValueError, match="over"):
        await broker.publish_result("h:a", "x", idempotency_key="k" * (MAX_IDEMPOTENCY_KEY + 1))
    with pytest.raises(ValueError, match="over"):
        await broker.publish_result("h:a", "x", idempotency_key="é" * MAX_IDEMPOTENCY_KEY)
    assert (await broker.history("h:a", limit=-1)).publications == ()  # nothing sent


async def test_a_script_thread_gets_the_result_too(make: Make) -> None:
    broker = await started(make())
    results: list[PublishResult] = []

    def script() -> None:
        for _ in range(2):
            results.append(broker.publish_result_sync("h:s", "x", idempotency_key="k"))

    thread = threading.Thread(target=script)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.01)
    assert results[0].position is not None and results[0].position.offset == 1
    assert results[1] == PublishResult(0, results[0].position, suppressed=True)


async def test_two_redis_processes_publish_a_key_once(redis_server: RedisServer) -> None:
    """Two hosts sharing Redis, each given the same retried request at once."""
    brokers = [RedisBroker(redis_server.url, SETTINGS) for _ in range(2)]
    try:
        for broker in brokers:
            await started(broker)
        got = await listening(brokers[0], "h:x")
        results = await asyncio.gather(
            *(
                broker.publish_result("h:x", f"from {n}", idempotency_key="retry")
                for n in range(10)
                for broker in brokers
            )
        )
        assert sum(not result.suppressed for result in results) == 1
        assert {result.position for result in results} == {results[0].position}
        await asyncio.sleep(0.1)
        assert len(got) == 1
        # The result lives in Redis for the window, under the channel's hash tag.
        raw = aioredis.Redis.from_url(redis_server.url)
        try:
            keys = await raw.keys("realtime:{ch:h:x}:result:*")
            assert len(keys) == 1
            assert 290_000 < await raw.pttl(keys[0]) <= 300_000
        finally:
            await raw.aclose()
    finally:
        for broker in brokers:
            await broker.close()


async def test_a_key_cannot_name_another_channels_keys(redis_server: RedisServer) -> None:
    """A key chosen to end another channel's numbering name is a digest in Redis."""
    broker = await started(RedisBroker(redis_server.url, SETTINGS))
    try:
        await broker.publish_result("h:a}:result:x", "victim")
        before = await broker.history("h:a}:result:x", limit=-1)
        await broker.publish_result("h:a", "x", idempotency_key="x}:meta")
        assert await broker.history("h:a}:result:x", limit=-1) == before
    finally:
        await broker.close()


def test_the_memory_cache_is_bounded_and_expires_oldest_first() -> None:
    cache = ResultCache(max_results=100, ttl=300.0)
    for n in range(250):
        cache.put("c", f"k{n}", None, now=float(n))
    assert len(cache) == 100 and cache.evicted == 150
    assert cache.get("c", "k0", now=250.0) is None  # forgotten to stay bounded
    assert cache.get("c", "k249", now=250.0) == PublishResult(0, None, suppressed=True)
    assert cache.get("c", "k249", now=249.0 + 300.0) is None  # expired
    assert len(cache) == 0


async def test_idempotent_publishes_need_no_command_beyond_the_recommended_acl(
    redis_server: RedisServer,
) -> None:
    from .test_broker_acl import REALTIME_USER

    redis_server.cli("ACL", "SETUSER", *REALTIME_USER.split())
    url = f"redis://realtime:s3cret@127.0.0.1:{redis_server.port}/0"
    broker = await started(RedisBroker(url, SETTINGS))
    try:
        await listening(broker, "h:acl")
        first = await broker.publish_result("h:acl", "x", idempotency_key="k")
        again = await broker.publish_result("h:acl", "x", idempotency_key="k")
        assert first.position is not None and again == PublishResult(0, first.position, True)
    finally:
        await broker.close()
