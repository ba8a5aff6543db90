"""The hub: channels, fan-out order, bounded buffers, overflow policies."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime_broker import Publication
from realtime_hub import CLOSE_OVERFLOW, Client, ConnectionGone, Hub, HubClosed, engine
from realtime_hub.engine import CLOSE_TIMEOUT
from realtime_websocket import RawFormat

RAW = RawFormat()


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
        raise ConnectionGone

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


async def serve(hub: Hub, connection: FakeConnection, channel: str = "default") -> None:
    """What a protocol plugin does with a connection (the raw one: listen, discard)."""
    client = await hub.connect(connection)
    assert client is not None
    hub.join(channel, client, RAW)
    try:
        while True:
            await connection.receive()
    except ConnectionGone:
        pass
    finally:
        hub.forget(client)


async def connect(
    hub: Hub, connection: FakeConnection, channel: str = "default"
) -> asyncio.Task[None]:
    before = len(hub)
    task = asyncio.create_task(serve(hub, connection, channel))
    await settle(lambda: len(hub) == before + 1)
    return task


def publish(hub: Hub, data: str | bytes, channel: str = "default") -> int:
    return hub.publish(channel, Publication(data))


async def test_publish_reaches_every_client_in_order() -> None:
    hub = Hub()
    hub.start()
    connections = [FakeConnection() for _ in range(3)]
    tasks = [await connect(hub, c) for c in connections]
    for i in range(50):
        assert publish(hub, f"m{i}") == 3
    await settle(lambda: all(len(c.received) == 50 for c in connections))
    for connection in connections:
        assert connection.received == [f"m{i}" for i in range(50)]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert len(hub) == 0


async def test_a_stalled_client_is_closed_on_overflow_and_others_lose_nothing() -> None:
    hub = Hub(max_buffer=1000, overflow="close")
    hub.start()
    healthy, stalled = FakeConnection(), FakeConnection(reading=False)
    tasks = [await connect(hub, healthy), await connect(hub, stalled)]
    counts = []
    for _ in range(30):  # 3,000 bytes in all, over the 1,000-byte buffer
        counts.append(publish(hub, "x" * 100))
        await asyncio.sleep(0)  # a loop turn between broadcasts, as in the server
    # Queued for both until the stalled buffer overflowed, then for the healthy one only.
    assert counts[0] == 2 and counts[-1] == 1
    await settle(lambda: len(healthy.received) == 30)
    await settle(lambda: len(hub) == 1)
    assert stalled.closed is not None
    assert stalled.closed[0] == CLOSE_OVERFLOW
    assert "overflow" in stalled.closed[1]
    assert hub.stats.overflows == 1
    assert hub.stats.disconnected_slow == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_drop_oldest_keeps_the_newest_within_the_bound_and_keeps_order() -> None:
    hub = Hub(max_buffer=500, overflow="drop-oldest")
    hub.start()
    slow = FakeConnection(reading=False)
    task = await connect(hub, slow)
    for i in range(20):
        publish(hub, f"{i:03d}" + "." * 97)  # 100 bytes each
    client = next(iter(hub))
    assert client.queued_bytes <= 500
    slow.reading.set()
    await settle(lambda: not client.queue and client.sender is None)
    numbers = [int(str(m)[:3]) for m in slow.received]
    assert numbers == sorted(numbers)  # order kept
    assert numbers[-1] == 19  # the newest survived
    assert len(numbers) < 20  # the oldest were dropped
    assert hub.stats.dropped == 20 - len(numbers)
    assert slow.closed is None
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_client_whose_send_fails_is_removed() -> None:
    class Broken(FakeConnection):
        async def send(self, data: Any) -> None:
            raise ConnectionResetError("peer went away")

    hub = Hub()
    hub.start()
    task = await connect(hub, Broken())
    publish(hub, "boom")
    await settle(lambda: len(hub) == 0)
    await asyncio.gather(task, return_exceptions=True)


async def test_a_hub_that_is_not_running_refuses_publications() -> None:
    hub = Hub()
    with pytest.raises(HubClosed):
        publish(hub, "nobody")
    hub.start()
    await hub.close()
    with pytest.raises(HubClosed):
        publish(hub, "nobody")


def test_bad_hub_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="overflow policy"):
        Hub(overflow="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        Hub(max_buffer=0)


async def test_a_publication_reaches_its_channel_only_and_channels_are_counted() -> None:
    hub = Hub()
    hub.start()
    opened: list[str] = []
    closed: list[str] = []
    hub.on_first, hub.on_last = opened.append, closed.append
    lobby, kitchen = FakeConnection(), FakeConnection()
    tasks = [await connect(hub, lobby, "lobby"), await connect(hub, kitchen, "kitchen")]
    assert opened == ["lobby", "kitchen"]
    assert publish(hub, "for the lobby", "lobby") == 1
    assert publish(hub, "nobody listens", "garden") == 0
    await settle(lambda: lobby.received == ["for the lobby"])
    assert kitchen.received == []
    assert (hub.subscribers("lobby"), hub.subscribers("garden")) == (1, 0)
    lobby.gone.set()
    await settle(lambda: closed == ["lobby"])
    assert hub.subscribers("lobby") == 0 and "lobby" not in hub.channels
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert closed == ["lobby", "kitchen"]


async def test_each_format_encodes_a_publication_once() -> None:
    class Counting(RawFormat):
        def __init__(self) -> None:
            self.calls = 0

        def encode(self, channel: str, publication: Any) -> str | bytes:
            self.calls += 1
            return f"[{channel}] {publication.data}"

    hub = Hub()
    hub.start()
    raw, framed = RawFormat(), Counting()
    connections = [FakeConnection() for _ in range(6)]
    tasks = []
    for index, connection in enumerate(connections):
        tasks.append(await connect(hub, connection))
        client = next(c for c in hub if c.connection is connection)
        if index % 2:  # half of them speak another protocol
            hub.leave("default", client)
            hub.join("default", client, framed)
    del raw
    assert publish(hub, "hello") == 6
    assert framed.calls == 1
    await settle(lambda: all(c.received for c in connections))
    assert (
        sorted(str(c.received[0]) for c in connections) == ["[default] hello"] * 3 + ["hello"] * 3
    )
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_two_formats_giving_the_same_text_share_one_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A protocol with two kinds of subscriber (joins and leaves or not) hands both
    the same text for a publication: the hub builds its frame once."""
    text = "the same text"

    class Same(RawFormat):
        def encode(self, channel: str, publication: Any) -> str | bytes:
            return text

    built: list[str | bytes] = []
    real = engine._message
    monkeypatch.setattr(engine, "_message", lambda data: built.append(data) or real(data))
    hub = Hub()
    hub.start()
    connections = [FakeConnection() for _ in range(4)]
    tasks = [await connect(hub, connection) for connection in connections]
    for client in hub:  # four groups, one format object each
        hub.leave("default", client)
        hub.join("default", client, Same())
    formats = {id(fmt) for fmt in hub.channels["default"]}
    assert len(formats) == 4
    assert publish(hub, "ignored") == 4
    assert built == [text]
    await settle(lambda: all(c.received == [text] for c in connections))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_loss_is_told_to_that_channels_clients_only() -> None:
    hub = Hub()
    hub.start()
    told, spared = FakeConnection(), FakeConnection()
    tasks = [await connect(hub, told, "news"), await connect(hub, spared, "sport")]
    hub.lost("news", 3)
    await settle(lambda: told.closed is not None)
    assert told.closed == (1012, "missed 3 broadcast(s); reconnect")
    assert spared.closed is None
    assert publish(hub, "goal", "sport") == 1
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_clients_stay_small() -> None:
    # Issue 9 wants connections as cheap as the Go original's: no dict per client.
    assert "__slots__" in vars(Client)


