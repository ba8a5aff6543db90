"""The broker's control channel: what one process asks of every process's connections.

Never numbered, never kept as history (even where the top-level namespace keeps
history), bounded in size; over Redis it reaches every host and a forged one is
dropped (see also tests/integration/test_broker_forgery.py).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from realtime import get_host
from realtime_broker import (
    MAX_CONTROL_SIZE,
    BrokerUnavailable,
    HistoryUnavailable,
    MemoryBroker,
    StreamPosition,
    get_broker,
)
from realtime_centrifuge.plugin import get_node

from ..conftest import RedisServer
from .test_centrifuge_endpoint import connected, served_app
from .test_fanout import hypercorn

#: The top-level namespace keeps history: the old control channel's name fell under it.
CHANNELS = {
    "without_namespace": {
        "allow_subscribe_for_client": True,
        "history_size": 10,
        "history_ttl": "300s",
    },
}
OLD_CONTROL_CHANNEL = "\x01centrifuge-control"


async def test_memory_delivers_control_messages_in_process_and_bounds_them() -> None:
    broker = MemoryBroker("memory://", {})
    heard: list[bytes] = []
    other: list[bytes] = []
    stop = broker.on_control(heard.append)
    broker.on_control(other.append)
    with pytest.raises(BrokerUnavailable):
        await broker.publish_control(b"not started")
    await broker.start()
    try:
        await broker.publish_control(b"one")
        stop()
        await broker.publish_control(b"x" * MAX_CONTROL_SIZE)
        assert heard == [b"one"]  # told at once, and no more once stopped
        assert other == [b"one", b"x" * MAX_CONTROL_SIZE]
        with pytest.raises(ValueError, match="over"):
            await broker.publish_control(b"x" * (MAX_CONTROL_SIZE + 1))
        with pytest.raises(TypeError):
            await broker.publish_control("text")  # type: ignore[arg-type]
        assert broker.channels() == {}  # not a channel
    finally:
        await broker.close()


def test_a_handler_that_fails_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    broker = MemoryBroker("memory://", {})
    heard: list[bytes] = []

    def fails(data: bytes) -> None:
        raise RuntimeError("boom")

    broker.on_control(fails)
    broker.on_control(heard.append)
    broker.report_control(b"m")
    assert heard == [b"m"] and "handling a control message failed" in caplog.text


@pytest.mark.parametrize("broker_url", ["memory", "redis"])
async def test_a_control_message_is_neither_numbered_nor_kept_as_history(
    tmp_path: Path, redis_server: RedisServer, broker_url: str
) -> None:
    url = redis_server.url if broker_url == "redis" else "memory://"
    app = await served_app(tmp_path, channel=CHANNELS, broker=url)
    async with hypercorn(app) as port:
        host = get_host(app)
        broker, node = get_broker(host), get_node(host)
        await broker.publish("news", '{"n":1}')
        before = await broker.history("news", limit=-1)
        victim = await connected(port, "victim")
        for _ in range(3):
            await node.refresh("nobody")
        await node.disconnect("victim", reason="by control")
        assert await victim.closed() == (3503, "by control")
        after = await broker.history("news", limit=-1)
        assert after.position == before.position == StreamPosition(1, after.position.epoch)
        try:
            old = await broker.history(OLD_CONTROL_CHANNEL, limit=-1)
        except HistoryUnavailable:
            pass  # the channel rules keep none there: nothing to show either way
        else:
            assert old.publications == () and old.position.offset == 0
        if broker_url == "redis":
            keys = redis_server.cli("KEYS", "realtime:{ch:*").split()
            assert all("news" in key for key in keys), keys  # nothing numbered but news
            assert redis_server.cli("PUBSUB", "CHANNELS", "realtime:channel:\x01*").strip() == ""


async def test_over_redis_a_control_message_reaches_every_host(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two hosts on one Redis: the server API of one disconnects a user on the other,
    which no channel of theirs carries."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = await served_app(tmp_path / "a", channel=CHANNELS, broker=redis_server.url)
    two = await served_app(tmp_path / "b", channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(one) as port_one, hypercorn(two):
        broker_one: Any = get_broker(get_host(one))
        heard: list[bytes] = []
        broker_one.on_control(heard.append)
        victim = await connected(port_one, "victim")
        offset_before = (await broker_one.history("news")).position
        await get_node(get_host(two)).disconnect("victim", reason="from the other host")
        assert await victim.closed() == (3503, "from the other host")
        async with asyncio.timeout(5):
            while not heard:
                await asyncio.sleep(0.01)
        assert b'"op":"disconnect"' in heard[0]
        assert (await broker_one.history("news")).position == offset_before
