"""Outgoing replies bounded and in order (issue 18, items 2, 4 and 6).

A reply never takes more than the client's buffer, a history reply or a recovery
never grows with what a channel keeps, a client whose buffer overflowed gets no more
work done for it, a channel's publications never go before its subscribe reply, and
plain subscribes never wait behind recoveries.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Quart

from realtime import get_host
from realtime_broker import BrokerUnavailable, Publication, get_broker
from realtime_centrifuge.plugin import get_node
from realtime_hub import Hub

from ..conftest import RedisServer
from ..unit.test_hub import FakeConnection
from .test_centrifuge_endpoint import connected, served_app, token
from .test_fanout import hypercorn, settle

#: About the bytes of one publication here: 100 of them are 5 MB.
PUB_SIZE = 50_000
REPLY_BYTES = 256 * 1024
ROOM = {
    "name": "room",
    "history_size": 100,
    "history_ttl": "300s",
    "force_recovery": True,
    "allow_subscribe_for_client": True,
    "allow_history_for_client": True,
}
PLAIN = {"name": "plain", "allow_subscribe_for_client": True}
CHANNELS = {"namespaces": [ROOM, PLAIN]}


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    app = await served_app(tmp_path, channel=CHANNELS, fast_path=request.param == "fast-path")
    async with hypercorn(app) as port:
        yield app, port


async def fill(app: Quart, channel: str, count: int = 100) -> None:
    broker = get_broker(get_host(app))
    for n in range(count):
        await broker.publish(
            channel, Publication(json.dumps({"n": n, "pad": "x" * PUB_SIZE}), json=True)
        )


async def test_a_single_reply_larger_than_the_room_left_overflows_even_with_nothing_queued() -> (
    None
):
    hub = Hub(max_buffer=1000, overflow="drop-oldest")
    hub.start()
    connection = FakeConnection()
    client = await hub.connect(connection)
    assert client is not None
    assert client.queue is None  # nothing queued: the bound applies all the same
    assert hub.send(client, "x" * 2000) is False
    assert client.closing
    await settle(lambda: connection.closed is not None)
    assert connection.closed is not None and connection.closed[0] == 1008
    assert hub.stats.overflows == 1 and hub.stats.disconnected_slow == 1
    assert connection.received == []
    await hub.close()


async def test_a_history_reply_is_bounded_in_bytes_and_pages_on_to_the_top(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    await fill(app, "room:a")
    client = await connected(port)
    seen: list[int] = []
    since: dict[str, Any] | None = None
    for _ in range(100):
        params: dict[str, Any] = {"channel": "room:a", "limit": 100}
        if since is not None:
            params["since"] = since
        page = (await client.call("history", **params))["history"]
        pubs = page["publications"]
        assert page["offset"] == 100  # the top, whatever the page holds
        assert 1 <= len(pubs) <= REPLY_BYTES // PUB_SIZE  # fewer than asked: bounded
        seen += [p["offset"] for p in pubs]
        if seen[-1] == page["offset"]:
            break
        since = {"offset": seen[-1], "epoch": page["epoch"]}
    assert seen == list(range(1, 101))  # paged on, each once, to the top
    await client.ws.close()


async def test_a_recovery_over_the_byte_bound_is_not_recovered(server: tuple[Quart, int]) -> None:
    app, port = server
    client = await connected(port)
    sub = (await client.call("subscribe", channel="room:a"))["subscribe"]
    await client.ws.close()
    await fill(app, "room:a", 20)  # 1 MB missed
    back = await connected(port)
    reply = await back.call(
        "subscribe", channel="room:a", recover=True, epoch=sub.get("epoch", ""), offset=0
    )
    sub = reply["subscribe"]
    assert sub.get("recovered") is None and "publications" not in sub
    assert sub["offset"] == 20 and sub["was_recovering"] is True
    await back.ws.close()


def masked(text: str) -> bytes:
    """A client's text frame (masked, as a client must)."""
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    return head + mask + body


def stalled_centrifuge_client(port: int) -> socket.socket:
    """Connected over the Centrifuge endpoint, then reading nothing more."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        (
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    sock.settimeout(10)
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536) or b"!"
    assert b" 101 " in got
    sock.sendall(masked(json.dumps({"id": 1, "connect": {"token": token("alice")}})))
    while b'"connect"' not in got:
        chunk = sock.recv(65536)
        assert chunk, "closed before the connect reply"
        got += chunk
    return sock


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "plain"])
async def test_a_client_not_reading_its_history_replies_is_closed_and_no_more_are_made(
    tmp_path: Path, fast_path: bool
) -> None:
    """The red team's frame: 40 history commands of 100 publications, nobody reading."""
    buffer = 512 * 1024
    app = await served_app(tmp_path, channel=CHANNELS, fast_path=fast_path, client_buffer=buffer)
    async with hypercorn(app) as port:
        await fill(app, "room:a")
        node = get_node(get_host(app))
        broker = node.broker
        reads = 0
        read = broker.history

        async def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal reads
            reads += 1
            return await read(*args, **kwargs)

        broker.history = counted  # type: ignore[method-assign]
        sock = await asyncio.to_thread(stalled_centrifuge_client, port)
        try:
            commands = [
                json.dumps({"id": i, "history": {"channel": "room:a", "limit": 100}})
                for i in range(2, 42)
            ]
            sock.sendall(masked("\n".join(commands)))
            await settle(lambda: len(node.hub) == 0)  # closed: its buffer overflowed
            assert node.hub.stats.disconnected_slow == 1
            # What the kernel and the buffer took, and no more: 40 replies were 200 MB.
            assert reads < 40
        finally:
            sock.close()