async def test_a_big_fan_out_goes_out_in_slices_in_order() -> None:
    """Past ``fan_out_slice`` clients a publication is delivered by a task, slice by slice."""
    hub = Hub(fan_out_slice=2)
    hub.start()
    connections = [FakeConnection() for _ in range(5)]
    tasks = [await connect(hub, c) for c in connections]
    assert publish(hub, "a") == 5
    assert publish(hub, "b") == 5
    assert hub.stats.deliveries == 0  # nothing written before the loop turns
    await asyncio.sleep(0)
    assert 0 < hub.stats.deliveries < 10  # one slice per turn of the loop
    await settle(lambda: all(len(c.received) == 2 for c in connections))
    assert all(c.received == ["a", "b"] for c in connections)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_small_channel_waits_behind_a_pending_fan_out() -> None:
    """Order holds across channels: nothing overtakes a fan-out still under way."""
    hub = Hub(fan_out_slice=2)
    hub.start()
    both = FakeConnection()
    crowd = [FakeConnection() for _ in range(3)]
    tasks = [await connect(hub, c, "big") for c in crowd]
    tasks.append(await connect(hub, both, "big"))
    client = next(c for c in hub if c.connection is both)
    hub.join("small", client, RAW)
    publish(hub, "first", "big")
    assert publish(hub, "second", "small") == 1
    await settle(lambda: len(both.received) == 2)
    assert both.received == ["first", "second"]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_past_max_pending_a_publish_delivers_what_waits_at_once() -> None:
    """The pending fan-outs are bounded: at the bound the loop catches up, in order."""
    hub = Hub(fan_out_slice=1, max_pending=1)
    hub.start()
    connections = [FakeConnection() for _ in range(2)]
    tasks = [await connect(hub, c) for c in connections]
    publish(hub, "a")
    assert hub.stats.deliveries == 0
    publish(hub, "b")
    assert hub.stats.deliveries == 2  # "a" went out within the second publish
    await settle(lambda: all(c.received == ["a", "b"] for c in connections))
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_closing_the_hub_delivers_pending_fan_outs_first() -> None:
    hub = Hub(fan_out_slice=1)
    hub.start()
    connections = [FakeConnection() for _ in range(3)]
    tasks = [await connect(hub, c) for c in connections]
    publish(hub, "last words")
    await hub.close()
    assert all(c.received == ["last words"] for c in connections)
    assert all(c.closed is not None and c.closed[0] == 1001 for c in connections)
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_drop_oldest_tells_a_handler_that_wants_to_know() -> None:
    """A protocol whose clients track offsets must learn of the hole (Centrifuge: 3010)."""

    class Handler:
        def __init__(self) -> None:
            self.dropped_counts: list[int] = []

        def received(self, data: str | bytes) -> None:
            return None

        def closed(self) -> None:
            pass

        def dropped(self, count: int) -> None:
            self.dropped_counts.append(count)

    hub = Hub(max_buffer=500, overflow="drop-oldest")
    hub.start()
    slow = FakeConnection(reading=False)
    handler = Handler()
    client = await hub.connect(slow, lambda client: handler)
    assert client is not None
    hub.join("default", client, RAW)
    for i in range(20):
        publish(hub, f"{i:03d}" + "." * 97)
    assert sum(handler.dropped_counts) == hub.stats.dropped > 0
    hub.forget(client)


