"""Direct frame writes to Hypercorn's transport: the one module that reaches below Quart.

Quart's ``websocket.send`` costs, per client and per message, a chain of awaits
(Quart → ASGI → Hypercorn → wsproto → h11 → ``writer.drain()``). Broadcasting the
same message to thousands of clients does not need any of that: the frame is the
same bytes for every connection without per-message compression, so it is encoded
once and appended to each connection's transport, which coalesces a backlog into
one ``send()`` by itself.

Supported: Hypercorn 0.16 to 0.18 (the range pinned in ``pyproject.toml``), WebSockets
over HTTP/1.1 with the asyncio or uvloop worker. Where the objects below are not what
this module expects (HTTP/2 WebSockets, trio, another server, another Hypercorn),
:func:`attach` returns ``None`` and the pool uses Quart's public API instead.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass
from typing import Any

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


@dataclass(slots=True)
class Wire:
    """What a fast-path client writes to: its transport, and the stream to check it is open."""

    transport: asyncio.WriteTransport
    writer: asyncio.StreamWriter
    stream: Any  # hypercorn.protocol.ws_stream.WSStream

    def open(self) -> bool:
        """True while data frames may still be sent (no close frame either way yet)."""
        connection = getattr(self.stream, "connection", None)
        return (
            connection is not None
            and connection.state is ConnectionState.OPEN
            and not self.transport.is_closing()
        )

    async def drain(self) -> None:
        await self.writer.drain()

    def abort(self) -> None:
        """Drop the TCP connection at once, discarding what the peer never read."""
        self.transport.abort()


def _stream_of(websocket: Any) -> Any | None:
    """Quart keeps the ASGI ``send`` in a partial; for Hypercorn it is ``WSStream.app_send``."""
    send_partial = getattr(websocket, "_send", None)
    args = getattr(send_partial, "args", ())
    if not args:
        return None
    stream = getattr(args[0], "__self__", None)
    if WSStream is None or not isinstance(stream, WSStream):
        return None
    return stream


def attach(websocket: Any, *, decline_compression: bool) -> Wire | None:
    """Find the transport under a Quart websocket before it is accepted, or ``None``.

    With ``decline_compression``, the permessage-deflate offer is dropped from the
    handshake so every frame can be shared between connections.
    """
    stream = _stream_of(websocket)
    if stream is None:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # WebSockets over HTTP/2 multiplex streams: no transport of their own
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, TCPServer):
        return None
    writer = server.writer
    transport = writer.transport
    if not isinstance(transport, asyncio.WriteTransport):
        return None
    if decline_compression:
        stream.handshake.extensions = None
    elif stream.handshake.extensions:
        return None  # compression may be negotiated: each connection encodes its own frames
    return Wire(transport, writer, stream)
