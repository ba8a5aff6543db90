"""A long HTTP response the hub writes to itself: an event stream, an HTTP-streaming body.

A transport that answers a request with a body that never ends (Server-Sent Events,
Centrifuge's HTTP streaming) opens it with :func:`open_response` and hands the
:class:`ResponseStream` to :meth:`.Hub.attach`: publications then take the fan-out's
fast path, bounded and policed as a WebSocket's are.

Under Hypercorn over HTTP/1.1 the response is taken over as a WebSocket is
(:func:`realtime.internals.hypercorn.take_over_response`, the fence): the head is
written on Hypercorn's behalf and the transport becomes this stream's, a chunked
body written straight to the socket, with no task and no ASGI call per message.
Elsewhere (HTTP/2, another server, a Hypercorn the fence does not know) the body
goes out through ASGI ``send``, from a buffer that stands in for the transport and
pauses at the same mark, so the same bounds hold; the ASGI call then lasts as long
as the stream (:meth:`ResponseStream.run`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from realtime.internals import asyncio as asyncio_internals
from realtime.internals import hypercorn as hypercorn_internals

from .connection import Handler, Receive, Send
from .stream import CHUNKED, EVENT_STREAM, Framing

log = logging.getLogger("realtime.hub")

#: What a client may send on a response connection before it is dropped: nothing is
#: expected (a pipelined request would never be answered), so this is slack only.
MAX_STRAY_BYTES = 4096
#: The headers every long response carries: no proxy buffers or caches it.
STREAM_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"cache-control", b"private, no-cache, no-store, must-revalidate, max-age=0"),
    (b"pragma", b"no-cache"),
    (b"expires", b"0"),
    (b"x-accel-buffering", b"no"),
)
#: The methods the fence needs of a transport it hands over.
RESPONSE_METHODS = (
    "write",
    "get_write_buffer_size",
    "is_closing",
    "abort",
    "close",
    "pause_reading",
    "resume_reading",
    "set_write_buffer_limits",
)
#: The terminating chunk of a chunked body.
LAST_CHUNK = b"0\r\n\r\n"


class _Lines:
    """A message then a newline (newline-delimited JSON, as Centrifuge streams it)."""

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        return (data.encode() if isinstance(data, str) else data) + b"\n"


class _Bare:
    """The message's bytes as they are (a protobuf stream carries its own lengths)."""

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        return data.encode() if isinstance(data, str) else data


class _Chunked:
    """Another framing's bytes as one chunk of a chunked body."""

    __slots__ = ("inner",)

    def __init__(self, inner: Framing) -> None:
        self.inner = inner

    def frame(self, data: str | bytes) -> bytes:
        return CHUNKED.frame(self.inner.frame(data))


@dataclass(frozen=True, eq=False, slots=True)
class BodyFraming:
    """How messages go into one kind of response body: ``plain`` when Hypercorn writes
    the body (it chunks it), ``chunked`` when the stream writes it itself. One object
    per kind, shared: the hub groups subscribers by the framing object."""

    plain: Framing
    chunked: Framing


#: Newline-delimited messages (Centrifuge's HTTP streaming, JSON).
LINES = BodyFraming(_Lines(), _Chunked(_Lines()))
#: Messages as they are (Centrifuge's HTTP streaming, protobuf).
BARE = BodyFraming(_Bare(), CHUNKED)
#: Server-Sent Events (``data:`` lines).
EVENTS = BodyFraming(EVENT_STREAM, _Chunked(EVENT_STREAM))


