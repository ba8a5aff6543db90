"""What a client may send, checked before Hypercorn buffers it: in every fan-out mode.

Hypercorn buffers a message before checking its size, keeps reading a client after
refusing it with 1009, lets wsproto inflate a compressed frame without bound, and
answers every ping however many come. :class:`IncomingGuard` takes the place of the
connection's wsproto object in Hypercorn's stream (through the fence,
:mod:`realtime.internals`), so it sees every frame first; where it cannot be put
in (not Hypercorn over HTTP/1.1, or a Hypercorn or wsproto the fence does not
know), Hypercorn's own size check is all there is.

A taken-over socket (:mod:`.takeover`) checks the same :class:`IncomingLimits`
itself, in its frame parser (:mod:`.frames`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from contextlib import suppress
from typing import Any, Protocol

from wsproto.connection import Connection, ConnectionState
from wsproto.events import CloseConnection, Event, Message
from wsproto.utilities import LocalProtocolError

from realtime import LogThrottle
from realtime.internals import hypercorn as hypercorn_internals
from realtime.internals.wsproto import BoundedDeflate, bound_deflate
from realtime.rate import Rate

from .closecode import CloseCode

log = logging.getLogger("realtime.hub")


class Transport(Protocol):
    """What the hub needs of a transport; asyncio's and uvloop's both qualify."""

    def write(self, data: bytes) -> None: ...
    def get_write_buffer_size(self) -> int: ...
    def is_closing(self) -> bool: ...
    def abort(self) -> None: ...


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


#: What the guard and a taken-over socket need of a transport (asyncio's public API).
GUARD_METHODS = (
    "write",
    "get_write_buffer_size",
    "is_closing",
    "abort",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "set_protocol",
    "set_write_buffer_limits",
    "can_write_eof",
    "write_eof",
    "close",
)


class IncomingLimits:
    """What any one client may send. One per hub, shared by all its guards.

    ``rate`` frames a second (every kind: data, continuation, ping, pong, close),
    with bursts of up to ``burst`` frames at once; 0 turns the rate limit off
    (:class:`realtime.rate.Rate`, in :attr:`frames`). ``max_size`` bounds a message
    in bytes: UTF-8 for text, inflated when compressed.
    """

    __slots__ = ("_log", "burst", "close_timeout", "frames", "max_size", "rate", "refused")

    def __init__(
        self, max_size: int, rate: int = 0, burst: int | None = None, close_timeout: float = 1.0
    ) -> None:
        if max_size <= 0:
            raise ValueError("max_size must be positive")
        if rate < 0:
            raise ValueError("rate must be 0 (no limit) or positive")
        self.max_size = max_size
        self.rate = rate
        #: The frame rate: each holder keeps its own clock, one float.
        self.frames = Rate(rate, burst)
        self.burst = self.frames.burst
        self.close_timeout = close_timeout
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


class IncomingGuard:
    """Stands in for a connection's wsproto ``Connection`` inside Hypercorn's ``WSStream``.

    Hypercorn hands every byte it reads to ``receive_data`` and takes the frames from
    ``events()``. In between, the guard counts frames against the rate and a message's
    bytes against the size limit, before Hypercorn buffers anything. A client past
    either is refused (:meth:`_refuse`) and nothing more of it is parsed. Eight
    slots, about 100 bytes a connection; no task, no timer until a refusal.
    """

    __slots__ = (
        "_client",
        "_deflate",
        "_inner",
        "_limits",
        "_server",
        "_size",
        "_tat",
        "ended",
        "refused",
    )

    def __init__(
        self,
        inner: Connection,
        server: Any,  # Hypercorn's connection, for realtime.internals.hypercorn
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
        self._tat = 0.0  # the frame rate's clock
        self.refused = False
        #: The client's close frame (code, reason), or this guard's refusal: what
        #: Hypercorn does not tell the app (its disconnect says 1006 for either).
        self.ended: tuple[int, str] | None = None

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

        Hypercorn calls this once per read, so every frame in it arrived at one time:
        the frame rate's clock is advanced here by hand (as :meth:`Rate.take` would),
        against one ``now``.
        """
        if self.refused:
            return
        limits = self._limits
        max_size = limits.max_size
        deflate = self._deflate
        size = self._size
        rate = limits.frames
        interval = rate.interval
        tat = horizon = 0.0
        if interval:
            now = time.monotonic()
            tat = max(self._tat, now)
            horizon = now + rate.window
        for event in self._inner.events():
            if isinstance(event, Message):
                data = event.data
                size += (
                    len(data) if isinstance(data, bytes) or data.isascii() else len(data.encode())
                )
                if size > max_size:
                    self._refuse(CloseCode.MESSAGE_TOO_BIG, f"a message over {max_size} bytes")
                    return
                if event.message_finished:
                    size = 0
                self._size = size
                if deflate is not None:
                    deflate.room = max_size - size
                if not event.frame_finished:
                    yield event  # a frame arriving in pieces counts once, when it ends
                    continue
            elif isinstance(event, CloseConnection):
                if deflate is not None and deflate.room < 0:
                    # wsproto's report of the 1009 BoundedDeflate returned.
                    self._refuse(
                        CloseCode.MESSAGE_TOO_BIG, f"a message inflating past {max_size} bytes"
                    )
                    return
                if self.ended is None:  # the client's close frame
                    self.ended = (event.code, event.reason or "")
            if interval:
                tat += interval
                if tat > horizon:
                    self._refuse(CloseCode.POLICY_VIOLATION, rate.describe("frames"))
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
        if self.ended is None:
            self.ended = (code, what)
        self._limits.report(self._client, what, code)
        transport: GuardTransport | None = hypercorn_internals.refuse_reading(self._server)
        if transport is None:
            return  # on its way out already
        with suppress(LocalProtocolError):  # if not, a close frame went out already
            transport.write(self._inner.send(CloseConnection(code=code, reason=what)))
        if transport.can_write_eof():
            transport.write_eof()
        else:  # TLS: no half-close
            transport.close()
        loop = asyncio.get_running_loop()
        loop.call_later(self._limits.close_timeout, drop, transport)


def drop(transport: GuardTransport) -> None:
    """End a refused client's connection, unless it is closed (or closing, all sent)."""
    if not transport.is_closing() or transport.get_write_buffer_size():
        transport.abort()


def decline_compression(asgi_send: Any) -> None:
    """Before the handshake is accepted: drop the permessage-deflate offer, if any.

    Without it Hypercorn accepts compression whenever a client offers it, in either
    fan-out mode. Does nothing outside Hypercorn.
    """
    hypercorn_internals.decline_compression(asgi_send)


def guard(asgi_send: Any, limits: IncomingLimits, client: int) -> IncomingGuard | None:
    """Put an :class:`IncomingGuard` in front of a Hypercorn connection's wsproto object.

    Call once the handshake is accepted (Hypercorn parses no frame before that).
    Applies whatever the fan-out mode and with compression. Returns ``None`` where
    the objects are not Hypercorn's over HTTP/1.1, or the fence said no (Hypercorn's
    own size check applies).
    """
    located = hypercorn_internals.locate(asgi_send, need="guard")
    if located is None:
        return None
    inner = hypercorn_internals.wsproto_connection(located)
    transport = hypercorn_internals.transport(located.server)
    if inner is None or not all(hasattr(transport, name) for name in GUARD_METHODS):
        return None
    deflate = bound_deflate(inner, limits.max_size)
    incoming = IncomingGuard(inner, located.server, limits, client, deflate)
    hypercorn_internals.replace_wsproto_connection(located, incoming)
    return incoming
