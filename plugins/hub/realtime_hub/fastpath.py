"""Direct frame writes to Hypercorn's transport: the one module that reaches below ASGI.

An ASGI ``websocket.send`` costs, per client and per message, a chain of awaits
(ASGI → Hypercorn → wsproto → h11 → ``writer.drain()``). Broadcasting the
same message to thousands of clients does not need any of that: the frame is the
same bytes for every connection without per-message compression, so it is encoded
once and appended to each connection's transport, which coalesces a backlog into
one ``send()`` by itself.

Supported: Hypercorn 0.17 and 0.18 (the range pinned in ``pyproject.toml``: the whole
suite runs on 0.18.0, the fast-path, order and slow-client tests passed on 0.17.3,
and a slow-client test failed on 0.16.0), WebSockets
over HTTP/1.1 with the asyncio or uvloop worker. Where the objects below are not what
this module expects (HTTP/2 WebSockets, trio, another server, another Hypercorn),
:func:`attach` returns ``None`` and the hub sends through ASGI instead.

It also guards what a client sends (:func:`guard`), in every mode: Hypercorn buffers a
message before checking its size, keeps reading a client after refusing it with 1009,
lets wsproto inflate a compressed frame without bound, and answers every ping however
many come. :class:`IncomingGuard` takes the place of the connection's wsproto object
in Hypercorn's stream, so it sees every frame first; where it cannot be installed,
Hypercorn's own size check is all there is.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
import time
import zlib
from asyncio import selector_events
from collections.abc import Awaitable, Callable, Iterator
from contextlib import suppress
from typing import Any, Protocol

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.utilities import LocalProtocolError, generate_accept_token

from realtime import LogThrottle

from .connection import Handler
from .frames import (
    CLOSE_NO_STATUS,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Failure,
    FrameParser,
    close_payload,
    control_frame,
)

try:  # Only the names; nothing here runs at import.
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.ws_stream import WSStream
except ImportError:  # pragma: no cover - a Hypercorn without these modules
    TCPServer = H11Protocol = WSStream = None  # type: ignore[assignment, misc]

log = logging.getLogger("realtime.hub")

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
FIN = 0x80
#: RFC 6455 "policy violation": too many frames.
CLOSE_POLICY_VIOLATION = 1008
#: RFC 6455 "message too big".
CLOSE_TOO_BIG = 1009
#: RFC 6455 "internal error".
CLOSE_INTERNAL_ERROR = 1011


def encode_frame(payload: bytes, text: bool) -> bytes:
    """One unmasked, unfragmented server frame (RFC 6455 §5.2), RSV bits clear."""
    first = FIN | (OPCODE_TEXT if text else OPCODE_BINARY)
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class Transport(Protocol):
    """What the hub needs of a transport; asyncio's and uvloop's both qualify."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


_TRANSPORT_METHODS = ("write", "get_write_buffer_size", "is_closing", "abort")
#: What the guard and a taken-over socket need besides: flow control and the ends.
_GUARD_METHODS = (
    *_TRANSPORT_METHODS,
    "pause_reading",
    "resume_reading",
    "is_reading",
    "set_protocol",
    "set_write_buffer_limits",
    "can_write_eof",
    "write_eof",
    "close",
)


def _stream(asgi_send: Any) -> Any:
    """Hypercorn's ``WSStream`` behind an ASGI ``send`` (it is ``WSStream.app_send``), or None."""
    stream = getattr(asgi_send, "__self__", None)
    if WSStream is None or not isinstance(stream, WSStream):
        return None
    return stream


def _locate(asgi_send: Any) -> tuple[Any, Any] | None:
    """The ``WSStream`` and its ``TCPServer``, for WebSockets over HTTP/1.1 under asyncio."""
    stream = _stream(asgi_send)
    if stream is None:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # WebSockets over HTTP/2 multiplex streams: no transport of their own
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer):
        return None
    return stream, server


def decline_compression(asgi_send: Any) -> None:
    """Before the handshake is accepted: drop the permessage-deflate offer, if any.

    Without it Hypercorn accepts compression whenever a client offers it, in either
    fan-out mode. Does nothing outside Hypercorn.
    """
    stream = _stream(asgi_send)
    if stream is not None:
        stream.handshake.extensions = None


