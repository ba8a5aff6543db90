"""The client pool: fan-out order, bounded buffers, overflow policies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_websocket import CLOSE_OVERFLOW, Pool, PoolClosed


class FakeConnection:
    """Stands in for Quart's websocket; ``reading=False`` makes sends block like a stalled peer."""

    def __init__(self, reading: bool = True) -> None:
        self.received: list[str | bytes] = []
        self.reading = asyncio.Event()
        if reading:
            self.reading.set()
        self.gone = asyncio.Event()
        self.closed: tuple[int, str] | None = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> Any:
        await self.gone.wait()
        raise asyncio.CancelledError  # what Quart does when the peer leaves

    async def send(self, data: Any) -> None:
        await self.reading.wait()
        self.received.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)
        await self.reading.wait()  # a stalled peer never takes the close frame either
        self.gone.set()  # the server's side of the close handshake ends the handler


async def settle(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


async def connect(pool: Pool, connection: FakeConnection) -> asyncio.Task[None]:
    before = len(pool)
    task = asyncio.create_task(pool.serve(connection))
    await settle(lambda: len(pool) == before + 1)
    return task


async def test_publish_reaches_every_client_in_order() -> None:
    pool = Pool()
    pool.start()
    connections = [FakeConnection() for _ in range(3)]
    tasks = [await connect(pool, c) for c in connections]
    for i in range(50):
        assert pool.publish(f"m{i}") == 3
    await settle(lambda: all(len(c.received) == 50 for c in connections))
    for connection in connections:
        assert connection.received == [f"m{i}" for i in range(50)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(pool) == 0


async def test_a_stalled_client_is_closed_on_overflow_and_others_lose_nothing() -> None:
    pool = Pool(max_buffer=1000, overflow="close")
    pool.start()
    healthy, stalled = FakeConnection(), FakeConnection(reading=False)
    tasks = [await connect(pool, healthy), await connect(pool, stalled)]
    counts = []
    for _ in range(30):  # 3,000 bytes in all, over the 1,000-byte buffer
        counts.append(pool.publish("x" * 100))
        await asyncio.sleep(0)  # a loop turn between broadcasts, as in the server
    # Queued for both until the stalled buffer overflowed, then for the healthy one only.
    assert counts[0] == 2 and counts[-1] == 1
    await settle(lambda: len(healthy.received) == 30)
    await settle(lambda: len(pool) == 1)
    assert stalled.closed is not None
    assert stalled.closed[0] == CLOSE_OVERFLOW
    assert "overflow" in stalled.closed[1]
    assert pool.stats.overflows == 1
    assert pool.stats.disconnected_slow == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_drop_oldest_keeps_the_newest_within_the_bound_and_keeps_order() -> None:
    pool = Pool(max_buffer=500, overflow="drop-oldest")
    pool.start()
    slow = FakeConnection(reading=False)
    task = await connect(pool, slow)
    for i in range(20):
        pool.publish(f"{i:03d}" + "." * 97)  # 100 bytes each
    client = next(iter(pool))
    assert client.queued_bytes <= 500
    slow.reading.set()
    await settle(lambda: not client.queue and client.sender is None)
    numbers = [int(str(m)[:3]) for m in slow.received]
    assert numbers == sorted(numbers)  # order kept
    assert numbers[-1] == 19  # the newest survived
    assert len(numbers) < 20  # the oldest were dropped
    assert pool.stats.dropped == 20 - len(numbers)
    assert slow.closed is None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_client_whose_send_fails_is_removed() -> None:
    class Broken(FakeConnection):
        async def send(self, data: Any) -> None:
            raise ConnectionResetError("peer went away")

    pool = Pool()
    pool.start()
    task = await connect(pool, Broken())
    pool.publish("boom")
    await settle(lambda: len(pool) == 0)
    await asyncio.gather(task, return_exceptions=True)


async def test_a_pool_that_is_not_running_refuses_broadcasts() -> None:
    pool = Pool()
    with pytest.raises(PoolClosed):
        pool.publish("nobody")
    pool.start()
    await pool.close()
    with pytest.raises(PoolClosed):
        pool.publish("nobody")


def test_bad_pool_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overflow policy"):
        Pool(overflow="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Pool(max_buffer=0)
