"""Channels on the Redis broker: a process listens to a channel only while it has a
local subscriber, and what it missed is told per channel.

Several brokers in this test's process share one real redis-server, as several
processes would (a broker is a per-host object); Redis itself says what each one is
subscribed to.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis

from realtime_broker import BrokerUnavailable, MemoryBroker, Publication
from realtime_broker.redis import MAGIC, META_TTL, RedisBroker

from ..conftest import RedisServer

SETTINGS = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 1024}
#: Names as clients choose them: namespaces, user lists, braces, spaces, non-ASCII.
ODD_NAMES = ["chat:room1", "dm#42,43", "{x}", "a}:meta", "with space", "é", "n" * 255]


class Listener:
    """A channel's subscriber in one process: keeps what it gets."""

    def __init__(self) -> None:
        self.got: list[Publication] = []

    def __call__(self, publication: Publication) -> int:
        self.got.append(publication)
        return 1

    @property
    def data(self) -> list[str | bytes]:
        return [publication.data for publication in self.got]


class Process(RedisBroker):
    """One process's broker, recording the losses it reports."""

    def __init__(self, url: str) -> None:
        super().__init__(url, SETTINGS)
        self.losses: list[tuple[str, int]] = []
        self.on_loss(lambda channel, missed: self.losses.append((channel, missed)))


Start = Callable[[], Awaitable[Process]]


@pytest.fixture
async def processes(redis_server: RedisServer) -> AsyncIterator[Start]:
    started: list[Process] = []

    async def start() -> Process:
        process = Process(redis_server.url)
        await process.start()
        assert process.subscribed
        started.append(process)
        return process

    yield start
    for process in started:
        await process.close()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url, client_name="test")
    yield client
    await client.aclose()


async def until(condition: Callable[[], object], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.01)


async def listed(redis: Redis) -> set[str]:
    """The channels' Pub/Sub channels Redis has subscribers for (PUBSUB CHANNELS), the
    control channel aside: every process listens to it, whatever its clients want."""
    names = {n.decode() if isinstance(n, bytes) else n for n in await redis.pubsub_channels()}
    return names - {"realtime:control"}


async def until_listed(redis: Redis, expected: set[str]) -> None:
    async with asyncio.timeout(5):
        while (names := await listed(redis)) != expected:
            await asyncio.sleep(0.01)
    assert names == expected


async def test_each_process_receives_only_the_channels_its_clients_are_in(
    processes: Start, redis: Redis
) -> None:
    one, two = await processes(), await processes()
    assert await listed(redis) == set()  # nobody listens to anything yet
    room, dm = Listener(), Listener()
    one.subscribe("chat:room1", room)
    two.subscribe("dm#42,43", dm)
    await one.ready("chat:room1")
    await two.ready("dm#42,43")
    assert await listed(redis) == {"realtime:channel:chat:room1", "realtime:channel:dm#42,43"}
    for publisher in (one, two):
        assert await publisher.publish("chat:room1", "to the room") == 0  # no counters here
        await publisher.publish("dm#42,43", "to 42 and 43")
    await until(lambda: len(room.got) == 2 and len(dm.got) == 2)
    await asyncio.sleep(0.1)  # nothing else arrives
    assert room.data == ["to the room", "to the room"]
    assert dm.data == ["to 42 and 43", "to 42 and 43"]
    assert one.channels() == {"chat:room1": 1} and two.channels() == {"dm#42,43": 1}
    assert one.losses == two.losses == []


async def test_redis_lists_a_channel_only_while_a_process_has_a_local_subscriber(
    processes: Start, redis: Redis
) -> None:
    process = await processes()
    first, second = Listener(), Listener()
    key = "realtime:channel:news"
    process.subscribe("news", first)
    await process.ready("news")
    assert await listed(redis) == {key}
    process.unsubscribe("news", first)
    await until_listed(redis, set())
    process.subscribe("news", first)  # again
    await process.ready("news")
    assert await listed(redis) == {key}
    process.subscribe("news", second)  # a second local subscriber: one SUBSCRIBE still
    assert process.channels() == {"news": 2}
    assert await redis.pubsub_numsub(key) == [(key.encode(), 1)]
    process.unsubscribe("news", first)  # one leaves: still subscribed
    await process.publish("news", "for the second")
    await until(lambda: second.data == ["for the second"])
    assert await listed(redis) == {key}
    assert first.data == []  # nothing after it left
    process.unsubscribe("news", second)  # the last leaves
    await until_listed(redis, set())
    assert process.channels() == {}
    process.unsubscribe("news", second)  # what is not subscribed is ignored
    with pytest.raises(ValueError, match="not subscribed to channel 'news'"):
        await process.ready("news")
    assert process.losses == []