# What a client may send ---------------------------------------------------------


class IncomingLimits:
    """What any one client may send. One per hub, shared by all its guards.

    ``rate`` frames a second (every kind: data, continuation, ping, pong, close),
    with bursts of up to ``burst`` frames at once; 0 turns the rate limit off.
    ``max_size`` bounds a message in bytes: UTF-8 for text, inflated when compressed.
    """

    __slots__ = (
        "_log",
        "burst",
        "close_timeout",
        "interval",
        "max_size",
        "rate",
        "refused",
        "window",
    )

    def __init__(
        self, max_size: int, rate: int = 0, burst: int | None = None, close_timeout: float = 1.0
    ) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        if rate < 0:
            raise ValueError("rate must be 0 (no limit) or positive")
        self.max_size = max_size
        self.rate = rate
        self.burst = max(1, rate if burst is None else burst)
        self.close_timeout = close_timeout
        # A virtual-time token bucket (GCRA): each frame moves the client's clock on by
        # ``interval``; a clock more than ``window`` ahead of now is over the budget.
        # Half a frame of slack absorbs float rounding at exactly ``burst`` frames.
        self.interval = 1.0 / rate if rate else 0.0
        self.window = (self.burst + 0.5) * self.interval
        #: Clients refused so far.
        self.refused = 0
        self._log = LogThrottle()

    def report(self, client: int, what: str, code: int) -> None:
        """One warning per refused client, at most one per interval overall.

        An attacker that reconnects as fast as it is refused gets a line now and
        then with the count of the others, not a line each.
        """
        self.refused += 1
        held = self._log.allow("refused")
        if held is not None:
            more = f" ({held} more client(s) refused in the meantime)" if held else ""
            log.warning("client %d sent %s: closed with %d%s", client, what, code, more)


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates no more than what is left of the message's budget.

    wsproto inflates a frame's payload in one call, so 200 KB on the wire became
    200 MiB in memory before any size check ran. Here every call is capped at
    ``room`` (kept current by the guard) plus one byte; getting that byte fails the
    frame with 1009. Connections get this class by swapping ``__class__`` on the
    instance Hypercorn negotiated, which keeps its state and every list holding it.
    """

    #: Bytes the message under assembly may still grow by; -1 once it went past.
    room: int

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        # The tail every compressed message lost on the wire. No flush() after it: a
        # capped decompress that stopped short of the cap has consumed all its input.
        data = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(data, CloseReason):
            return data
        if proto.client:
            no_context_takeover = self.server_no_context_takeover
        else:
            no_context_takeover = self.client_no_context_takeover
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None  # frame_inbound_header made it for this message
        room = self.room
        try:
            inflated = decompressor.decompress(data, max(room, 0) + 1)  # 0 would mean no cap
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(inflated) > room:
            self.room = -1
            return CloseReason.MESSAGE_TOO_BIG
        self.room = room - len(inflated)
        return inflated


class GuardTransport(Transport, Protocol):
    """What the guard does to a socket it refuses: stop reading, half-close, drop."""

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...
    def is_reading(self) -> bool: ...
    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None: ...
    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None: ...
    def can_write_eof(self) -> bool: ...
    def write_eof(self) -> None: ...
    def close(self) -> None: ...


class IncomingGuard:
    """Stands in for a connection's wsproto ``Connection`` inside Hypercorn's ``WSStream``.

    Hypercorn hands every byte it reads to ``receive_data`` and takes the frames from
    ``events()``. In between, the guard counts frames against the rate and a message's
    bytes against the size limit, before Hypercorn buffers anything. A client past
    either is refused (:meth:`_refuse`) and nothing more of it is parsed. Eight
    slots, about 100 bytes a connection; no task, no timer until a refusal.
    """

    __slots__ = ("_client", "_deflate", "_inner", "_limits", "_server", "_size", "_tat", "refused")

    def __init__(
        self,
        inner: Connection,
        server: Any,  # hypercorn.asyncio.tcp_server.TCPServer
        limits: IncomingLimits,
        client: int,
        deflate: BoundedDeflate | None,
    ) -> None:
        self._inner = inner
        self._server = server
        self._limits = limits
        self._client = client
        self._deflate = deflate
        self._size = 0  # bytes of the message under assembly
        self._tat = 0.0  # the rate limit's virtual clock
        self.refused = False

    @property
    def state(self) -> ConnectionState:
        return self._inner.state

    def send(self, event: Event) -> bytes:
        return self._inner.send(event)

    def receive_data(self, data: bytes | None) -> None:
        if not self.refused:  # a refused client's bytes are dropped unparsed
            self._inner.receive_data(data)

    def events(self) -> Iterator[Event]:
        """wsproto's events for what was just received, up to the first one over a limit.

        Hypercorn calls this once per read, so every frame in it arrived at one time.
        """
        if self.refused:
            return
        limits = self._limits
        max_size = limits.max_size
        deflate = self._deflate
        size = self._size
        rate = limits.rate
        tat = horizon = 0.0
        if rate:
            now = time.monotonic()
            tat = max(self._tat, now)
            horizon = now + limits.window
        for event in self._inner.events():
            if isinstance(event, Message):
                data = event.data
                size += (
                    len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
                )
                if size > max_size:
                    self._refuse(CLOSE_TOO_BIG, f"a message over {max_size} bytes")
                    return
                if event.message_finished:
                    size = 0
                self._size = size
                if deflate is not None:
                    deflate.room = max_size - size
                if not event.frame_finished:
                    yield event  # a frame arriving in pieces counts once, when it ends
                    continue
            elif isinstance(event, CloseConnection) and deflate is not None and deflate.room < 0:
                # wsproto's report of the 1009 BoundedDeflate returned.
                self._refuse(CLOSE_TOO_BIG, f"a message inflating past {max_size} bytes")
                return
            if rate:
                tat += limits.interval
                if tat > horizon:
                    self._refuse(
                        CLOSE_POLICY_VIOLATION,
                        f"over {rate} frames a second (bursts of {limits.burst})",
                    )
                    return
                self._tat = tat
            yield event

    def _refuse(self, code: int, what: str) -> None:
        """Stop reading, send the close frame, and drop the connection after a grace time.

        The close frame is followed by a FIN (``write_eof``) rather than a close: closing
        a socket with unread bytes, which a flooding client always leaves, makes the
        kernel send a reset and discard whatever it had not sent yet, the close frame
        included. The socket is aborted ``close_timeout`` later, taken or not.
        """
        self.refused = True
        self._limits.report(self._client, what, code)
        server = self._server
        transport: GuardTransport = server.writer.transport
        if transport.is_closing():
            return  # on its way out already
        transport.pause_reading()
        reader = server.reader
        if getattr(reader, "_paused", False):
            # asyncio's StreamReader had paused the socket for its own buffer's sake and
            # would resume it once Hypercorn read that buffer: make it forget.
            reader._paused = False
        with suppress(LocalProtocolError):  # if not, a close frame went out already
            transport.write(self._inner.send(CloseConnection(code=code, reason=what)))
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS: no half-close
            transport.close()
        loop = asyncio.get_running_loop()
        loop.call_later(self._limits.close_timeout, _drop, transport)


def _drop(transport: GuardTransport) -> None:
    """End a refused client's connection, unless it is closed (or closing, all sent)."""
    if not transport.is_closing() or transport.get_write_buffer_size():
        transport.abort()


