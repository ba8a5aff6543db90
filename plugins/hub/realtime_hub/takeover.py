"""A WebSocket read and written by the hub alone, once Hypercorn has done the handshake.

An ASGI ``websocket.send`` costs, per client and per message, a chain of awaits
(ASGI → Hypercorn → wsproto → h11 → ``writer.drain()``). Broadcasting the same
message to thousands of clients does not need any of that: the frame is the same
bytes for every connection without per-message compression, so it is encoded once
and appended to each connection's transport, which coalesces a backlog into one
``send()`` by itself. And reading a client needs no task, stream reader, h11 or
wsproto either: :class:`Socket` becomes the transport's protocol and parses the
frames itself (:class:`.frames.FrameParser`).

:func:`take_over` gets the transport through the fence (:mod:`realtime.internals`,
the only place beneath Hypercorn's and asyncio's public APIs): for WebSockets over
HTTP/1.1 under Hypercorn 0.17 or 0.18 with the asyncio or uvloop worker. Elsewhere
(HTTP/2 WebSockets, trio, another server, a Hypercorn the fence does not know) it
returns ``None`` and the hub sends through ASGI instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from realtime.internals import asyncio as asyncio_internals
from realtime.internals import hypercorn as hypercorn_internals

from .closecode import CloseCode
from .connection import Handler
from .frames import (
    OP_CLOSE,
    OP_PONG,
    Binary,
    Close,
    Failure,
    FrameParser,
    Ping,
    Text,
    close_payload,
    control_frame,
    encode_frame,
)
from .guard import GUARD_METHODS, GuardTransport, IncomingLimits, drop

log = logging.getLogger("realtime.hub")

#: Connection states of a taken-over socket.
OPEN, CLOSING, CLOSED = 0, 1, 2


def _sender(transport: Any) -> tuple[Callable[[bytes], int], bool]:
    """What writes a frame at once while the transport holds nothing back, and whether
    it is the socket's own ``send``: so under asyncio's selector loop (a C call, no
    Python frame per client of a fan-out); else the transport's ``write``, which takes
    it all (TLS, uvloop). It returns the bytes sent; the caller hands the rest to the
    transport."""
    send_now = asyncio_internals.socket_send(transport)
    if send_now is not None:
        return send_now, True
    write = transport.write

    def send(frame: bytes) -> int:
        write(frame)
        return len(frame)

    return send, False


class Socket(FrameParser, asyncio.Protocol):
    """A WebSocket read and written here alone, once the handshake is done.

    The connection's asyncio protocol: it parses the client's frames
    (:class:`.frames.FrameParser`), answers pings and the close handshake as RFC 6455
    says, and hands each message to the protocol plugin's :class:`.connection.Handler`.
    When the handler returns an awaitable, reading pauses until it is done, so a
    client's messages are handled one at a time and in order. No task, queue or timer
    of its own: what a connection costs is this object, its transport and its socket.

    It is also the hub's :class:`.connection.Connection` and its fast-path wire. The
    transport's high-water mark is zero (:func:`take_over`): it pauses writing as soon as
    it holds anything back, so while :meth:`writable`, a frame may go to ``send_now``
    (the socket itself) without overtaking a byte; ``on_writable`` hears every change.
    """

    __slots__ = (
        "_busy",
        "_drain_waiter",
        "_held_back",
        "_lost",
        "_on_lost",
        "_paused",
        "_pong",
        "_waiters",
        "client",
        "ended",
        "handler",
        "on_writable",
        "pinged_at",
        "send_now",
        "sends_itself",
        "state",
        "transport",
    )

    def __init__(self, transport: Any, limits: IncomingLimits, client: int) -> None:
        super().__init__(limits)
        self.transport: GuardTransport = transport
        self.client = client
        self.handler: Handler | None = None
        #: When the keepalive pinged it and has heard nothing since; None otherwise.
        self.pinged_at: float | None = None
        self.state = OPEN
        self._busy = True  # nothing is handed over before start()
        self._paused = False  # writing, by the transport's flow control
        #: The latest ping's payload, unanswered while writing is paused (RFC 6455
        #: §5.5.3 allows answering only the latest): a client that pings but does not
        #: read costs one pong at most, not one per ping.
        self._pong: bytes | None = None
        #: Reading paused because too much arrived while its handler was busy.
        self._held_back = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] | None = None
        self._on_lost: Callable[[Socket], None] | None = None
        self._lost = False
        #: How it ended when the client or this socket decided it (code, reason): the
        #: client's close frame, a refusal, a silent peer dropped; read by the hub's census.
        self.ended: tuple[int, str] | None = None
        #: ``send_now`` sends a frame now, returning the bytes sent (only while
        #: :meth:`writable`); ``sends_itself`` when that is the socket's own ``send``,
        #: for which the transport must hold nothing back.
        self.send_now, self.sends_itself = _sender(transport)
        #: Called when :meth:`writable` may have changed (the hub's direct writes).
        self.on_writable: Callable[[], None] | None = None

    def start(self, handler: Handler | None, on_lost: Callable[[Socket], None]) -> None:
        """Begin handing messages to ``handler``; ``on_lost`` once the connection ends."""
        self.handler = handler
        self._on_lost = on_lost
        if self._lost:  # gone during the setup
            self._on_lost = None
            on_lost(self)
            return
        self._busy = False
        self._process()

    # The hub's side ---------------------------------------------------------------

    def open(self) -> bool:
        """True while data frames may still be sent (no close frame either way yet).

        ``state == OPEN`` says the same (every way a transport closes goes through a
        state change first): the hub's fan-out reads that, one lookup per delivery.
        """
        return self.state == OPEN

    def writable(self) -> bool:
        """Open, and the transport holds nothing back: :attr:`send_now` may write."""
        return self.state == OPEN and not self._paused

    def _changed(self) -> None:
        notify = self.on_writable
        if notify is not None:
            notify()

    async def drain(self) -> None:
        """Wait until the transport's buffer is below its high-water mark again."""
        if self._paused and self.state != CLOSED:
            waiter = self._drain_waiter
            if waiter is None:
                waiter = self._drain_waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(waiter)

    def abort(self) -> None:
        """Drop the TCP connection at once, discarding what the peer never read."""
        self.state = CLOSED
        self._changed()
        self.transport.abort()

    async def accept(self) -> None:
        """Done already: the takeover wrote the handshake response."""

    async def receive(self) -> Any:
        raise RuntimeError("a taken-over socket hands messages to its handler")

    async def send(self, data: str | bytes) -> None:
        if self.open():
            if isinstance(data, str):
                self.transport.write(encode_frame(data.encode(), text=True))
            else:
                self.transport.write(encode_frame(data, text=False))

    async def close(self, code: int, reason: str = "") -> None:
        """Send the close frame (after what the transport holds) and wait for the end.

        The end is the client's close frame, answered by closing the TCP connection,
        or the connection dropping. The caller bounds the wait and aborts after it.
        """
        if self.state == OPEN:
            self.state = CLOSING
            self._changed()
            if not self.transport.is_closing():
                self.transport.write(control_frame(OP_CLOSE, close_payload(code, reason)))
        if self._lost:
            return
        if self._held_back and self.state == CLOSING and not self.transport.is_closing():
            # Closed from within its handler: the client's close frame must still be read.
            self._held_back = False
            self.transport.resume_reading()
        waiter = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        await waiter

    # asyncio's side ---------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if not self._paused:  # a client that takes nothing is not answering by sending
            self.pinged_at = None
        if self.state == CLOSED:
            return  # refused or done: nothing more is parsed
        self.feed(data)
        if not self._busy or self.state == CLOSING:  # closing: no handler is called
            self._process()
        elif not self._held_back and self.buffered > self._limits.max_size:
            # The handler is still at an earlier message: what comes meanwhile waits
            # in the buffer, up to a largest message; past that, in the kernel's.
            self._held_back = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        self.state = CLOSED  # the client half-closed without a close frame: so do we
        self._changed()
        return False

    def pause_writing(self) -> None:
        self._paused = True
        self._changed()

    def resume_writing(self) -> None:
        self._paused = False
        self.pinged_at = None  # it took what was held back: alive
        pong, self._pong = self._pong, None
        if pong is not None and self.state == OPEN:
            self.transport.write(control_frame(OP_PONG, pong))
        self._changed()
        self._wake_drain()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self.state = CLOSED
        self._changed()
        self.on_writable = None  # the hub's client refers to this socket: no cycle kept
        self._busy = True
        self.discard()
        self._wake_drain()
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        on_lost, self._on_lost = self._on_lost, None
        if on_lost is not None:
            on_lost(self)
        self.handler = None  # it refers to the hub's client, which refers to this socket

    def _wake_drain(self) -> None:
        waiter, self._drain_waiter = self._drain_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # Frames -----------------------------------------------------------------------

    def _process(self) -> None:
        """Handle the frames received so far, until one makes the handler wait."""
        transport = self.transport
        while self.state != CLOSED:
            try:
                event = self.next_event()
            except Failure as failure:
                self._fail(failure)
                return
            if event is None:
                return
            kind = type(event)
            if kind is Text or kind is Binary:
                handler = self.handler
                if self.state != OPEN or handler is None:
                    continue  # after our close frame, data is read and dropped (RFC 6455)
                try:
                    pending = handler.received(event.data)  # type: ignore[arg-type]  # Text or Binary
                except Exception:
                    log.exception("client %d: its message handler failed", self.client)
                    self._fail(Failure(CloseCode.INTERNAL_ERROR, "internal error"))
                    return
                if pending is not None:
                    # Later frames wait in the buffer meanwhile (data_received bounds it):
                    # no pause and resume, two system calls, for every awaited message.
                    self._busy = True
                    asyncio.get_running_loop().create_task(self._finish(pending))
                    return
            elif isinstance(event, Ping):
                if self._paused:
                    self._pong = event.data
                elif self.state == OPEN:
                    transport.write(control_frame(OP_PONG, event.data))
            elif isinstance(event, Close):
                code = event.data.code
                if self.ended is None:
                    self.ended = (code, event.data.reason)
                if self.state == OPEN:  # the client's close: answered with its code
                    echo = b"" if code == CloseCode.NO_STATUS else close_payload(code)
                    transport.write(control_frame(OP_CLOSE, echo))
                self.state = CLOSED
                self._changed()
                transport.close()  # the server closes TCP first, once the frame is out
                return

    async def _finish(self, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            log.exception("client %d: its message handler failed", self.client)
            self._fail(Failure(CloseCode.INTERNAL_ERROR, "internal error"))
        if self.state == CLOSED:
            return
        self._busy = False
        if self._held_back:
            self._held_back = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
        self._process()

    def _fail(self, failure: Failure) -> None:
        """Close with the failure's code: no more parsing, the socket dropped after a grace.

        As :meth:`IncomingGuard._refuse`: a FIN follows the close frame rather than a
        close, which would reset a connection with unread bytes, the frame included.
        """
        if failure.limit:
            self._limits.report(self.client, failure.reason, failure.code)
        else:
            log.debug("client %d: %s; closing with %d", self.client, failure.reason, failure.code)
        if self.ended is None:
            self.ended = (failure.code, failure.reason)
        state, self.state = self.state, CLOSED
        self._changed()
        self.discard()
        transport = self.transport
        if transport.is_closing():
            return
        transport.pause_reading()
        if state == OPEN:
            transport.write(control_frame(OP_CLOSE, close_payload(failure.code, failure.reason)))
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS: no half-close
            transport.close()
        asyncio.get_running_loop().call_later(self._limits.close_timeout, drop, transport)


def take_over(
    asgi_send: Any,
    limits: IncomingLimits,
    client: int,
    high_water: int,
    subprotocol: str | None = None,
) -> Socket | None:
    """Accept the handshake on Hypercorn's behalf and take the socket away from it.

    Call instead of sending ``websocket.accept``, after ``websocket.connect`` was
    received, with compression declined. Writes the 101 response (naming
    ``subprotocol`` if given), makes a
    :class:`Socket` the transport's protocol, and lets Hypercorn unwind its
    per-connection machinery (:func:`realtime.internals.hypercorn.take_over`).
    ``None`` where this cannot be done (not Hypercorn over HTTP/1.1, an extension
    negotiated, the peer gone, the fence said no): then accept through ASGI.
    """

    def make(transport: Any) -> tuple[Socket, int]:
        sock = Socket(transport, limits, client)
        # Sending on the socket itself, paused as soon as it holds anything back. Else
        # (TLS, uvloop: TLS pauses at a mark of 0 even when empty) at ``high_water``, so
        # the transport holds no more than it did when the hub asked for its size.
        return sock, 0 if sock.sends_itself else high_water

    taken = hypercorn_internals.take_over(asgi_send, GUARD_METHODS, make, subprotocol)
    if taken is None:
        return None
    sock, early = taken
    if early:  # a client may not send before the 101: parsed anyway
        sock.feed(early)
    return sock