async def test_unsubscribed_channels_deliver_nothing_more_even_if_already_on_the_way(
    processes: Start,
) -> None:
    listening, publisher = await processes(), await processes()
    keeper, leaving = Listener(), Listener()
    publisher.subscribe("c", keeper)  # so that Redis goes on publishing to someone
    listening.subscribe("c", leaving)
    await publisher.ready("c")
    await listening.ready("c")
    await publisher.publish("c", "before")
    await until(lambda: leaving.data == ["before"])
    sent = [publisher.publish("c", f"m{n}") for n in range(50)]
    publishing = asyncio.gather(*sent)
    await asyncio.sleep(0)  # some are on their way to the listening process...
    listening.unsubscribe("c", leaving)  # ...which stops listening now
    got = len(leaving.got)
    await publishing
    await until(lambda: len(keeper.got) == 51)
    await asyncio.sleep(0.1)
    assert len(leaving.got) == got
    assert listening.losses == []


@pytest.mark.parametrize("name", ODD_NAMES)
async def test_any_channel_name_clients_choose_works_and_stays_apart(
    processes: Start, name: str
) -> None:
    process = await processes()
    mine, plain = Listener(), Listener()
    process.subscribe(name, mine)
    process.subscribe("x", plain)  # a name another one might be confused with
    await process.ready(name)
    await process.ready("x")
    await process.publish(name, "for you")
    await process.publish("x", "for x")
    await until(lambda: mine.data == ["for you"] and plain.data == ["for x"])
    assert mine.got[0].offset == 1 and plain.got[0].offset == 1  # each numbered on its own


async def test_a_subscriber_gets_its_own_publication_right_after_ready(
    processes: Start,
) -> None:
    process, other = await processes(), await processes()
    for n in range(30):  # each a new channel: SUBSCRIBE, confirmation, lookup each time
        channel = f"room:{n}"
        listener = Listener()
        process.subscribe(channel, listener)
        await process.ready(channel)
        # At once after ready, from this process and from another one.
        assert await process.publish(channel, "mine") == 0
        assert await other.publish(channel, "theirs") == 0
        await until(lambda listener=listener: listener.data == ["mine", "theirs"])  # type: ignore[misc]
    assert process.losses == []


async def test_a_process_that_listens_again_later_reports_no_loss_for_the_meantime(
    processes: Start, redis: Redis
) -> None:
    process, publisher = await processes(), await processes()
    keeper, listener = Listener(), Listener()
    publisher.subscribe("c", keeper)  # publications go on being numbered and heard
    await publisher.ready("c")
    process.subscribe("c", listener)
    await process.ready("c")
    await publisher.publish("c", "heard")
    await until(lambda: listener.data == ["heard"])
    # Redis told to unsubscribe, then publications nobody here listens to.
    process.unsubscribe("c", listener)
    await until(lambda: "c" not in process._live)
    for n in range(5):
        await publisher.publish("c", f"meanwhile {n}")
    # Given up and wanted again before Redis hears of it (one SUBSCRIBE, confirmed again).
    process.subscribe("c", listener)
    process.unsubscribe("c", listener)
    process.subscribe("c", listener)
    await process.ready("c")
    await publisher.publish("c", "after")
    await until(lambda: listener.data == ["heard", "after"])
    # Given up and wanted again with publications in between, both on their way to Redis.
    process.unsubscribe("c", listener)
    publishing = asyncio.gather(*(publisher.publish("c", f"racing {n}") for n in range(5)))
    process.subscribe("c", listener)
    await publishing
    await process.ready("c")
    await publisher.publish("c", "last")
    await until(lambda: listener.data[-1:] == ["last"])
    assert set(listener.data[2:-1]) <= {f"racing {n}" for n in range(5)}
    await asyncio.sleep(0.1)
    assert process.losses == []
    assert process.missed == 0


