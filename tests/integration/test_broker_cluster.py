"""The cluster-wide view behind the server API's ``channels`` and ``info``.

Several Redis brokers in this test's process share one real redis-server, as several
processes would; each reports its subscribers per channel in its heartbeat, and any of
them can sum every live one's. Redis's own ``INFO commandstats`` says what that costs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime_broker import BrokerUnavailable, MemoryBroker
from realtime_broker.redis import MAP_FIELDS_PER_BEAT, NODE_KEYS_TTL, RedisBroker
from realtime_broker.redis import cluster as cluster_module

from ..conftest import RedisServer

PREFIX = "rt-test"
SETTINGS = {"broker_timeout": 1.0, "broker_prefix": PREFIX, "max_message_size": 1024}
NODE_FIELDS = {"uid", "name", "num_clients", "num_channels", "num_subs", "uptime"}


def node_key(node: str, kind: str) -> str:
    """A process's ``channels`` or ``info`` key."""
    return f"{PREFIX}:{{node:{node}}}:{kind}"


class Process(RedisBroker):
    """One process's broker, with a hub-like channel map and client count to report."""

    def __init__(self, url: str) -> None:
        super().__init__(url, SETTINGS)
        self.map: dict[str, int] = {}
        self.clients = 0
        self.add_channel_counter(lambda: self.map)
        self.add_counter(lambda: self.clients)


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


