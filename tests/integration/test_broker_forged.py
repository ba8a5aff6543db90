"""Whoever can PUBLISH on the channel must not be able to stop, silence or disconnect anyone.

Each test publishes a hand-made envelope straight onto the Redis channel (as anyone with
PUBLISH access could), then checks what users see: broadcasts from ``send.py`` still
answer 200 and reach every client, nobody is closed with 1012, ``/-/health`` stays 200,
and the log says, with a count, what was dropped.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import ClientConnection, connect

from realtime_broker.redis import MAGIC

from ..conftest import RedisServer, Server

CHANNEL = "realtime:channel:default"
META = "realtime:{ch:default}:meta"


@pytest.fixture
def raw(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


@pytest.fixture
async def cluster(app_dir: Path, redis_server: RedisServer) -> AsyncIterator[Server]:
    server = Server(app_dir, "--workers", "2", "--broker", redis_server.url).start()
    yield server
    server.stop()


@pytest.fixture
async def pages(cluster: Server) -> AsyncIterator[list[ClientConnection]]:
    connected = [await connect(cluster.ws_url) for _ in range(6)]
    yield connected
    for ws in connected:
        await ws.close()


async def send(server: Server, message: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{server.url}/send.py", json={"message": message})


async def health(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.url}/-/health", headers={"Connection": "close"})


async def expect(pages: list[ClientConnection], *messages: str | bytes) -> None:
    """Every page receives exactly these next, in this order (and is still open)."""
    for ws in pages:
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in messages]
        assert got == list(messages)


def numbering(raw: redis.Redis) -> tuple[bytes, int]:
    """Redis's epoch and counter, as a forger who can read keys would see them."""
    epoch, seq = raw.hmget(META, ["epoch", "seq"])
    assert isinstance(epoch, bytes) and isinstance(seq, bytes)
    return epoch, int(seq)


def forge(raw: redis.Redis, epoch: bytes, seq: bytes | int, body: bytes) -> None:
    number = seq if isinstance(seq, bytes) else str(seq).encode()
    raw.publish(CHANNEL, MAGIC + epoch + b" " + number + b" " + body)


async def healthy_for_a_while(server: Server) -> None:
    """Ask every worker (a fresh connection each time lets the kernel pick another)."""
    for _ in range(10):
        response = await health(server)
        assert (response.status_code, response.text) == (200, "ok\n")


