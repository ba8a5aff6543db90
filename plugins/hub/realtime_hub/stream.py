"""What the fan-out needs of a connection it writes to itself, and how it frames a message.

The hub writes a publication straight to every connection that keeps up (the fast
path): a taken-over WebSocket (:class:`.fastpath.Socket`) or any other stream a
transport attaches with :meth:`.Hub.attach` (a Server-Sent-Events response, an HTTP
streaming body). Such a connection is a :class:`Stream`; how a message from a
:class:`.Format` becomes its bytes is its :class:`Framing`. A publication is encoded
once per format and framed once per framing present in its channel, then the same
bytes go to every subscriber with that pair.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from .connection import Handler
from .fastpath import encode_frame


class StreamTransport(Protocol):
    """The stream's buffered writer (an asyncio transport): what ``send_now`` did not
    take goes here, in order, and its size counts toward the client's buffer."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...


class Stream(Protocol):
    """A connection the hub writes to directly, and reads from through its handler.

    While :meth:`writable` (open, and ``transport`` holds nothing back), the hub hands
    each message's bytes to ``send_now``, which returns how many it took (or raises
    :class:`BlockingIOError`/:class:`OSError`); the rest goes to ``transport.write``,
    which must then make the stream not writable (pause) or close it. The stream calls
    ``on_writable`` whenever :meth:`writable` may have changed, so the hub keeps one
    lookup per delivery. Otherwise messages wait in the client's backlog, bounded by
    the hub's buffer, and go to ``transport.write`` a chunk at a time after
    :meth:`drain`. :class:`.fastpath.Socket` is one; a transport brings its own.
    """

    #: Takes bytes now, returns the count taken; only called while :meth:`writable`.
    send_now: Callable[[bytes], int]
    #: Set by the hub: called when :meth:`writable` may have changed.
    on_writable: Callable[[], None] | None

    @property
    def transport(self) -> StreamTransport: ...

    def start(self, handler: Handler | None, on_lost: Callable[[Any], None]) -> None:
        """Begin handing what the peer sends to ``handler``; ``on_lost(self)`` once it ends
        (at once if it ended already)."""
        ...

    def open(self) -> bool:
        """True while messages may still go out (not closing, not closed)."""
        ...

    def writable(self) -> bool:
        """Open, and the transport holds nothing back: ``send_now`` may write."""
        ...

    async def drain(self) -> None:
        """Wait until the transport has room again (returns at once if it has, or closed)."""
        ...

    def abort(self) -> None:
        """Drop the connection at once, discarding what the peer never read."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """End the stream after what it holds (``code`` and ``reason`` as the protocol
        can say them) and wait until it ended; the hub bounds the wait and aborts after."""
        ...


class Framing(Protocol):
    """How a message (text or bytes from a :class:`.Format`) becomes a stream's bytes.

    One object per kind of stream, shared by all of them: the hub groups a format's
    subscribers by framing object and frames each publication once per group.
    """

    def frame(self, data: str | bytes) -> bytes: ...


class WebSocketFraming:
    """An unfragmented WebSocket frame: text for ``str``, binary for ``bytes``."""

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        if isinstance(data, str):
            return encode_frame(data.encode(), text=True)
        return encode_frame(data, text=False)


class EventStreamFraming:
    """A Server-Sent Event (``text/event-stream``): each line of the message as a
    ``data:`` field, then a blank line. The format carries text only, so bytes are
    read as UTF-8 (an SSE transport brings a :class:`.Format` that gives text)."""

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        text = data if isinstance(data, str) else data.decode(errors="replace")
        if "\r" in text:
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        return b"data: " + text.replace("\n", "\ndata: ").encode() + b"\n\n"


class ChunkedFraming:
    """One chunk of an HTTP/1.1 chunked body (an HTTP-streaming response)."""

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        body = data.encode() if isinstance(data, str) else data
        if not body:
            return b""  # an empty chunk would end the body
        return b"%x\r\n%s\r\n" % (len(body), body)


#: The framing of WebSocket connections (taken over or on ASGI).
WEBSOCKET = WebSocketFraming()
#: Server-Sent Events.
EVENT_STREAM = EventStreamFraming()
#: HTTP/1.1 chunked transfer encoding.
CHUNKED = ChunkedFraming()