class _ASGIBody:
    """Stands in for the transport while the response stays on ASGI.

    Holds what was written, sends it with ``http.response.body`` a batch at a time
    from one task, and tells its stream to pause while it holds more than its mark,
    as an asyncio transport does: the hub's bounds see what it holds.
    """

    __slots__ = ("_buffer", "_closing", "_high", "_paused", "_send", "_size", "_stream", "_task")

    def __init__(self, send: Send, stream: ResponseStream, high_water: int) -> None:
        self._send = send
        self._stream = stream
        self._high = high_water
        self._buffer: list[bytes] = []
        self._size = 0
        self._paused = False
        self._closing = False
        self._task: asyncio.Task[None] | None = None

    def write(self, data: bytes) -> None:
        if self._closing or not data:
            return
        self._buffer.append(data)
        self._size += len(data)
        if not self._paused and self._size > self._high:
            self._paused = True
            self._stream.pause_writing()
        self._wake()

    def get_write_buffer_size(self) -> int:
        return self._size

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """End the body after what it holds."""
        if not self._closing:
            self._closing = True
            self._wake()

    def abort(self) -> None:
        self._closing = True
        self._buffer.clear()
        self._size = 0
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
        self._stream.connection_lost(None)

    def _wake(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._flush())

    async def _flush(self) -> None:
        send = self._send
        failed: Exception | None = None
        try:
            while self._buffer:
                batch = b"".join(self._buffer)
                self._buffer.clear()
                await send({"type": "http.response.body", "body": batch, "more_body": True})
                self._size -= len(batch)
                if self._paused and self._size <= self._high:
                    self._paused = False
                    self._stream.resume_writing()
            if self._closing:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the peer went away under the send
            failed = exc
        finally:
            self._task = None
        if failed is not None or self._closing:
            self._closing = True
            self._stream.connection_lost(failed)
        elif self._buffer:
            self._wake()