def guard(asgi_send: Any, limits: IncomingLimits, client: int) -> IncomingGuard | None:
    """Put an :class:`IncomingGuard` in front of a Hypercorn connection's wsproto object.

    Call once the handshake is accepted (Hypercorn parses no frame before that).
    Applies whatever the fan-out mode and with compression. Returns ``None`` where
    the objects are not Hypercorn's over HTTP/1.1 (Hypercorn's own size check applies).
    """
    located = _locate(asgi_send)
    if located is None:
        return None
    stream, server = located
    inner = getattr(stream, "connection", None)
    transport = server.writer.transport
    if not isinstance(inner, Connection) or not all(
        hasattr(transport, name) for name in _GUARD_METHODS
    ):
        return None
    deflate = None
    for extension in getattr(getattr(inner, "_proto", None), "extensions", ()):
        if type(extension) is PerMessageDeflate:  # the negotiated (enabled) one
            extension.__class__ = BoundedDeflate
            assert isinstance(extension, BoundedDeflate)
            extension.room = limits.max_size
            deflate = extension
    incoming = IncomingGuard(inner, server, limits, client, deflate)
    stream.connection = incoming
    return incoming


# Taking a connection over -------------------------------------------------------

#: Connection states of a taken-over socket.
OPEN, CLOSING, CLOSED = 0, 1, 2
_PING = control_frame(OP_PING)