async def test_churning_subscriptions_never_report_a_loss_and_miss_nothing_once_ready(
    processes: Start,
) -> None:
    process, publisher = await processes(), await processes()
    keeper = Listener()
    publisher.subscribe("busy", keeper)
    await publisher.ready("busy")
    stop = asyncio.Event()

    async def publish_steadily() -> None:
        n = 0
        while not stop.is_set():
            await publisher.publish("busy", f"m{n}")
            n += 1

    publishing = asyncio.create_task(publish_steadily())
    try:
        rng = random.Random(7)
        for _ in range(60):
            listener = Listener()
            process.subscribe("busy", listener)
            if rng.random() < 0.5:
                await process.ready("busy")
                await asyncio.sleep(rng.uniform(0, 0.01))
                # Once ready, every publication arrives, in Redis's order.
                offsets = [publication.offset for publication in listener.got]
                assert offsets == list(range(offsets[0], offsets[0] + len(offsets))) or not offsets
            elif rng.random() < 0.5:
                await asyncio.sleep(0)
            process.unsubscribe("busy", listener)
    finally:
        stop.set()
        await publishing
    listener = Listener()
    process.subscribe("busy", listener)
    await process.ready("busy")
    await publisher.publish("busy", "end")
    await until(lambda: listener.data[-1:] == ["end"])
    assert process.losses == []


async def cut_subscription(redis_server: RedisServer) -> None:
    """Kill the one unnamed subscription to channels (the process's; the test's clients
    have names, and a publisher listening to nothing holds the control channel only)."""
    clients = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").splitlines()
    unnamed = [
        c.split()[0].removeprefix("id=") for c in clients if " name= " in c and " sub=1 " not in c
    ]
    assert len(unnamed) == 1, clients
    redis_server.cli("CLIENT", "KILL", "ID", unnamed[0])


async def test_a_loss_on_one_channel_is_reported_for_that_channel_only(
    processes: Start, redis_server: RedisServer
) -> None:
    process = await processes()
    publisher = await processes()  # listens to nothing: no subscription of its own
    a, b = Listener(), Listener()
    process.subscribe("a", a)
    process.subscribe("b", b)
    await process.ready("a")
    await process.ready("b")
    # Someone else listens to "a" (another process), so Redis numbers and keeps publishing.
    keeper = Redis.from_url(redis_server.url, client_name="other-process")
    pubsub = keeper.pubsub()
    await pubsub.subscribe("realtime:channel:a")
    try:
        await publisher.publish("a", "a before")
        await publisher.publish("b", "b before")
        await until(lambda: a.data == ["a before"] and b.data == ["b before"])
        await cut_subscription(redis_server)
        for n in range(3):  # while the process reconnects (50 ms at least)
            assert await publisher.publish("a", f"missed {n}") == 0
        await until(lambda: process.losses)
        assert process.losses == [("a", 3)]  # "b" lost nothing: its clients are left alone
        await process.ready("a")
        await process.ready("b")
        await publisher.publish("a", "a after")
        await publisher.publish("b", "b after")
        await until(lambda: a.data[-1:] == ["a after"] and b.data[-1:] == ["b after"])
        assert a.data == ["a before", "a after"]
        assert b.data == ["b before", "b after"]
        assert process.losses == [("a", 3)]
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await keeper.aclose()


async def test_a_publication_nobody_heard_is_a_loss_only_for_a_process_that_was_listening(
    processes: Start, redis_server: RedisServer, redis: Redis
) -> None:
    # The publisher does not listen to the channel, so 0 receivers is a success (nobody
    # listens right now) and Redis keeps the number: a process whose subscription was
    # down finds the gap. One that listens is told 503 and leaves no gap (see
    # test_cluster.py: "Redis down gives 503").
    process, publisher = await processes(), await processes()
    listener = Listener()
    process.subscribe("c", listener)
    await process.ready("c")
    await publisher.publish("c", "first")
    await until(lambda: listener.data == ["first"])
    await cut_subscription(redis_server)
    assert await publisher.publish("c", "into the void") == 0
    await until(lambda: process.losses)
    assert process.losses == [("c", 1)]
    await process.ready("c")
    # A new channel nobody ever listened to: numbered, and whoever comes later starts there.
    assert await publisher.publish("new", "unheard") == 0
    # Its numbering does not stay in Redis for ever (channels come and go).
    assert 0 < await redis.ttl("realtime:{ch:new}:meta") <= META_TTL
    late = Listener()
    process.subscribe("new", late)
    await process.ready("new")
    await publisher.publish("new", "heard")
    await until(lambda: late.data == ["heard"])
    assert late.got[0].offset == 2
    assert process.losses == [("c", 1)]