class ResponseStream(asyncio.Protocol):
    """A long response body the hub writes to: a :class:`.Stream`.

    Taken over, it is the connection's asyncio protocol (high-water mark 0 when it
    sends on the socket itself, as :class:`.takeover.Socket`); on ASGI, its transport is
    a buffer sent through ``send``. Either way ``on_writable`` hears every change of
    :meth:`writable`. The client sends nothing on it: what arrives is dropped (past
    :data:`MAX_STRAY_BYTES`, so is the connection); its end is the stream's end.
    ``farewell(code, reason)`` gives the protocol's last message (a disconnect push),
    framed and written before the body ends.
    """

    __slots__ = (
        "_drained",
        "_ended",
        "_lost",
        "_on_lost",
        "_paused",
        "_stray",
        "chunked",
        "farewell",
        "framing",
        "handler",
        "on_writable",
        "send_now",
        "state_open",
        "transport",
    )

    def __init__(
        self, framing: Framing, farewell: Callable[[int, str], str | bytes | None] | None
    ) -> None:
        self.framing = framing
        self.farewell = farewell
        self.chunked = False
        self.transport: Any = None
        self.send_now: Callable[[bytes], int] = self._write
        self.on_writable: Callable[[], None] | None = None
        self.handler: Handler | None = None
        self.state_open = True
        self._paused = False
        self._lost = False
        self._stray = 0
        self._on_lost: Callable[[Any], None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def _write(self, frame: bytes) -> int:
        self.transport.write(frame)
        return len(frame)

    # The hub's side ---------------------------------------------------------------

    def start(self, handler: Handler | None, on_lost: Callable[[Any], None]) -> None:
        self.handler = handler
        if self._lost:
            on_lost(self)
        else:
            self._on_lost = on_lost

    def open(self) -> bool:
        return self.state_open

    def writable(self) -> bool:
        return self.state_open and not self._paused

    async def drain(self) -> None:
        if self._paused and not self._lost:
            if self._drained is None or self._drained.done():
                self._drained = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._drained)

    def abort(self) -> None:
        self.state_open = False
        self._changed()
        self.transport.abort()

    async def close(self, code: int, reason: str = "") -> None:
        """The protocol's farewell after what the body holds, then its end."""
        if self.state_open:
            self.state_open = False
            self._changed()
            transport = self.transport
            if not transport.is_closing():
                last = self.farewell(code, reason) if self.farewell is not None else None
                if last:
                    transport.write(self.framing.frame(last))
                if self.chunked:
                    transport.write(LAST_CHUNK)
                transport.close()
        await asyncio.shield(self._ended)

    async def run(self, receive: Receive) -> None:
        """Keep the ASGI call for as long as the stream lasts, when on ASGI (hearing the
        client leave); returns at once when taken over (Hypercorn unwinds)."""
        if self.chunked:
            return
        listening = asyncio.get_running_loop().create_task(_disconnected(receive))
        try:
            await asyncio.wait((listening, self._ended), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listening.cancel()
        if not self._ended.done():  # the client left
            self.transport.abort()

    def _changed(self) -> None:
        notify = self.on_writable
        if notify is not None:
            notify()

    # asyncio's side (or the ASGI buffer's) --------------------------------------------

    def data_received(self, data: bytes) -> None:
        self._stray += len(data)
        if self._stray > MAX_STRAY_BYTES and self.transport is not None:
            self.abort()

    def eof_received(self) -> bool:
        self.state_open = False  # the client is gone: nothing it would read
        self._changed()
        return False

    def pause_writing(self) -> None:
        self._paused = True
        self._changed()

    def resume_writing(self) -> None:
        self._paused = False
        self._changed()
        waiter, self._drained = self._drained, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self.state_open = False
        self._changed()
        self.on_writable = None  # the hub's client refers to this stream: no cycle kept
        self.resume_writing()
        if not self._ended.done():
            self._ended.set_result(None)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(self)
        self.handler = None


async def _disconnected(receive: Receive) -> None:
    while True:
        message = await receive()
        if message.get("type") == "http.disconnect":
            return


async def open_response(
    send: Send,
    *,
    framing: BodyFraming,
    headers: Sequence[tuple[bytes, bytes]] = (),
    high_water: int,
    farewell: Callable[[int, str], str | bytes | None] | None = None,
    preamble: bytes = b"",
    take_over: bool = True,
) -> ResponseStream:
    """Answer a request (its body fully received) with a 200 whose body is a stream.

    ``headers`` are the response's own (content type, CORS); :data:`STREAM_HEADERS`
    are added. ``preamble`` is the body's first bytes (as they are, framed only by the
    chunking). Taken over where the fence allows (the stream's ``framing`` is then
    ``framing.chunked``), else on ASGI (``framing.plain``): attach it to the hub with
    ``stream.framing``, then ``await stream.run(receive)``. ``high_water`` is what the
    transport may hold before the stream stops being written to directly, where it
    cannot send on the socket itself (the hub's ``direct_limit``). ``take_over``
    False keeps it on ASGI (the hub's ``fast_path`` off).
    """
    all_headers = [*headers, *STREAM_HEADERS]
    stream = ResponseStream(framing.chunked, farewell)

    def make(transport: Any) -> tuple[ResponseStream, int]:
        stream.transport = transport
        stream.chunked = True
        sender = asyncio_internals.socket_send(transport)
        if sender is not None:
            stream.send_now = sender
            return stream, 0
        return stream, high_water

    head = b"HTTP/1.1 200 \r\n%stransfer-encoding: chunked\r\nconnection: close\r\n" % b"".join(
        b"%s: %s\r\n" % pair for pair in all_headers
    )
    taken = (
        hypercorn_internals.take_over_response(send, head, RESPONSE_METHODS, make)
        if take_over
        else None
    )
    if taken is not None:
        if preamble:
            stream.transport.write(CHUNKED.frame(preamble))
        return stream
    stream.framing = framing.plain
    stream.transport = _ASGIBody(send, stream, high_water)
    with contextlib.suppress(Exception):
        await send({"type": "http.response.start", "status": 200, "headers": all_headers})
        if preamble:
            await send({"type": "http.response.body", "body": preamble, "more_body": True})
    return stream


__all__ = [
    "BARE",
    "EVENTS",
    "LINES",
    "STREAM_HEADERS",
    "BodyFraming",
    "ResponseStream",
    "open_response",
]