async def until(condition: Callable[[], Awaitable[bool]], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not await condition():
            await asyncio.sleep(0.02)


async def until_seen(
    process: Process, expected: dict[str, int], limit: float = 5.0
) -> dict[str, int]:
    """Wait until ``process`` sees ``expected`` cluster-wide (heartbeats are 1 s apart)."""

    async def seen() -> bool:
        return await process.cluster_channels() == expected

    await until(seen, limit)
    return expected


async def calls(redis: Redis) -> dict[str, int]:
    stats: dict[str, Any] = await redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


async def test_memory_broker_reports_this_process() -> None:
    broker = MemoryBroker("memory://", {})
    hub = {"a": 2, "b": 1, "gone": 0}
    broker.add_channel_counter(lambda: hub)
    broker.add_channel_counter(lambda: {"a": 1, "c": 4})
    broker.add_counter(lambda: 5)
    before = broker.uid
    await broker.start()
    try:
        assert broker.uid != before  # a new id per start: workers are forked after __init__
        assert await broker.cluster_channels() == {"a": 3, "b": 1, "c": 4}
        (node,) = await broker.cluster_nodes()
        assert set(node) == NODE_FIELDS
        assert node["uid"] == broker.uid and node["name"].endswith(f":{os.getpid()}")
        assert (node["num_clients"], node["num_channels"], node["num_subs"]) == (5, 3, 8)
        assert node["uptime"] == 0
    finally:
        await broker.close()


async def test_channels_of_every_live_process_are_merged_with_summed_counts(
    processes: Start, redis: Redis
) -> None:
    one, two = await processes(), await processes()
    assert one.uid != two.uid and one.node != two.node
    one.map, one.clients = {"chat": 2, "news": 1}, 3
    two.map, two.clients = {"chat": 5, "dm#42,43": 1, "é {x}": 1}, 7
    expected = {"chat": 7, "news": 1, "dm#42,43": 1, "é {x}": 1}
    await until_seen(one, expected)
    await until_seen(two, expected)
    nodes = {node["uid"]: node for node in await one.cluster_nodes()}
    assert set(nodes) == {one.uid, two.uid}
    assert nodes[two.uid] == {
        "uid": two.uid,
        "name": two.name,
        "num_clients": 7,
        "num_channels": 3,
        "num_subs": 7,
        "uptime": nodes[two.uid]["uptime"],
    }
    assert set(nodes[one.uid]) == NODE_FIELDS
    assert (nodes[one.uid]["num_channels"], nodes[one.uid]["num_subs"]) == (2, 3)
    # Every key stays under the prefix, and expires.
    keys = {key.decode() for key in await redis.keys("*")}
    assert keys == {
        f"{PREFIX}:nodes",
        *(node_key(p.node, kind) for p in (one, two) for kind in ("channels", "info")),
    }
    for key in keys - {f"{PREFIX}:nodes"}:
        assert 0 < await redis.ttl(key) <= NODE_KEYS_TTL
    # Changes follow: a channel left, another joined, a count changed.
    two.map = {"chat": 1, "new": 2}
    await until_seen(one, {"chat": 3, "news": 1, "new": 2})


async def test_a_closed_process_removes_its_entries_at_once(processes: Start, redis: Redis) -> None:
    one, two = await processes(), await processes()
    one.map, two.map = {"a": 1}, {"a": 1, "b": 2}
    await until_seen(one, {"a": 2, "b": 2})
    node = two.node
    await two.close()
    assert await one.cluster_channels() == {"a": 1}  # without waiting for anything
    assert [n["uid"] for n in await one.cluster_nodes()] == [one.uid]
    assert not await redis.exists(node_key(node, "channels"), node_key(node, "info"))


async def test_a_process_that_stops_reporting_is_left_out_and_its_keys_expire(
    processes: Start, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "NODE_TTL", 1.5)
    one, two = await processes(), await processes()
    one.map, two.map = {"a": 1}, {"b": 1}
    await until_seen(one, {"a": 1, "b": 1})
    for task in list(two._tasks):  # killed: no more heartbeats, no clean close
        task.cancel()
    await until_seen(one, {"a": 1}, limit=3.0)
    assert len(await one.cluster_nodes()) == 1
    assert 0 < await redis.ttl(node_key(two.node, "channels")) <= NODE_KEYS_TTL


async def test_unchanged_maps_are_not_written_again_and_changes_cost_one_evalsha(
    processes: Start, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Renewals (every NODE_KEYS_RENEW s, EXPIRE only) are the next test's.
    monkeypatch.setattr(cluster_module, "NODE_KEYS_RENEW", 60.0)
    other = await processes()
    process = await processes()
    big = {f"room:{i}": 1 + i % 3 for i in range(25_000)}
    await redis.config_resetstat()
    process.map = dict(big)
    key = node_key(process.node, "channels")

    async def written() -> bool:
        return bool(await redis.hlen(key) == len(big))

    started = time.monotonic()
    await until(written, limit=10.0)
    first = await calls(redis)
    beats = -(-len(big) // MAP_FIELDS_PER_BEAT)  # 3: never more than 10,000 fields a beat
    assert time.monotonic() - started > beats - 1.5
    assert first["evalsha"] == beats  # one per beat
    # 1,000 fields per HSET inside the script, plus the info each time, plus the
    # nodes hash once per heartbeat per process.
    heartbeats = first["hset"] - 25 - beats
    assert 0 < heartbeats <= 2 * (beats + 2)
    assert "hdel" not in first and "del" not in first  # added to, not started afresh

    await redis.config_resetstat()
    await asyncio.sleep(3.0)  # 3 heartbeats each, within the renewal period
    idle = await calls(redis)
    assert "evalsha" not in idle and "expire" not in idle and "hdel" not in idle
    assert idle["hset"] <= 2 * 4  # the two processes' client counts, nothing else

    await redis.config_resetstat()
    process.map["room:1"] = 9
    del process.map["room:2"]
    expected = dict(big, **{"room:1": 9})
    del expected["room:2"]
    await until_seen(other, expected)
    change = await calls(redis)
    assert change["evalsha"] == 1
    assert change["hdel"] == 1 and change["hset"] <= 2 + 2 * 2  # map + info + heartbeats
    assert await redis.hlen(key) == len(big) - 1


async def test_an_unchanged_map_is_renewed_with_expire_only(
    processes: Start, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster_module, "NODE_KEYS_RENEW", 1.0)
    process = await processes()
    process.map = {f"c{i}": 1 for i in range(5000)}

    async def written() -> bool:
        return bool(await redis.hlen(node_key(process.node, "channels")) == 5000)

    await until(written)
    await redis.config_resetstat()
    await asyncio.sleep(2.5)
    renewals = await calls(redis)
    assert 1 <= renewals["evalsha"] <= 3
    # Per renewal: the info (one HSET), two EXPIREs and the existence check; no map HSET.
    assert renewals["expire"] == 3 * renewals["evalsha"]
    assert renewals["hset"] <= renewals["evalsha"] + 4


async def test_a_map_redis_lost_is_written_again(
    processes: Start, redis_server: RedisServer
) -> None:
    one, two = await processes(), await processes()
    one.map, two.map = {"a": 1}, {"b": 2}
    await until_seen(one, {"a": 1, "b": 2})
    redis_server.stop()
    redis_server.start()  # empty: no persistence
    await until_seen(one, {"a": 1, "b": 2}, limit=10.0)
    # And without a reconnect in between (evicted, deleted): the next renewal notices.
    client = Redis.from_url(redis_server.url)
    try:
        await client.delete(node_key(two.node, "channels"))
        two.cluster.published_at = 0.0  # renewal due now
        await until_seen(one, {"a": 1, "b": 2})
    finally:
        await client.aclose()


@pytest.mark.parametrize("outage", ["killed", "frozen"])
async def test_redis_down_is_a_503_within_the_timeout(
    processes: Start, redis_server: RedisServer, outage: str
) -> None:
    process = await processes()
    process.map = {"a": 1}
    await until_seen(process, {"a": 1})
    assert redis_server.process is not None
    if outage == "killed":
        redis_server.stop()
    else:
        redis_server.process.send_signal(signal.SIGSTOP)  # accepts, never answers
    try:
        for ask in (process.cluster_channels, process.cluster_nodes):
            started = time.monotonic()
            with pytest.raises(BrokerUnavailable, match="cannot tell the cluster's") as info:
                await ask()
            assert info.value.status == 503
            assert time.monotonic() - started < SETTINGS["broker_timeout"] + 0.5
    finally:
        if outage == "frozen":
            redis_server.process.send_signal(signal.SIGCONT)


async def test_a_broker_that_is_not_running_is_a_503(redis_server: RedisServer) -> None:
    broker = RedisBroker(redis_server.url, SETTINGS)
    with pytest.raises(BrokerUnavailable, match="not running"):
        await broker.cluster_channels()
