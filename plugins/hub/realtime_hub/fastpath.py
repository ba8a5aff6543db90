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
import struct
import time
import zlib
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol
from wsproto.utilities import LocalProtocolError

from realtime import LogThrottle

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


@dataclass(slots=True)
class Wire:
    """What a fast-path client writes to: its transport, and the stream to check it is open."""

    transport: Transport
    writer: asyncio.StreamWriter
    stream: Any  # hypercorn.protocol.ws_stream.WSStream
    #: The stream's wsproto connection, kept by :meth:`bind` once the handshake is done.
    connection: Any = None

    def bind(self) -> bool:
        """After the handshake: hold the wsproto connection itself (:func:`guard` then
        stands in for it in the stream; :meth:`open` skips both).

        False if there is none: the peer left before the handshake was accepted.
        """
        self.connection = getattr(self.stream, "connection", None)
        return self.connection is not None

    def open(self) -> bool:
        """True while data frames may still be sent (no close frame either way yet).

        Called per client per broadcast; the hub holds a client only after
        :meth:`bind`.
        """
        return self.connection.state is ConnectionState.OPEN and not self.transport.is_closing()

    async def drain(self) -> None:
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the TCP connection at once, discarding what the peer never read."""
        self.transport.abort()


_TRANSPORT_METHODS = ("write", "get_write_buffer_size", "is_closing", "abort")
#: What the guard needs besides: to stop reading and to end the connection.
_GUARD_METHODS = (*_TRANSPORT_METHODS, "pause_reading", "can_write_eof", "write_eof", "close")


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


def attach(asgi_send: Any, *, decline_compression: bool) -> Wire | None:
    """Find the transport under an ASGI ``send`` before the handshake is accepted.

    Under Hypercorn, ``send`` is ``WSStream.app_send``. Returns ``None`` elsewhere.
    With ``decline_compression``, the permessage-deflate offer is dropped from the
    handshake so every frame can be shared between connections.
    """
    located = _locate(asgi_send)
    if located is None:
        return None
    stream, server = located
    writer = server.writer
    transport = writer.transport
    if not all(hasattr(transport, name) for name in _TRANSPORT_METHODS):
        return None
    if decline_compression:
        stream.handshake.extensions = None
    elif stream.handshake.extensions:
        return None  # compression may be negotiated: each connection encodes its own frames
    return Wire(transport, writer, stream)


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