@pytest.mark.parametrize(
    "publication",
    [
        Publication('{"text": "hé", "n": [1, 2]}', json=True, info='{"user":"42","client":"c"}'),
        Publication("plain text", info='{"user":"7"}'),
        Publication(b"\x00\xffbinary", info=""),
        Publication("null", json=True),
    ],
)
async def test_json_and_the_publishers_info_travel_through_every_broker(
    processes: Start, publication: Publication
) -> None:
    memory = MemoryBroker("memory://", {})
    await memory.start()
    for broker in (memory, await processes()):
        listener = Listener()
        broker.subscribe("c", listener)
        await broker.ready("c")
        await broker.publish("c", publication)
        await until(lambda listener=listener: listener.got)  # type: ignore[misc]
        got = listener.got[0]
        assert (got.data, got.json, got.info) == (
            publication.data,
            publication.json,
            publication.info,
        )
        assert type(got.data) is type(publication.data)
        if broker is memory:
            assert (got.epoch, got.offset) == ("", 0)
        else:
            assert len(got.epoch) == 8 and got.offset == 1
    await memory.close()


async def test_the_size_limits_still_apply_on_receipt(
    processes: Start, redis_server: RedisServer, redis: Redis
) -> None:
    process = await processes()
    listener = Listener()
    process.subscribe("c", listener)
    await process.ready("c")
    await process.publish("c", "first")
    await until(lambda: listener.data == ["first"])
    epoch, seq = await redis.hmget("realtime:{ch:c}:meta", ["epoch", "seq"])
    assert isinstance(epoch, bytes) and isinstance(seq, bytes)
    head = MAGIC + epoch + b" %d " % (int(seq) + 1)  # the next number: only size tells
    channel = "realtime:channel:c"
    await redis.publish(channel, head + b"t" + b"x" * 1025)  # --max-message-size is 1024 here
    await redis.publish(channel, head + b"T16385 " + b"i" * 16385 + b"x")  # info over 16 KiB
    await redis.publish(channel, head + b"T2 {}" + b"x" * 1025)  # the info does not hide it
    await redis.publish(channel, head + b"t" + b"x" * (20 * 1024 * 1024))
    with pytest.raises(ValueError, match="over the 1024-byte limit"):
        await process.publish("c", "x" * 1025)  # refused before it goes out
    await process.publish("c", Publication("x" * 1024, info="i" * 16384))  # at both limits
    await until(lambda: len(listener.got) == 2)
    assert listener.got[1] == Publication("x" * 1024, False, "i" * 16384, epoch.decode(), 2)
    assert process.tally.counts["oversized"] == 4
    assert process.losses == []


async def test_the_memory_broker_subscribes_and_unsubscribes_at_once() -> None:
    broker = MemoryBroker("memory://", {})
    first, second = Listener(), Listener()
    calls: list[str] = []

    def leaves_during_delivery(publication: Publication) -> int:
        calls.append("leaving")
        broker.unsubscribe("c", leaves_during_delivery)
        broker.unsubscribe("c", first)
        return 1

    broker.subscribe("c", leaves_during_delivery, count=lambda: 5)
    broker.subscribe("c", first)
    broker.subscribe("c", second, count=lambda: 2)
    await broker.start()
    await broker.ready("c")
    assert broker.channels() == {"c": 3}
    assert sum(counter() for counter in broker.counters) == 7
    # Those who leave during a delivery still get it: the delivery has its own list.
    assert await broker.publish("c", "one") == 3
    assert broker.channels() == {"c": 1}
    assert broker.counters and sum(counter() for counter in broker.counters) == 2
    assert await broker.publish("c", Publication("two", info="{}")) == 1
    assert calls == ["leaving"] and first.data == ["one"] and second.data == ["one", "two"]
    assert second.got[1].info == "{}"
    broker.unsubscribe("c", second)
    assert broker.channels() == {} and broker.counters == []
    assert await broker.publish("c", "nobody") == 0
    with pytest.raises(ValueError, match="not subscribed"):
        await broker.ready("c")
    await broker.close()


async def test_ready_fails_in_time_when_redis_cannot_confirm(
    processes: Start, redis_server: RedisServer
) -> None:
    process = await processes()
    await asyncio.to_thread(redis_server.stop)
    await until(lambda: not process.subscribed)
    process.subscribe("c", Listener())
    with pytest.raises(BrokerUnavailable, match="did not confirm the subscription to 'c' in time"):
        await process.ready("c")
    await asyncio.to_thread(redis_server.start)
    await until(lambda: process.subscribed)
    await process.ready("c")  # subscribed with everything else wanted at reconnection
