"""Channel history in the memory broker: numbering, retention, reading, positions."""

from __future__ import annotations

import asyncio

import pytest

from realtime_broker import (
    Broker,
    HistoryUnavailable,
    MemoryBroker,
    Publication,
    StreamPosition,
    UnrecoverablePosition,
)
from realtime_broker.history import META_TTL, MemoryStreams
from realtime_broker.redis import RedisBroker

from ..conftest import RedisServer, eventually
from .test_broker_channels import SETTINGS


def offsets(result: object) -> list[int]:
    return [p.offset for p in result.publications]  # type: ignore[attr-defined]


def filled(count: int, size: int = 100, ttl: float = 60.0) -> MemoryStreams:
    streams = MemoryStreams()
    for i in range(count):
        streams.add("c", Publication(f"m{i + 1}"), size, ttl, now=0.0)
    return streams


def test_publications_are_numbered_from_1_within_one_epoch() -> None:
    streams = MemoryStreams()
    a = streams.add("c", Publication("a"), 10, 60.0, now=0.0)
    b = streams.add("c", Publication("b"), 10, 60.0, now=1.0)
    other = streams.add("d", Publication("x"), 10, 60.0, now=1.0)
    assert (a.offset, b.offset, other.offset) == (1, 2, 1)
    assert a.epoch == b.epoch and a.epoch and other.epoch != a.epoch


def test_reading_from_the_start_after_a_position_and_in_reverse() -> None:
    streams = filled(5)
    epoch = streams.read("c", 0.0).position.epoch
    assert streams.read("c", 0.0).position == StreamPosition(5, epoch)
    assert offsets(streams.read("c", 0.0, limit=-1)) == [1, 2, 3, 4, 5]
    assert offsets(streams.read("c", 0.0, limit=2)) == [1, 2]
    assert offsets(streams.read("c", 0.0, limit=-1, since=StreamPosition(3, epoch))) == [4, 5]
    assert offsets(streams.read("c", 0.0, limit=-1, since=StreamPosition(5, epoch))) == []
    assert offsets(streams.read("c", 0.0, limit=2, reverse=True)) == [5, 4]
    back = streams.read("c", 0.0, limit=-1, since=StreamPosition(3, epoch), reverse=True)
    assert offsets(back) == [2, 1]
    assert streams.read("c", 0.0, limit=0).publications == ()


def test_the_size_bound_trims_the_oldest_and_reading_starts_at_what_is_left() -> None:
    streams = filled(10, size=3)
    epoch = streams.read("c", 0.0).position.epoch
    assert offsets(streams.read("c", 0.0, limit=-1)) == [8, 9, 10]
    assert offsets(streams.read("c", 0.0, limit=-1, since=StreamPosition(7, epoch))) == [8, 9, 10]
    # Below the window: what is left, so a recovering client sees the hole (8 != 6 + 1).
    assert offsets(streams.read("c", 0.0, limit=-1, since=StreamPosition(5, epoch))) == [8, 9, 10]


def test_a_position_at_or_past_the_top_gives_nothing() -> None:
    streams = filled(4)
    epoch = streams.read("c", 0.0).position.epoch
    assert streams.read("c", 0.0, limit=-1, since=StreamPosition(4, epoch)).publications == ()
    assert streams.read("c", 0.0, limit=-1, since=StreamPosition(9, epoch)).publications == ()


def test_another_epoch_is_unrecoverable_and_an_empty_one_is_not_checked() -> None:
    streams = filled(3)
    with pytest.raises(UnrecoverablePosition):
        streams.read("c", 0.0, limit=-1, since=StreamPosition(1, "other"))
    assert offsets(streams.read("c", 0.0, limit=-1, since=StreamPosition(1, ""))) == [2, 3]


def test_publications_expire_together_ttl_after_the_last_and_the_position_stays() -> None:
    streams = MemoryStreams()
    streams.add("c", Publication("a"), 10, 5.0, now=0.0)
    streams.add("c", Publication("b"), 10, 5.0, now=4.0)
    assert offsets(streams.read("c", 8.0, limit=-1)) == [1, 2]
    epoch = streams.read("c", 8.0).position.epoch
    after = streams.read("c", 9.5, limit=-1)
    assert after.publications == () and after.position == StreamPosition(2, epoch)
    gone = streams.read("c", 9.5, limit=-1, since=StreamPosition(0, epoch))
    assert gone.publications == () and gone.position.offset == 2  # 0 != 2: not recovered
    assert offsets(streams.read("c", 9.5, limit=-1, since=StreamPosition(2, epoch))) == []
    assert streams.add("c", Publication("c"), 10, 5.0, now=10.0).offset == 3


def test_a_forgotten_stream_starts_again_in_a_new_epoch() -> None:
    streams = MemoryStreams()
    first = streams.add("c", Publication("a"), 10, 5.0, now=0.0)
    streams.prune(5.0 + META_TTL + 1)
    assert len(streams) == 0
    again = streams.add("c", Publication("b"), 10, 5.0, now=5.0 + META_TTL + 2)
    assert again.offset == 1 and again.epoch != first.epoch
    with pytest.raises(UnrecoverablePosition):
        streams.read("c", 0.0, limit=-1, since=StreamPosition(1, first.epoch))
    with pytest.raises(UnrecoverablePosition):
        streams.read("c", 0.0, limit=0, since=StreamPosition(1, first.epoch))


