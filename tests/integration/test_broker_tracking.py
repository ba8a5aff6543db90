"""The broker's tracker: a key's first hold and last release, each heard by one process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from realtime_broker import MemoryBroker
from realtime_broker.redis import RedisBroker

from ..conftest import RedisServer

Heard = list[tuple[str, str, bool]]


def listen(broker: Any) -> Heard:
    heard: Heard = []
    broker.tracker.on_change(lambda kind, key, held: heard.append((kind, key, held)))
    return heard


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_the_memory_broker_tells_first_and_last() -> None:
    broker = MemoryBroker("memory://", {})
    heard = listen(broker)
    await broker.start()
    try:
        tracker = broker.tracker
        await tracker.hold("users", "alice", "c1")
        await tracker.hold("users", "alice", "c2")
        await tracker.hold("users", "bob", "c3")
        await tracker.release("users", "alice", "c1")
        await tracker.release("users", "alice", "c1")  # twice: nothing more
        await tracker.release("users", "alice", "c2")
        assert heard == [("users", "alice", True), ("users", "bob", True),
                         ("users", "alice", False)]  # fmt: skip
    finally:
        await broker.close()


def redis_settings(**more: Any) -> dict[str, Any]:
    return {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 65536,
            "presence_ttl": 1.5, "presence_update_interval": 0.5, **more}  # fmt: skip


async def test_two_processes_decide_each_change_once(redis_server: RedisServer) -> None:
    one = RedisBroker(redis_server.url, redis_settings())
    two = RedisBroker(redis_server.url, redis_settings())
    heard_one, heard_two = listen(one), listen(two)
    await one.start()
    await two.start()
    try:
        await one.tracker.hold("users", "alice", "c1")  # alice's first tab, on one
        await two.tracker.hold("users", "alice", "c1")  # the same id elsewhere: another tab
        await one.tracker.release("users", "alice", "c1")
        assert heard_one == [("users", "alice", True)] and heard_two == []
        await two.tracker.release("users", "alice", "c1")  # her last tab closes, on two
        assert heard_one == [("users", "alice", True)]
        assert heard_two == [("users", "alice", False)]
    finally:
        await one.close()
        await two.close()


async def test_a_killed_process_holds_expire_once(redis_server: RedisServer) -> None:
    doomed = RedisBroker(redis_server.url, redis_settings())
    await doomed.start()
    await doomed.tracker.hold("users", "carol", "c9")
    await doomed.tracker.hold("channels", "news", "process")
    # Killed: it renews nothing more and leaves nothing (no close, no leave_all).
    for task in doomed._tasks:
        task.cancel()
    survivors = [RedisBroker(redis_server.url, redis_settings()) for _ in range(2)]
    heard = [listen(broker) for broker in survivors]
    for broker in survivors:
        await broker.start()
    try:

        async def sweep() -> None:
            await asyncio.gather(*(b.tracker.sweep(k) for b in survivors
                                   for k in ("users", "channels")))  # fmt: skip

        async with asyncio.timeout(10):
            while sorted(heard[0] + heard[1]) != [("channels", "news", False),
                                                  ("users", "carol", False)]:  # fmt: skip
                await sweep()
                await asyncio.sleep(0.1)
        for _ in range(5):  # and never again
            await sweep()
        assert sorted(heard[0] + heard[1]) == [("channels", "news", False),
                                               ("users", "carol", False)]  # fmt: skip
    finally:
        for broker in survivors:
            await broker.close()
        doomed.presence_store.present = {}  # it is dead: it leaves nothing on close
        await doomed.close()
