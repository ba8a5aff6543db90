"""A transport that is not a WebSocket on the hub's fast path: Server-Sent Events over TCP.

``EventStream`` is what an SSE transport brings to the hub (a :class:`realtime_hub.Stream`
over a real loopback TCP connection, framed as ``data: ...`` events): attached with
``Hub.attach``, it sits in the same channels as WebSocket clients, gets each
publication's bytes written directly while it keeps up, and meets the same backlog
and overflow policy when it stops reading.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from websockets.asyncio.client import connect

from realtime import create_app, get_host
from realtime_broker import Publication
from realtime_hub import (
    CHUNKED,
    EVENT_STREAM,
    WEBSOCKET,
    Client,
    CloseCode,
    Hub,
    HubClosed,
    Stream,
    engine,
    get_hub,
)
from realtime_hub.clients import Group
from realtime_hub.stream import EventStreamFraming

from ..conftest import eventually, inherited_bind

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-store\r\n\r\n"


class Raw:
    """Publications as published (the raw ``/ws`` format, counted)."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        self.encoded += 1
        data: str | bytes = publication.data
        return data

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        hub.disconnect(client, CloseCode.SERVICE_RESTART, "missed")


class CountingEvents(EventStreamFraming):
    """SSE framing that counts how often it frames a message."""

    def __init__(self) -> None:
        self.framed = 0

    def frame(self, data: str | bytes) -> bytes:
        self.framed += 1
        return super().frame(data)


class Handler:
    def __init__(self) -> None:
        self.ended = False
        self.dropped_counts: list[int] = []

    def received(self, data: str | bytes) -> None:
        return None

    def closed(self) -> None:
        self.ended = True

    def dropped(self, count: int) -> None:
        self.dropped_counts.append(count)


