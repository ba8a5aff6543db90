"""Stream positions cost nothing until a publication (issue 18, item 3).

A read of a channel nothing was published in answers offset 0 in the empty epoch and
keeps nothing, in ``memory://`` and in Redis; what publications create is bounded in
number, and let go a bounded number at a time.
"""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis

from realtime_broker import MemoryBroker, Publication, StreamPosition, UnrecoverablePosition
from realtime_broker.history import EMPTY_EPOCH, META_TTL, MemoryStreams
from realtime_broker.redis import RedisBroker

from ..conftest import RedisServer
from .test_broker_channels import SETTINGS


def keeps(channel: str) -> tuple[int, float] | None:
    return (10, 60.0) if channel.startswith("h:") else None


async def test_a_memory_read_creates_no_position() -> None:
    broker = MemoryBroker("memory://", {})
    broker.history_policy = keeps
    await broker.start()
    try:
        for n in range(5000):
            result = await broker.history(f"h:{n}", limit=-1)
            assert result.publications == () and result.position == StreamPosition(0, "")
        assert len(broker.streams) == 0
        await broker.publish("h:1", "first")
        numbered = await broker.history("h:1", limit=-1)
        assert numbered.position.offset == 1 and numbered.position.epoch
        assert len(broker.streams) == 1
    finally:
        await broker.close()


def test_a_since_in_an_epoch_of_a_forgotten_stream_is_unrecoverable_and_creates_nothing() -> None:
    streams = MemoryStreams()
    result = streams.read("c", 0.0, limit=-1, since=StreamPosition(3, EMPTY_EPOCH))
    assert result.publications == () and result.position == StreamPosition(0, EMPTY_EPOCH)
    with pytest.raises(UnrecoverablePosition):
        streams.read("c", 0.0, limit=-1, since=StreamPosition(3, "gone"))
    assert len(streams) == 0


def test_streams_are_bounded_the_least_recently_published_forgotten_first() -> None:
    streams = MemoryStreams(max_streams=100)
    first = streams.add("keep", Publication("a"), 10, 60.0, now=0.0)
    for n in range(1000):
        streams.add(f"c{n}", Publication("x"), 10, 60.0, now=0.0)
        if n % 50 == 0:
            streams.add("keep", Publication("again"), 10, 60.0, now=0.0)  # recently used
    assert len(streams) == 100 and streams.evicted == 901
    assert streams.read("keep", 0.0).position == StreamPosition(21, first.epoch)
    assert streams.read("c0", 0.0).position == StreamPosition(0, EMPTY_EPOCH)  # forgotten
    assert streams.read("c999", 0.0).position.offset == 1


def test_pruning_looks_at_a_bounded_number_of_streams_per_call() -> None:
    streams = MemoryStreams()
    for n in range(5000):
        streams.add(f"c{n}", Publication("x"), 10, 5.0, now=0.0)
    late = 5.0 + META_TTL + 1
    calls = 0
    while len(streams):
        assert streams.prune(late, budget=1000) <= 1000
        calls += 1
    # Publications cleared first (5000 looked at), then the positions (5000 more).
    assert calls == 10
    # Nothing is due: one look at the front and it stops.
    streams.add("fresh", Publication("x"), 10, 5.0, now=late)
    assert streams.prune(late) == 2


async def test_a_redis_read_creates_no_key_and_the_first_publication_numbers_from_1(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url, SETTINGS)
    broker.history_policy = keeps
    await broker.start()
    raw = aioredis.Redis.from_url(redis_server.url)
    try:
        before = await raw.dbsize()
        for n in range(200):
            result = await broker.history(f"h:{n}", limit=-1)
            assert result.publications == () and result.position == StreamPosition(0, "")
        assert await raw.dbsize() == before
        assert await raw.exists("realtime:{ch:h:1}:meta") == 0
        await broker.publish("h:1", "first")
        page = await broker.history("h:1", limit=-1)
        assert [p.offset for p in page.publications] == [1]
        assert page.position.offset == 1 and page.position.epoch
        assert await raw.exists("realtime:{ch:h:1}:meta") == 1
    finally:
        await raw.aclose()
        await broker.close()