class _Detached:
    """Stands in for Hypercorn's ``StreamWriter`` once a socket is taken over.

    Hypercorn unwinds its connection (read loop, task group, streams) after the
    takeover and closes its writer on the way out: that must not reach the socket.
    """

    def write(self, data: bytes) -> None:
        pass

    async def drain(self) -> None:
        pass

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def wait_closed(self) -> None:
        pass


_DETACHED = _Detached()


class _Elsewhere:
    """Stands in for the transport inside Hypercorn's own ``StreamWriter``, which
    closes its transport when collected unless that one is closing already."""

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass


_ELSEWHERE = _Elsewhere()


#: asyncio's plain TCP transport (not in typeshed): its ``_sock`` is the socket itself.
_SELECTOR_TRANSPORT: type = getattr(selector_events, "_SelectorSocketTransport", type(None))


def _sender(transport: Any) -> tuple[Callable[[bytes], int], bool]:
    """What writes a frame at once while the transport holds nothing back, and whether
    it is the socket's own ``send``: so under asyncio's selector loop (a C call, no
    Python frame per client of a fan-out); else the transport's ``write``, which takes
    it all (TLS, uvloop). It returns the bytes sent; the caller hands the rest to the
    transport."""
    sock = getattr(transport, "_sock", None)
    if isinstance(transport, _SELECTOR_TRANSPORT) and isinstance(sock, socket.socket):
        return sock.send, True
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
            opcode, payload = event
            if opcode in (OP_TEXT, OP_BINARY):
                handler = self.handler
                if self.state != OPEN or handler is None:
                    continue  # after our close frame, data is read and dropped (RFC 6455)
                try:
                    pending = handler.received(payload)  # type: ignore[arg-type]
                except Exception:
                    log.exception("client %d: its message handler failed", self.client)
                    self._fail(Failure(CLOSE_INTERNAL_ERROR, "internal error"))
                    return
                if pending is not None:
                    # Later frames wait in the buffer meanwhile (data_received bounds it):
                    # no pause and resume, two system calls, for every awaited message.
                    self._busy = True
                    asyncio.get_running_loop().create_task(self._finish(pending))
                    return
            elif opcode == OP_PING:
                if self._paused:
                    self._pong = payload  # type: ignore[assignment]
                elif self.state == OPEN:
                    transport.write(control_frame(OP_PONG, payload))  # type: ignore[arg-type]
            elif opcode == OP_CLOSE:
                code: int = payload[0]  # type: ignore[index]
                if self.state == OPEN:  # the client's close: answered with its code
                    echo = b"" if code == CLOSE_NO_STATUS else close_payload(code)
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
            self._fail(Failure(CLOSE_INTERNAL_ERROR, "internal error"))
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
        asyncio.get_running_loop().call_later(self._limits.close_timeout, _drop, transport)