async def test_a_hold_keeps_at_most_max_held_and_counts_the_rest_as_lost() -> None:
    hub = Hub(max_held=3)
    hub.start()
    connection = FakeConnection()
    client = await hub.connect(connection)
    assert client is not None
    held = hub.hold("default", client)
    for i in range(5):
        assert publish(hub, f"m{i}") == 1  # counted, kept aside, not sent
    assert [p.data for p in held.publications] == ["m0", "m1", "m2"]
    assert held.lost == 2
    hub.release("default", client, held, RAW)
    assert publish(hub, "live") == 1
    await settle(lambda: connection.received == ["live"])
    hub.forget(client)


async def test_close_client_sends_the_backlog_before_the_close_frame() -> None:
    """A plain ASGI WebSocket's only buffer is the backlog: a farewell queued just
    before close_client reaches the peer, and the close frame comes after it."""
    hub = Hub()
    hub.start()
    peer = FakeConnection(reading=False)
    task = await connect(hub, peer)
    client = next(iter(hub))
    for i in range(5):
        hub.send(client, f"farewell {i}")
    assert client.queue  # held: the peer is not reading yet
    closing = asyncio.create_task(hub.close_client(client, 4000, "bye"))
    await asyncio.sleep(0.01)
    assert client.channels == []  # out of its channels at once
    assert publish(hub, "after") == 0
    peer.reading.set()
    await closing
    assert peer.received == [f"farewell {i}" for i in range(5)]
    assert peer.closed == (4000, "bye")
    await asyncio.gather(task, return_exceptions=True)


async def test_close_client_of_a_peer_that_never_reads_ends_within_its_bound() -> None:
    hub = Hub()
    hub.start()
    peer = FakeConnection(reading=False)
    task = await connect(hub, peer)
    client = next(iter(hub))
    hub.send(client, "never taken")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await hub.close_client(client, 4000, "bye")
    assert loop.time() - started < 3 * CLOSE_TIMEOUT
    assert peer.closed == (4000, "bye") and len(hub) == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_publication_skips_the_one_client_it_names() -> None:
    """Pusher's ``socket_id`` exclusion: the publisher's own connection does not get it,
    in any format; a name not here, or not in the channel, skips nobody."""
    hub = Hub()
    hub.start()
    connections = [FakeConnection() for _ in range(3)]
    tasks = [await connect(hub, c) for c in connections]
    clients = sorted(hub, key=lambda c: c.id)
    for client, name in zip(clients, ("1.1", "2.2", "3.3"), strict=True):
        hub.identify(client, name=name)
    elsewhere = FakeConnection()
    tasks.append(await connect(hub, elsewhere, channel="other"))
    hub.identify(next(c for c in hub if c not in clients), name="4.4")
    assert hub.publish("default", Publication("a", skip="2.2")) == 2
    assert hub.publish("default", Publication("b", skip="4.4")) == 3  # not in the channel
    assert hub.publish("default", Publication("c", skip="9.9")) == 3  # not here
    await settle(lambda: len(connections[0].received) == 3)
    assert connections[1].received == ["b", "c"]
    assert connections[0].received == connections[2].received == ["a", "b", "c"]
    assert elsewhere.received == []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert hub._named == {}  # forgotten with their clients