async def test_the_memory_broker_numbers_only_channels_that_keep_history() -> None:
    broker = MemoryBroker("memory://", {})
    broker.history_policy = lambda channel: (10, 60.0) if channel.startswith("h:") else None
    await broker.start()
    got: list[Publication] = []

    def deliver(publication: Publication) -> int:
        got.append(publication)
        return 1

    broker.subscribe("h:room", deliver)
    broker.subscribe("plain", deliver)
    await broker.publish("h:room", "one")
    await broker.publish("plain", "two")
    assert [(p.data, p.offset) for p in got] == [("one", 1), ("two", 0)]
    assert got[0].epoch and not got[1].epoch
    history = await broker.history("h:room", limit=-1)
    assert [p.data for p in history.publications] == ["one"]
    with pytest.raises(HistoryUnavailable):
        await broker.history("plain", limit=-1)
    await broker.remove_history("h:room")
    assert (await broker.history("h:room", limit=-1)).publications == ()
    assert (await broker.history("h:room")).position.offset == 1
    await broker.close()


# -- redis:// : the same numbering for history and live delivery ---------------------


def history_policy(channel: str) -> tuple[int, float] | None:
    return (3, 60.0) if channel.startswith("h:") else None


async def test_redis_keeps_history_in_the_numbering_live_delivery_uses(
    redis_server: RedisServer,
) -> None:
    one, two = RedisBroker(redis_server.url, SETTINGS), RedisBroker(redis_server.url, SETTINGS)
    for broker in (one, two):
        broker.history_policy = history_policy
        await broker.start()
    try:
        got: list[Publication] = []

        def deliver(publication: Publication) -> int:
            got.append(publication)
            return 1

        two.subscribe("h:room", deliver)
        await two.ready("h:room")
        empty = await one.history("h:room", limit=-1)  # creates nothing: the empty epoch
        assert empty.publications == () and empty.position == StreamPosition(0, "")
        for n in range(5):
            await one.publish("h:room", Publication(f'{{"n":{n}}}', json=True, info='{"user":"u"}'))
        await one.publish("plain", "not kept")
        async with asyncio.timeout(5):
            while len(got) < 5:
                await asyncio.sleep(0.01)
        epoch = got[0].epoch  # the first publication's, which offset 0 in "" leads to
        assert epoch and [(p.offset, p.epoch) for p in got] == [(n, epoch) for n in range(1, 6)]
        page = await two.history("h:room", limit=-1)  # another process reads the same
        assert [p.offset for p in page.publications] == [3, 4, 5]  # history_size 3
        assert page.publications[0] == got[2]  # data, json, info, epoch, offset alike
        assert page.position == StreamPosition(5, epoch)
        since = StreamPosition(3, epoch)
        assert [
            p.offset for p in (await one.history("h:room", limit=-1, since=since)).publications
        ] == [4, 5]
        back = await one.history("h:room", limit=1, since=StreamPosition(5, epoch), reverse=True)
        assert [p.offset for p in back.publications] == [4]
        assert (await one.history("h:room", limit=0)).publications == ()
        with pytest.raises(UnrecoverablePosition):
            await one.history("h:room", limit=-1, since=StreamPosition(1, "other"))
        with pytest.raises(HistoryUnavailable):
            await one.history("plain", limit=-1)
        await one.remove_history("h:room")
        cleared = await two.history("h:room", limit=-1)
        assert cleared.publications == () and cleared.position == StreamPosition(5, epoch)
        await one.publish("h:room", "after")
        assert [p.offset for p in (await one.history("h:room", limit=-1)).publications] == [6]
    finally:
        await one.close()
        await two.close()


async def test_redis_history_expires_ttl_after_the_last_publication(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url, SETTINGS)
    broker.history_policy = lambda channel: (10, 0.3)
    await broker.start()
    try:
        await broker.publish("h:room", "soon gone")
        assert len((await broker.history("h:room", limit=-1)).publications) == 1

        async def expired() -> bool:
            return not (await broker.history("h:room", limit=-1)).publications

        await eventually(expired, message="the publication outlived its ttl")
        page = await broker.history("h:room", limit=-1)
        assert page.publications == () and page.position.offset == 1  # the position stays
    finally:
        await broker.close()


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_metadata_travels_live_and_in_history_on_every_broker(
    kind: str, redis_server: RedisServer
) -> None:
    """A publication's event, id, skip and attrs reach another process's subscriber
    and come back from history as they were published."""
    brokers: tuple[Broker, ...] = (
        (MemoryBroker("memory://", {}),)
        if kind == "memory"
        else (RedisBroker(redis_server.url, SETTINGS), RedisBroker(redis_server.url, SETTINGS))
    )
    one, two = brokers[0], brokers[-1]
    for broker in brokers:
        broker.history_policy = history_policy
        await broker.start()
    try:
        got: list[Publication] = []

        def deliver(publication: Publication) -> int:
            got.append(publication)
            return 1

        two.subscribe("h:meta", deliver)
        await two.ready("h:meta")
        sent = Publication(
            "hello", event="my-event", id="urn:uuid:42", skip="123.456",
            attrs={"private": "1", "retry": "5000"},
        )  # fmt: skip
        await one.publish("h:meta", sent)
        await eventually(lambda: len(got) == 1)
        page = await two.history("h:meta", limit=-1)
        for publication in (got[0], page.publications[0]):
            assert (publication.data, publication.event, publication.id) == (
                "hello", "my-event", "urn:uuid:42",
            )  # fmt: skip
            assert publication.skip == "123.456"
            assert dict(publication.attrs or {}) == {"private": "1", "retry": "5000"}
    finally:
        for broker in brokers:
            await broker.close()
