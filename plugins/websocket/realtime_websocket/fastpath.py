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
:func:`attach` returns ``None`` and the pool sends through ASGI instead.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any, Protocol

try:  # Only the names; nothing here runs at import.
    from hypercorn.asyncio.tcp_server import TCPServer
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.ws_stream import WSStream
    from wsproto.connection import ConnectionState
except ImportError:  # pragma: no cover - a Hypercorn without these modules
    TCPServer = H11Protocol = WSStream = ConnectionState = None  # type: ignore[assignment, misc]

OPCODE_TEXT = 0x1
OPCODE_BINARY = 0x2
FIN = 0x80


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
    """What the pool needs of a transport; asyncio's and uvloop's both qualify."""

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

    def open(self) -> bool:
        """True while data frames may still be sent (no close frame either way yet).

        Called per client per broadcast; the pool holds a client only after the
        handshake, when the stream's wsproto connection exists.
        """
        return (
            self.stream.connection.state is ConnectionState.OPEN and not self.transport.is_closing()
        )

    async def drain(self) -> None:
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the TCP connection at once, discarding what the peer never read."""
        self.transport.abort()


_TRANSPORT_METHODS = ("write", "get_write_buffer_size", "is_closing", "abort")


def attach(asgi_send: Any, *, decline_compression: bool) -> Wire | None:
    """Find the transport under an ASGI ``send`` before the handshake is accepted.

    Under Hypercorn, ``send`` is ``WSStream.app_send``. Returns ``None`` elsewhere.
    With ``decline_compression``, the permessage-deflate offer is dropped from the
    handshake so every frame can be shared between connections.
    """
    stream = getattr(asgi_send, "__self__", None)
    if WSStream is None or not isinstance(stream, WSStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # WebSockets over HTTP/2 multiplex streams: no transport of their own
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer):
        return None
    writer = server.writer
    transport = writer.transport
    if not all(hasattr(transport, name) for name in _TRANSPORT_METHODS):
        return None
    if decline_compression:
        stream.handshake.extensions = None
    elif stream.handshake.extensions:
        return None  # compression may be negotiated: each connection encodes its own frames
    return Wire(transport, writer, stream)