class Keepalive:
    """Pings every taken-over socket each ``interval``; drops one silent ``timeout`` after.

    One timer for all of them, in place of Hypercorn's ping task per connection and
    its read timeout. Any frame from a client counts as an answer, unless the socket
    holds data back that the client does not take (writing paused): then only taking
    it counts, so a client that pings but never reads cannot keep itself alive.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("keepalive interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self.sockets: set[Socket] = set()
        #: Sockets dropped for silence so far.
        self.dropped = 0
        self._next_ping = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._next_ping = loop.time() + self.interval
        self._timer = loop.call_later(min(self.interval, self.timeout), self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        ping = now >= self._next_ping
        if ping:
            self._next_ping = now + self.interval
        deadline = now - self.timeout + 0.01  # timers fire a hair early or late
        for sock in list(self.sockets):
            pinged_at = sock.pinged_at
            if pinged_at is not None:
                if pinged_at <= deadline:
                    self.dropped += 1
                    log.debug("client %d: no answer to a ping in %.0f s", sock.client, self.timeout)
                    sock.abort()
            elif ping and sock.open():
                sock.pinged_at = now
                sock.transport.write(_PING)
        self._timer = loop.call_later(min(self.interval, self.timeout), self._tick)


def _server_headers(config: Any) -> bytes:
    """``config.response_headers("h11")`` as header lines (date, server, alt-svc),
    computed once a second: the same for every handshake within it. Kept on the
    server's config, so nothing is shared between two servers."""
    second = int(time.time())
    cached = getattr(config, "realtime_header_lines", None)
    if cached is not None and cached[0] == second:
        lines: bytes = cached[1]
        return lines
    lines = b"".join(b"%s: %s\r\n" % pair for pair in config.response_headers("h11"))
    config.realtime_header_lines = (second, lines)
    return lines


def take_over(
    asgi_send: Any, limits: IncomingLimits, client: int, high_water: int
) -> Socket | None:
    """Accept the handshake on Hypercorn's behalf and take the socket away from it.

    Call instead of sending ``websocket.accept``, after ``websocket.connect`` was
    received, with compression declined. Writes the 101 response, makes a
    :class:`Socket` the transport's protocol, and lets Hypercorn unwind its
    per-connection machinery (its read loop ends at a fed EOF, its writer is
    detached, its stream marked closed, so nothing of it writes to the socket).
    ``None`` where this cannot be done (not Hypercorn over HTTP/1.1, an extension
    negotiated, the peer gone): then accept through ASGI.
    """
    located = _locate(asgi_send)
    if located is None:
        return None
    stream, server = located
    handshake = stream.handshake
    reader = getattr(server, "reader", None)
    transport = server.writer.transport
    if (
        handshake.extensions
        or handshake.accepted
        or handshake.key is None
        or handshake.http_version != "1.1"
        or not isinstance(reader, asyncio.StreamReader)
        or not all(hasattr(transport, name) for name in _GUARD_METHODS)
        or transport.is_closing()
    ):
        return None
    response = (
        b"HTTP/1.1 101 \r\nsec-websocket-accept: %s\r\nupgrade: WebSocket\r\n"
        b"connection: Upgrade\r\n%s\r\n"
    ) % (generate_accept_token(handshake.key), _server_headers(stream.config))
    handshake.accepted = True
    stream.closed = True  # Hypercorn's stream ignores everything from now on
    writer, server.writer = server.writer, _DETACHED
    writer._transport = _ELSEWHERE
    sock = Socket(transport, limits, client)
    buffered: bytearray = reader._buffer  # type: ignore[attr-defined]
    early = bytes(buffered)  # a client may not send before the 101: parsed anyway
    buffered.clear()
    stream_protocol = transport.get_protocol()
    transport.set_protocol(sock)
    # Sending on the socket itself, paused as soon as it holds anything back. Else
    # (TLS, uvloop: TLS pauses at a mark of 0 even when empty) at ``high_water``, so
    # the transport holds no more than it did when the hub asked for its size.
    transport.set_write_buffer_limits(high=0 if sock.sends_itself else high_water)
    transport.write(response)
    if early:
        sock.feed(early)
    if not transport.is_reading():  # the stream reader had paused it for its buffer
        transport.resume_reading()
    # Hypercorn's read loop ends at the EOF this feeds, and its connection with it;
    # the stream protocol lets go of its writer and task (else a cycle each).
    stream_protocol.connection_lost(None)
    log_access = stream.config.log
    if getattr(log_access, "access_logger", None) is not None:  # --access-log, as Hypercorn
        took = time.time() - getattr(stream, "start_time", time.time())
        asyncio.get_running_loop().create_task(
            log_access.access(stream.scope, {"status": 101, "headers": []}, took)
        )
    return sock