class EventStream(asyncio.Protocol):
    """An SSE response the hub writes to itself: a :class:`realtime_hub.Stream`.

    Its transport pauses as soon as it holds a byte back (high-water mark 0), so while
    it is writable a message handed to ``send_now`` goes out at once, overtaking
    nothing; ``on_writable`` hears every change. It reads nothing from the client.
    """

    def __init__(self, attach: Callable[[EventStream], None], sndbuf: int | None) -> None:
        self._attach = attach
        self._sndbuf = sndbuf
        self.transport: asyncio.WriteTransport = None  # type: ignore[assignment]
        self.on_writable: Callable[[], None] | None = None
        self.direct_writes = 0
        self.aborted = False
        self._open = True
        self._paused = False
        self._lost = False
        self._on_lost: Callable[[Any], None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._ended = asyncio.get_running_loop().create_future()

    # asyncio's side
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        self.transport = transport
        if self._sndbuf is not None:
            transport.get_extra_info("socket").setsockopt(
                socket.SOL_SOCKET, socket.SO_SNDBUF, self._sndbuf
            )
        transport.set_write_buffer_limits(high=0)
        transport.write(HEAD)
        self._attach(self)

    def pause_writing(self) -> None:
        self._paused = True
        self._changed()

    def resume_writing(self) -> None:
        self._paused = False
        self._changed()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self._open = False
        self._lost = True
        self.resume_writing()
        if not self._ended.done():
            self._ended.set_result(None)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(self)

    def _changed(self) -> None:
        if self.on_writable is not None:
            self.on_writable()

    # the hub's side
    def send_now(self, frame: bytes) -> int:
        self.direct_writes += 1
        self.transport.write(frame)  # pauses us if it could not send it all
        return len(frame)

    def start(self, handler: Any, on_lost: Callable[[Any], None]) -> None:
        if self._lost:
            on_lost(self)
        else:
            self._on_lost = on_lost

    def open(self) -> bool:
        return self._open

    def writable(self) -> bool:
        return self._open and not self._paused

    async def drain(self) -> None:
        if self._paused and self._open:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    def abort(self) -> None:
        self.aborted = True
        self._open = False
        self._changed()
        self.transport.abort()

    async def close(self, code: int, reason: str = "") -> None:
        if self._open:
            self._open = False
            self._changed()
            self.transport.write(b"event: close\ndata: %d %s\n\n" % (code, reason.encode()))
            self.transport.close()  # after what it holds
        await asyncio.shield(self._ended)


@asynccontextmanager
async def event_streams(
    hub: Hub, channel: str, fmt: Any, sndbuf: int | None = None, framing: Any = EVENT_STREAM
) -> AsyncIterator[tuple[int, list[tuple[EventStream, Client, Handler]]]]:
    """An SSE server on a loopback port the kernel picks: each connection is attached
    to ``hub`` and joins ``channel`` in ``fmt``."""
    attached: list[tuple[EventStream, Client, Handler]] = []

    def attach(stream: EventStream) -> None:
        handler = Handler()
        client = hub.attach(stream, framing, lambda client: handler)
        hub.join(channel, client, fmt)
        attached.append((stream, client, handler))

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: EventStream(attach, sndbuf), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield port, attached
    finally:
        server.close()
        for stream, _, _ in attached:
            if not stream.transport.is_closing():
                stream.transport.abort()
        await server.wait_closed()


async def sse_client(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A client connected to the SSE server (a plain blocking socket, not yet read)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_events(sock: socket.socket, count: int, timeout: float = 10.0) -> list[str]:
    """The response head, then ``count`` events' data."""
    loop = asyncio.get_running_loop()
    buffer = b""
    events: list[str] = []
    async with asyncio.timeout(timeout):
        while len(buffer) < len(HEAD) or buffer.count(b"\n\n", len(HEAD)) < count:
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, "the server ended the stream"
            buffer += chunk
    assert buffer.startswith(HEAD)
    body = buffer[len(HEAD) :].decode()
    for event in body.split("\n\n")[:count]:
        lines = event.split("\n")
        assert all(line.startswith("data: ") for line in lines), event
        events.append("\n".join(line[len("data: ") :] for line in lines))
    return events


def publish(hub: Hub, data: str | bytes, channel: str = "default") -> int:
    return hub.publish(channel, Publication(data))


# Framings and groups: no sockets ---------------------------------------------------


def test_framings_turn_a_message_into_their_bytes() -> None:
    assert EVENT_STREAM.frame("one") == b"data: one\n\n"
    assert EVENT_STREAM.frame("two\nlines\r\nand\rmore") == (
        b"data: two\ndata: lines\ndata: and\ndata: more\n\n"
    )
    assert EVENT_STREAM.frame(b"caf\xc3\xa9") == "data: café\n\n".encode()
    assert CHUNKED.frame("hello") == b"5\r\nhello\r\n"
    assert CHUNKED.frame(b"") == b""  # an empty chunk would end the body
    assert WEBSOCKET.frame("hi") == b"\x81\x02hi"
    assert WEBSOCKET.frame(b"\x00") == b"\x82\x01\x00"


def test_a_group_splits_by_framing_only_while_its_members_differ() -> None:
    def client(number: int, framing: Any) -> Client:
        return Client(number, None, None, framing=framing)  # type: ignore[arg-type]

    group = Group(WEBSOCKET)
    one, two, sse = client(1, WEBSOCKET), client(2, WEBSOCKET), client(3, EVENT_STREAM)
    group.add(one)
    group.add(two)
    assert group.split is None and len(group) == 2
    group.add(sse)
    assert group.split == {WEBSOCKET: {1: one, 2: two}, EVENT_STREAM: {3: sse}}
    assert len(group) == 3  # a format's subscribers, whatever their framing
    assert group.discard(sse) and not group.discard(sse)
    assert group.split is None and group.framing is WEBSOCKET
    group.discard(one)
    group.discard(two)
    group.add(sse)
    assert group.split is None and group.framing is EVENT_STREAM


class FakeStream:
    """A stream that takes every write at once, recording it (no socket)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.transport = self
        self.on_writable: Callable[[], None] | None = None
        self.on_lost: Callable[[Any], None] | None = None

    def send_now(self, data: bytes) -> int:
        self.written.append(data)
        return len(data)

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def start(self, handler: Any, on_lost: Callable[[Any], None]) -> None:
        self.on_lost = on_lost

    def open(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    async def drain(self) -> None:
        pass

    def abort(self) -> None:
        pass

    async def close(self, code: int, reason: str = "") -> None:
        pass


async def test_two_formats_and_two_framings_build_each_frame_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Formats that give the same object share its frames across framings too."""
    built: list[str | bytes] = []
    real = engine._message
    monkeypatch.setattr(engine, "_message", lambda data: built.append(data) or real(data))
    text = "the same text"

    class Same(Raw):
        def encode(self, channel: str, publication: Any) -> str | bytes | None:
            self.encoded += 1
            return text

    hub = Hub()
    hub.start()
    events = CountingEvents()
    formats = [Same(), Same()]
    streams: list[FakeStream] = []
    for fmt in formats:
        for framing in (WEBSOCKET, events):
            stream = FakeStream()
            hub.join("room", hub.attach(stream, framing), fmt)
            streams.append(stream)
    assert publish(hub, "ignored", "room") == 4
    assert [fmt.encoded for fmt in formats] == [1, 1]
    assert built == [text] and events.framed == 1
    ws_frames = [streams[0].written[0], streams[2].written[0]]
    sse_events = [streams[1].written[0], streams[3].written[0]]
    assert ws_frames[0] is ws_frames[1] and sse_events[0] is sse_events[1]
    assert sse_events[0] == b"data: the same text\n\n"
    # A reply goes out in the client's own framing, on the direct path.
    sse_client = next(client for client in hub if client.connection is streams[1])
    assert hub.send(sse_client, "just you")
    assert streams[1].written[-1] == b"data: just you\n\n"
    for stream in streams:  # each stream ends: out of the channel
        assert stream.on_lost is not None
        stream.on_lost(stream)
    assert "room" not in hub.channels and len(hub) == 0
    await hub.close()


async def test_attach_needs_a_running_hub_and_releases_once_at_the_end() -> None:
    hub = Hub()
    with pytest.raises(HubClosed):
        hub.attach(FakeStream(), EVENT_STREAM)
    hub.start()
    released: list[int] = []
    stream = FakeStream()
    handler = Handler()
    client = hub.attach(stream, CHUNKED, lambda client: handler, release=lambda: released.append(1))
    assert client.handler is handler and client.direct is not None and len(hub) == 1
    assert stream.on_lost is not None
    stream.on_lost(stream)
    assert released == [1] and handler.ended and len(hub) == 0
    assert not hub.send(client, "too late")
    await hub.close()


# Over loopback TCP, beside real WebSocket clients -----------------------------------


@asynccontextmanager
async def hypercorn_app(tmp_path: Path, **settings: Any) -> AsyncIterator[tuple[Hub, int]]:
    """The app under Hypercorn in this test's loop, on an inherited listening socket."""
    app = create_app(tmp_path, settings=settings)
    bind, port = inherited_bind()
    config = Config()
    config.bind = [bind]
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await eventually(lambda: get_host(app).app.extensions.get("realtime_hub.hub") is not None)
        yield get_hub(get_host(app)), port
    finally:
        stop.set()
        await task


async def test_an_event_stream_beside_websockets_gets_each_publication_framed_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SSE streams and taken-over WebSockets in one channel and one format: the
    publication is encoded once, framed once per framing, and the same bytes are
    written straight to each subscriber of a framing."""
    built: list[str | bytes] = []
    real = engine._message
    monkeypatch.setattr(engine, "_message", lambda data: built.append(data) or real(data))
    async with hypercorn_app(tmp_path) as (hub, port):
        async with (
            connect(f"ws://127.0.0.1:{port}/ws") as ws_one,
            connect(f"ws://127.0.0.1:{port}/ws") as ws_two,
        ):
            await eventually(lambda: hub.subscribers("default") == 2)
            assert all(client.wire is not None for client in hub)  # taken over
            (raw,) = hub.channels["default"]  # the raw /ws format, shared
            framing = CountingEvents()
            async with event_streams(hub, "default", raw, framing=framing) as (sse_port, streams):
                readers = [await sse_client(sse_port) for _ in range(2)]
                await eventually(lambda: hub.subscribers("default") == 4)
                group = hub.channels["default"][raw]
                assert group.split is not None and set(group.split) == {WEBSOCKET, framing}
                assert all(client.direct is not None for _, client, _ in streams)

                frames: list[bytes] = []
                for stream, client, _ in streams:
                    real_send = stream.send_now

                    def spy(frame: bytes, real_send: Callable[[bytes], int] = real_send) -> int:
                        frames.append(frame)
                        return real_send(frame)

                    stream.send_now = spy  # type: ignore[method-assign]
                    hub._refresh(client)
                text = "hello\nworld"
                assert publish(hub, text) == 4
                assert built == [text] and framing.framed == 1
                assert len(frames) == 2 and frames[0] is frames[1]  # one bytes object for both
                assert await ws_one.recv() == text and await ws_two.recv() == text
                for reader in readers:
                    assert await read_events(reader, 1) == [text]
                    reader.close()
                await eventually(lambda: hub.subscribers("default") == 2)
                assert all(handler.ended for _, _, handler in streams)  # its end left the channel
        await eventually(lambda: len(hub) == 0)


async def test_an_event_stream_that_keeps_up_stays_on_the_direct_path() -> None:
    hub = Hub()
    hub.start()
    raw = Raw()
    async with event_streams(hub, "news", raw) as (port, streams):
        reader = await sse_client(port)
        await eventually(lambda: hub.subscribers("news") == 1)
        ((stream, client, _),) = streams
        sent = [f"{i}:" + "e" * 200 for i in range(100)]
        for text in sent:
            assert publish(hub, text, "news") == 1
        assert stream.direct_writes == 100 and raw.encoded == 100
        assert await read_events(reader, 100) == sent
        await eventually(lambda: client.direct is not None)
        reader.close()
        await eventually(lambda: len(hub) == 0)
    await hub.close()


async def stall(
    hub: Hub, port: int, streams: list[tuple[EventStream, Client, Handler]]
) -> tuple[socket.socket, EventStream, Client, Handler]:
    """A client that connects and does not read, its buffers small: past them, the
    hub's backlog and then the overflow policy take over."""
    sock = await sse_client(port, rcvbuf=4096)
    await eventually(lambda: len(streams) == 1)
    return (sock, *streams[0])


async def test_an_event_stream_that_stops_reading_is_closed_on_overflow() -> None:
    hub = Hub(max_buffer=64 * 1024, overflow="close")
    hub.start()
    raw = Raw()
    async with event_streams(hub, "default", raw, sndbuf=4096) as (port, streams):
        sock, stream, client, handler = await stall(hub, port, streams)
        try:
            counts = []
            for i in range(400):  # 400 KB: past the kernel's buffers and the hub's
                counts.append(publish(hub, f"{i:04d}" + "s" * 1000))
                await asyncio.sleep(0)
            assert counts[0] == 1 and counts[-1] == 0
            assert hub.stats.overflows == 1 and hub.stats.disconnected_slow == 1
            assert client.closing and client.direct is None  # nothing more goes to it
            # Closed after what its transport holds (or dropped after the close timeout).
            await eventually(lambda: handler.ended, timeout=5)
            assert not stream.open() and hub.subscribers("default") == 0 and len(hub) == 0
        finally:
            sock.close()
    await hub.close()


async def test_an_event_stream_that_stops_reading_loses_its_oldest_with_drop_oldest() -> None:
    hub = Hub(max_buffer=64 * 1024, overflow="drop-oldest")
    hub.start()
    raw = Raw()
    async with event_streams(hub, "default", raw, sndbuf=4096) as (port, streams):
        sock, _, client, handler = await stall(hub, port, streams)
        try:
            sent = [f"{i:04d}" + "d" * 1000 for i in range(400)]
            for text in sent:
                assert publish(hub, text) == 1
                await asyncio.sleep(0)
            assert client.direct is None and client.queue
            assert client.queued_bytes <= hub.backlog_limit
            assert hub.stats.dropped > 0 and sum(handler.dropped_counts) == hub.stats.dropped
            # Reading again, it gets what was kept, in order, the newest last.
            kept = len(sent) - hub.stats.dropped
            events = await read_events(sock, kept)
            numbers = [int(event[:4]) for event in events]
            assert numbers == sorted(numbers) and numbers[-1] == 399
            await eventually(lambda: client.direct is not None)  # caught up: direct again
            assert not handler.ended
        finally:
            sock.close()
        await eventually(lambda: handler.ended)
        assert hub.subscribers("default") == 0
    await hub.close()


def test_the_websocket_socket_is_a_stream() -> None:
    """The taken-over WebSocket satisfies the protocol by the names the hub uses."""
    from realtime_hub.fastpath import Socket

    names = ("send_now", "on_writable", "transport", "start", "open", "writable", "drain")
    assert all(hasattr(Socket, name) for name in (*names, "abort", "close"))
    assert {name for name in dir(Stream) if not name.startswith("_")} <= set(dir(Socket))