async def test_a_sequence_number_of_thousands_of_digits_stops_nothing(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    assert (await send(cluster, "first")).status_code == 200
    epoch, _ = numbering(raw)
    # int() refuses more than 4,300 digits: this killed every process's listener.
    forge(raw, epoch, b"9" * 5000, b"tpoison")
    for n in range(3):
        response = await send(cluster, f"ours {n}")
        assert response.status_code == 200, response.text
    await expect(pages, "first", "ours 0", "ours 1", "ours 2")
    await healthy_for_a_while(cluster)
    assert f"on redis channel {CHANNEL} that realtime did not publish: 1 since" in cluster.log


async def test_a_forged_jump_in_the_sequence_closes_no_one_and_drops_nothing(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    assert (await send(cluster, "first")).status_code == 200
    epoch, _ = numbering(raw)
    for n in range(3):  # again and again: each must be shrugged off
        forge(raw, epoch, 10**12 + n, b"tforged")
        assert (await send(cluster, f"ours {n}")).status_code == 200
    forge(raw, epoch, 9_223_372_036_854_775_807, b"tforged")  # Redis's largest counter
    assert (await send(cluster, "last")).status_code == 200
    await expect(pages, "first", "ours 0", "ours 1", "ours 2", "last")
    await healthy_for_a_while(cluster)
    assert "numbered beyond Redis's counter (not stamped by realtime)" in cluster.log
    assert "missed" not in cluster.log


async def test_a_forged_jump_ahead_of_the_broadcast_in_flight_is_not_believed(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    # The forger guesses the number after next; by the time the process asks Redis, the
    # genuine broadcast has taken the next one. Redis delivers in order, so the genuine
    # broadcasts arriving after the forged one give it away.
    assert (await send(cluster, "first")).status_code == 200
    epoch, counter = numbering(raw)
    pipe = raw.pipeline(transaction=True)
    pipe.publish(CHANNEL, MAGIC + epoch + b" %d tforged" % (counter + 2))
    for n in range(3):  # what the publish script does, the same moment
        pipe.eval(
            "local s = redis.call('HINCRBY', KEYS[1], 'seq', 1) "
            "return redis.call('PUBLISH', KEYS[2], ARGV[1] .. s .. ARGV[2])",
            2,
            META,
            CHANNEL,
            MAGIC + epoch + b" ",
            f" tours {n}",
        )
    pipe.execute()
    assert (await send(cluster, "last")).status_code == 200
    await expect(pages, "first", "ours 0", "ours 1", "ours 2", "last")
    await healthy_for_a_while(cluster)
    assert "numbered ahead of messages that arrived after them" in cluster.log
    assert "missed" not in cluster.log


async def test_a_forged_epoch_is_ignored(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    assert (await send(cluster, "first")).status_code == 200
    forge(raw, b"f0f0f0f0", 1, b"tforged")  # looked like Redis restarting
    forge(raw, b"f0f0f0f0", 2, b"tforged")
    assert (await send(cluster, "ours")).status_code == 200
    await expect(pages, "first", "ours")
    await healthy_for_a_while(cluster)
    assert "with an epoch Redis does not have (not stamped by realtime)" in cluster.log
    assert "missed" not in cluster.log


async def test_a_forged_next_number_does_not_make_the_genuine_broadcast_stale(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    # The next number needs no question (no extra round trip per broadcast), so a forger
    # can slip a message in ahead of a genuine one. The genuine one still gets through.
    assert (await send(cluster, "first")).status_code == 200
    epoch, counter = numbering(raw)
    forge(raw, epoch, counter + 1, b"tforged")
    forge(raw, epoch, counter + 1, b"tforged")  # an exact repeat is dropped
    assert (await send(cluster, "ours")).status_code == 200
    assert (await send(cluster, "next")).status_code == 200
    await expect(pages, "first", "forged", "ours", "next")
    await healthy_for_a_while(cluster)
    assert "someone else publishes on the channel" in cluster.log
    assert "repeating one already delivered" in cluster.log


async def test_an_envelope_over_the_size_limit_is_dropped_not_delivered(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    assert (await send(cluster, "first")).status_code == 200
    epoch, counter = numbering(raw)
    # Numbered as the next broadcast, so only its size gives it away (--max-message-size
    # is 64 KiB: broadcast() itself would refuse it with 413).
    forge(raw, epoch, counter + 1, b"t" + b"x" * (20 * 1024 * 1024))
    assert (await send(cluster, "ours")).status_code == 200
    await expect(pages, "first", "ours")
    await healthy_for_a_while(cluster)
    assert "over the 65536-byte size limit: 1 since the last report, 1 in all" in cluster.log


async def test_a_message_at_the_size_limit_still_goes_through(
    cluster: Server, pages: list[ClientConnection]
) -> None:
    big = "é" * (64 * 1024 // 2)  # 65,536 bytes of UTF-8, the most broadcast() accepts
    assert (await send(cluster, big)).status_code == 200
    await expect(pages, big)


async def test_a_burst_of_forged_next_numbers_cannot_silence_genuine_broadcasts(
    cluster: Server, pages: list[ClientConnection], raw: redis.Redis
) -> None:
    # More forged "next" numbers than a process remembers: each looks like the next
    # broadcast and is delivered unasked (only ACLs stop that), but the genuine ones
    # that follow, now behind the forged numbering, must not be dropped as stale.
    assert (await send(cluster, "first")).status_code == 200
    epoch, counter = numbering(raw)
    burst = 1500
    pipe = raw.pipeline(transaction=False)
    for n in range(counter + 1, counter + 1 + burst):
        pipe.publish(CHANNEL, MAGIC + epoch + b" %d tf" % n)
    pipe.execute()
    for n in range(3):
        assert (await send(cluster, f"ours {n}")).status_code == 200
    for ws in pages:
        got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(1 + burst + 3)]
        assert got[0] == "first" and got[1 : burst + 1] == ["f"] * burst
        assert got[burst + 1 :] == ["ours 0", "ours 1", "ours 2"]
    await healthy_for_a_while(cluster)
    assert "numbered behind this process, which forged numbers had pushed ahead" in cluster.log
    assert "missed" not in cluster.log