async def test_a_plain_subscribe_does_not_wait_behind_recoveries(server: tuple[Quart, int]) -> None:
    """Every recovery slot taken (slow recoveries): a recovery with something to read
    waits its turn; a plain subscribe to the stream, and a recovery that missed
    nothing, go on meanwhile."""
    app, port = server
    await fill(app, "room:a", 3)
    node = get_node(get_host(app))
    slots = node.recovery_slots
    taken = 0
    while not slots.locked():
        await slots.acquire()
        taken += 1
    try:
        recovering = await connected(port, "bob")
        (waiting,) = await recovering.send(
            {"subscribe": {"channel": "room:a", "recover": True, "epoch": "", "offset": 0}}
        )
        reply_task = asyncio.create_task(recovering.reply(waiting, timeout=10))
        plain = await connected(port)
        sub = (await plain.call("subscribe", channel="room:a"))["subscribe"]
        assert sub["recoverable"] is True and sub["offset"] == 3
        current = await connected(port, "carol")
        back = await current.call(
            "subscribe", channel="room:a", recover=True, epoch=sub["epoch"], offset=3
        )
        assert back["subscribe"]["recovered"] is True  # nothing missed, no turn taken
        assert not reply_task.done()  # the real recovery still waits for its turn
    finally:
        for _ in range(taken):
            slots.release()
    recovered = (await reply_task)["subscribe"]
    assert [p["offset"] for p in recovered["publications"]] == [1, 2, 3]
    for client in (plain, current, recovering):
        await client.ws.close()


async def test_over_redis_no_publication_goes_before_its_subscribe_reply(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """A frame of seven subscribes (as centrifuge-js batches them) under a publisher
    hammering two of the channels from another process: each channel's pushes come
    after its reply, and a positioned one's offsets follow on from it, none skipped."""
    app = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    other = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(app) as port, hypercorn(other):
        stop = asyncio.Event()
        broker = get_broker(get_host(other))
        hammered = ("room:a", "plain:a")

        async def hammer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                for channel in hammered:
                    with contextlib.suppress(BrokerUnavailable):
                        await broker.publish(channel, Publication(f'{{"n":{n}}}', json=True))
                await asyncio.sleep(0)

        task = asyncio.create_task(hammer())
        try:
            client = await connected(port)
            channels = ["room:a", "plain:a", *(f"room:{i}" for i in range(3)), "plain:b", "plain:c"]
            ids = await client.send(*({"subscribe": {"channel": c}} for c in channels))
            replied: dict[str, dict[str, Any]] = {}
            last: dict[str, int] = {}
            pushes = dict.fromkeys(hammered, 0)
            async with asyncio.timeout(10):
                while len(replied) < len(channels) or min(pushes.values()) < 20:
                    for message in await client.messages():
                        if message.get("id") in ids:
                            channel = channels[ids.index(message["id"])]
                            replied[channel] = message["subscribe"]
                            last[channel] = message["subscribe"].get("offset", 0)
                        elif "push" in message and "pub" in message["push"]:
                            channel = message["push"]["channel"]
                            assert channel in replied, f"a {channel} push before its reply"
                            pushes[channel] += 1
                            offset = message["push"]["pub"].get("offset", 0)
                            if replied[channel].get("positioned"):
                                assert offset == last[channel] + 1, "an offset skipped"
                                last[channel] = offset
            await client.ws.close()
        finally:
            stop.set()
            await task


async def test_a_presence_reply_over_the_byte_bound_is_refused_and_its_stats_still_answer(
    tmp_path: Path,
) -> None:
    """Members' info (up to 16 KB each, 10,000 of them) could make a reply of 160 MB:
    past half the client's buffer the reply is 106, not a list missing some."""
    app = await served_app(tmp_path, client_buffer=16 * 1024)  # 8 KB of reply at most
    async with hypercorn(app) as port:
        members = []
        for i in range(5):
            member = await connected(port, f"user{i}", info={"bio": "x" * 2000})
            assert "subscribe" in await member.call("subscribe", channel="chat:p")
            members.append(member)
        asker = members[0]

        async def clients() -> int:
            stats = await asker.call("presence_stats", channel="chat:p")
            return int(stats["presence_stats"]["num_clients"])

        async with asyncio.timeout(5):
            while await clients() < 5:  # each enters presence after its reply went
                pass
        reply = await asker.call("presence", channel="chat:p")
        assert reply["error"]["code"] == 106, reply
        for member in members[1:3]:
            await member.ws.close()
        async with asyncio.timeout(5):
            while await clients() > 3:
                pass
        smaller = await asker.call("presence", channel="chat:p")
        assert len(smaller["presence"]["presence"]) == 3, smaller  # 3 x 2 KB fit
        for member in (members[0], *members[3:]):
            await member.ws.close()
