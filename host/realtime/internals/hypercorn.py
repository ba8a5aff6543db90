"""Hypercorn's internals the fast path and the lean TCP server use (part of
:mod:`realtime.internals`, the fence).

Beneath an ASGI ``send`` of a WebSocket over HTTP/1.1 under asyncio sit Hypercorn's
``WSStream`` (the ``send`` is its bound ``app_send``), its ``H11Protocol`` and its
``TCPServer``, which holds the stream reader and writer over the asyncio transport.
This module finds them (:func:`locate`) and does what the hub needs of them:

- :func:`decline_compression`: drop a permessage-deflate offer before the accept;
- :func:`wsproto_connection` / :func:`replace_wsproto_connection`: the stream's
  wsproto ``Connection``, and a stand-in for it that sees every frame first;
- :func:`refuse_reading`: stop reading a connection for good;
- :func:`take_over`: write the 101 on Hypercorn's behalf and hand the transport
  to another protocol, letting Hypercorn unwind its per-connection machinery;
- :func:`take_over_response`: the same for an HTTP/1.1 request answered with a long
  response (an event stream, an HTTP-streaming body) the protocol then writes itself.

:class:`TCPServer` and :func:`install_lean_tcp` are Hypercorn's connection with fewer
tasks. Each of these checks :func:`realtime.internals.fence` first and does nothing
(``None``, ``False``) where it said no. Tested on Hypercorn 0.17 and 0.18.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterable
from ssl import SSLError
from typing import Any, NamedTuple, TypeVar

import h11
from wsproto.connection import Connection
from wsproto.utilities import generate_accept_token

from . import asyncio as asyncio_internals
from . import fence

try:  # Only the names; nothing here runs at import.
    import hypercorn.asyncio.run as hypercorn_run
    from hypercorn.asyncio import tcp_server
    from hypercorn.asyncio.tcp_server import TCPServer as HYPERCORN_TCP_SERVER
    from hypercorn.asyncio.worker_context import WorkerContext
    from hypercorn.events import Closed, RawData
    from hypercorn.protocol.h11 import H11Protocol
    from hypercorn.protocol.http_stream import ASGIHTTPState, HTTPStream
    from hypercorn.protocol.ws_stream import Handshake, WSStream
except ImportError:  # pragma: no cover - a Hypercorn without these modules
    HYPERCORN_TCP_SERVER = None  # type: ignore[assignment, misc]

__all__ = [
    "HYPERCORN_TCP_SERVER",
    "Located",
    "TCPServer",
    "decline_compression",
    "install_lean_tcp",
    "locate",
    "missing",
    "refuse_reading",
    "replace_wsproto_connection",
    "take_over",
    "take_over_response",
    "transport",
    "wsproto_connection",
]

P = TypeVar("P", bound=asyncio.BaseProtocol)

#: Attributes each class's own code sets or reads (checked by :func:`missing`).
_NEEDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("WSStream", ("handshake", "connection", "closed", "config", "scope", "send", "app_send")),
    ("Handshake", ("extensions", "accepted", "key", "http_version")),
    ("H11Protocol", ("send", "connection")),
    ("HTTPStream", ("closed", "state", "send", "app_send", "config", "scope", "start_time")),
    ("TCPServer", ("reader", "writer", "protocol", "idle_task", "context", "config")),
    ("TCPServer", ("_read_data", "_initiate_server_close", "_task_group", "run")),
    ("WorkerContext", ("terminated",)),
)


def _names(cls: type) -> set[str]:
    """Every name a class's own code mentions, and its attributes: what it sets and uses."""
    names: set[str] = set()
    for klass in cls.__mro__[:-1]:
        names.update(vars(klass))
        for value in vars(klass).values():
            code = getattr(value, "__code__", None)
            if code is not None:
                names.update(code.co_names)
    return names


def missing() -> list[str]:
    """The names used here that this Hypercorn lacks (for the probe)."""
    if HYPERCORN_TCP_SERVER is None:
        return ["hypercorn.asyncio.tcp_server, hypercorn.protocol.ws_stream"]
    classes: dict[str, type] = {
        "WSStream": WSStream,
        "Handshake": Handshake,
        "H11Protocol": H11Protocol,
        "HTTPStream": HTTPStream,
        "TCPServer": HYPERCORN_TCP_SERVER,
        "WorkerContext": WorkerContext,
    }
    absent = [
        f"{owner}.{name}"
        for owner, needed in _NEEDS
        for name in needed
        if name not in _names(classes[owner])
    ]
    if getattr(hypercorn_run, "TCPServer", None) is None:
        absent.append("asyncio.run.TCPServer")
    if not hasattr(tcp_server, "MAX_RECV"):
        absent.append("asyncio.tcp_server.MAX_RECV")
    return absent


# Beneath an ASGI send -------------------------------------------------------------


class Located(NamedTuple):
    """Hypercorn's objects beneath one WebSocket's ASGI ``send`` (opaque to callers)."""

    stream: Any  # hypercorn.protocol.ws_stream.WSStream
    server: Any  # hypercorn.asyncio.tcp_server.TCPServer


def _stream(asgi_send: Any) -> Any:
    stream = getattr(asgi_send, "__self__", None)
    return stream if isinstance(stream, WSStream) else None


def locate(asgi_send: Any, *, need: str = "takeover") -> Located | None:
    """The stream and TCP connection of a WebSocket over HTTP/1.1 under asyncio, else None.

    ``need`` is what the caller will do (``"takeover"`` or ``"guard"``): ``None`` too
    when the probe said that does not engage here.
    """
    if not getattr(fence(), need):
        return None
    stream = _stream(asgi_send)
    if stream is None:
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # WebSockets over HTTP/2 multiplex streams: no transport of their own
    server = getattr(protocol.send, "__self__", None)
    if not isinstance(server, HYPERCORN_TCP_SERVER):
        return None
    return Located(stream, server)


def decline_compression(asgi_send: Any) -> None:
    """Before the handshake is accepted: drop the permessage-deflate offer, if any.

    Without it Hypercorn accepts compression whenever a client offers it. Does nothing
    outside Hypercorn, or where the probe said no.
    """
    if fence().guard or fence().takeover:
        stream = _stream(asgi_send)
        if stream is not None:
            stream.handshake.extensions = None


def transport(server: Any) -> Any:
    """The asyncio transport beneath a located connection's ``server``."""
    return server.writer.transport


def wsproto_connection(located: Located) -> Connection | None:
    """The wsproto ``Connection`` Hypercorn's stream reads frames through, once accepted."""
    inner = getattr(located.stream, "connection", None)
    return inner if isinstance(inner, Connection) else None


def replace_wsproto_connection(located: Located, stand_in: object) -> None:
    """Make Hypercorn's stream call ``stand_in`` (``receive_data``, ``events``, ``send``,
    ``state``: what it calls of a wsproto ``Connection``) in its place."""
    located.stream.connection = stand_in


def refuse_reading(server: Any) -> Any:
    """Stop reading a located connection for good; its transport, or None if closing."""
    sock = server.writer.transport
    if sock.is_closing():
        return None
    sock.pause_reading()
    # asyncio's StreamReader may have paused the socket for its own buffer's sake and
    # would resume it once Hypercorn read that buffer: make it forget.
    asyncio_internals.forget_read_pause(server.reader)
    return sock


# Taking a connection over -------------------------------------------------------


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


#: An HTTP token (RFC 9110), what a subprotocol name is: nothing else goes in the 101.
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def take_over(
    asgi_send: Any,
    methods: Iterable[str],
    make: Callable[[Any], tuple[P, int]],
    subprotocol: str | None = None,
) -> tuple[P, bytes] | None:
    """Accept the handshake on Hypercorn's behalf and give the transport to another protocol.

    Call instead of sending ``websocket.accept``, after ``websocket.connect`` was
    received, with compression declined. ``make(transport)`` builds the new protocol
    and says the transport's high-water mark; then the 101 response is written and
    Hypercorn unwinds (its read loop ends at a fed EOF, its writer is detached, its
    stream marked closed, so nothing of it writes to the socket). ``subprotocol``, one
    the client offered, is named in the 101 (an SDK that offered one needs it back).
    Returns the protocol and what the client sent before the 101 (to parse). ``None``
    where this cannot be done (not Hypercorn over HTTP/1.1, an extension negotiated,
    the peer gone, a transport without every one of ``methods``, the probe said no).
    """
    located = locate(asgi_send)
    if located is None:
        return None
    stream, server = located
    handshake = stream.handshake
    reader = getattr(server, "reader", None)
    sock = server.writer.transport
    if (
        handshake.extensions
        or handshake.accepted
        or handshake.key is None
        or handshake.http_version != "1.1"
        or not asyncio_internals.reader_takes(reader)
        or not all(hasattr(sock, name) for name in methods)
        or sock.is_closing()
    ):
        return None
    chosen = b""
    if subprotocol is not None:
        if not _TOKEN.fullmatch(subprotocol):
            raise ValueError(f"not a subprotocol token: {subprotocol!r}")
        chosen = b"sec-websocket-protocol: %s\r\n" % subprotocol.encode("ascii")
    response = (
        b"HTTP/1.1 101 \r\nsec-websocket-accept: %s\r\nupgrade: WebSocket\r\n"
        b"connection: Upgrade\r\n%s%s\r\n"
    ) % (generate_accept_token(handshake.key), chosen, _server_headers(stream.config))
    handshake.accepted = True
    stream.closed = True  # Hypercorn's stream ignores everything from now on
    writer, server.writer = server.writer, _DETACHED
    asyncio_internals.disown_transport(writer)
    protocol, high_water = make(sock)
    early = asyncio_internals.take_buffered(reader)  # a client may send before the 101
    stream_protocol = sock.get_protocol()
    sock.set_protocol(protocol)
    sock.set_write_buffer_limits(high=high_water)
    sock.write(response)
    if not sock.is_reading():  # the stream reader had paused it for its buffer
        sock.resume_reading()
    # Hypercorn's read loop ends at the EOF this feeds, and its connection with it;
    # the stream protocol lets go of its writer and task (else a cycle each).
    stream_protocol.connection_lost(None)
    log_access = stream.config.log
    if getattr(log_access, "access_logger", None) is not None:  # --access-log, as Hypercorn
        took = time.time() - getattr(stream, "start_time", time.time())
        asyncio.get_running_loop().create_task(
            log_access.access(stream.scope, {"status": 101, "headers": []}, took)
        )
    return protocol, early


def take_over_response(
    asgi_send: Any, head: bytes, methods: Iterable[str], make: Callable[[Any], tuple[P, int]]
) -> P | None:
    """Answer an HTTP/1.1 request on Hypercorn's behalf and give the transport to another
    protocol, to write a long response body (an event stream) itself.

    Call instead of sending ``http.response.start``, once the whole request body was
    received. ``head`` is the status line and the header lines (each ending in CRLF,
    without the blank line: the server's own headers follow). As :func:`take_over`:
    ``make(transport)`` builds the protocol and says the high-water mark, the head is
    written, and Hypercorn unwinds (its stream marked closed, its writer detached, its
    read loop ended at a fed EOF); the connection is the protocol's to close. ``None``
    where this cannot be done (not Hypercorn over HTTP/1.1, a response begun, the
    request not fully read, bytes of a next request already read, a transport without
    every one of ``methods``, the probe said no): then answer through ASGI.
    """
    if not fence().takeover:
        return None
    stream = getattr(asgi_send, "__self__", None)
    if not isinstance(stream, HTTPStream):
        return None
    protocol = getattr(stream.send, "__self__", None)
    if not isinstance(protocol, H11Protocol):
        return None  # HTTP/2 multiplexes streams: no transport of their own
    found = getattr(protocol.send, "__self__", None)
    if not isinstance(found, HYPERCORN_TCP_SERVER):
        return None
    server: Any = found  # its reader and writer are swapped below: not as typed
    connection = protocol.connection
    reader = getattr(server, "reader", None)
    sock = server.writer.transport
    if (
        stream.closed
        or stream.state != ASGIHTTPState.REQUEST
        or stream.scope.get("http_version") != "1.1"
        or not isinstance(connection, h11.Connection)
        or connection.their_state is not h11.DONE
        or connection.our_state is not h11.SEND_RESPONSE
        or connection.trailing_data[0]  # a pipelined request: Hypercorn would wait on it
        or not asyncio_internals.reader_takes(reader)
        or not all(hasattr(sock, name) for name in methods)
        or sock.is_closing()
    ):
        return None
    stream.closed = True  # Hypercorn's stream ignores everything from now on
    stream.state = ASGIHTTPState.CLOSED
    writer, server.writer = server.writer, _DETACHED
    asyncio_internals.disown_transport(writer)
    taken, high_water = make(sock)
    asyncio_internals.take_buffered(reader)  # nothing may follow a request we answer this way
    stream_protocol = sock.get_protocol()
    sock.set_protocol(taken)
    sock.set_write_buffer_limits(high=high_water)
    sock.write(head + _server_headers(stream.config) + b"\r\n")
    if not sock.is_reading():
        sock.resume_reading()
    stream_protocol.connection_lost(None)  # Hypercorn's read loop ends at this EOF
    log_access = stream.config.log
    if getattr(log_access, "access_logger", None) is not None:
        took = time.time() - getattr(stream, "start_time", time.time())
        asyncio.get_running_loop().create_task(
            log_access.access(stream.scope, {"status": 200, "headers": []}, took)
        )
    return taken


# The lean TCP server ------------------------------------------------------------


class _Idle:
    """A worker's idle connections, closed at once when the worker terminates (as
    Hypercorn's idle tasks do); kept on the worker's context, one per worker."""

    __slots__ = ("timers", "watcher")

    def __init__(self, context: Any) -> None:
        self.timers: set[_IdleTimer] = set()
        self.watcher = asyncio.get_running_loop().create_task(self._close_at_termination(context))

    async def _close_at_termination(self, context: Any) -> None:
        await context.terminated.wait()
        for timer in list(self.timers):
            timer.expire()

    @staticmethod
    def of(context: Any) -> _Idle:
        idle: _Idle | None = getattr(context, "realtime_idle", None)
        if idle is None:
            idle = context.realtime_idle = _Idle(context)
        return idle


class _IdleTimer:
    """Hypercorn's keep-alive timeout as one timer handle, in place of its idle task
    (``AsyncioSingleTask``: the same ``restart`` and ``stop``)."""

    __slots__ = ("_handle", "_server", "_task_group")

    def __init__(self, server: Any) -> None:
        self._server = server
        self._handle: asyncio.TimerHandle | None = None
        self._task_group: Any = None

    async def restart(self, task_group: Any, action: Any) -> None:
        # ``action`` is Hypercorn's ``_idle_timeout``: expire() does what it does.
        self._cancel()
        server = self._server
        idle = _Idle.of(server.context)
        delay = 0.0 if server.context.terminated.is_set() else server.config.keep_alive_timeout
        self._task_group = task_group
        self._handle = asyncio.get_running_loop().call_later(delay, self.expire)
        idle.timers.add(self)

    async def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
            _Idle.of(self._server.context).timers.discard(self)

    def expire(self) -> None:
        """Close the idle connection, in its task group (the connection waits for it)."""
        self._cancel()
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        with contextlib.suppress(RuntimeError):  # its task group ended: closing anyway
            task_group.spawn(self._server._initiate_server_close)


if HYPERCORN_TCP_SERVER is not None:

    class TCPServer(HYPERCORN_TCP_SERVER):
        """Hypercorn's connection with a timer for its keep-alive timeout and
        ``asyncio.timeout`` for its read timeout (which cancels the connection's own
        task rather than a task per read: the read loop ends and the connection
        closes, as before).

        Per connection Hypercorn starts an idle task for its keep-alive timeout (a
        task that ``wait_for``s, so two, and a lock) and wraps every read in
        ``asyncio.wait_for`` (a task each): of the seven tasks a WebSocket handshake
        cost, five. This keeps the same behaviour for about 45 µs less CPU a
        connection (bench/README.md).
        """

        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            self.idle_task = _IdleTimer(self)  # type: ignore[assignment]  # same methods

        async def run(self) -> None:
            try:
                await super().run()
            finally:
                # Its task group has ended: drop the cycles (server -> protocol -> the
                # server's protocol_send; server <-> idle timer) so refcounting frees it.
                for name in ("protocol", "_task_group", "idle_task"):
                    self.__dict__.pop(name, None)

        async def _read_data(self) -> None:
            reader = self.reader
            while not reader.at_eof():
                try:
                    async with asyncio.timeout(self.config.read_timeout):
                        data = await reader.read(tcp_server.MAX_RECV)
                except (ConnectionError, OSError, TimeoutError, SSLError):
                    break
                else:
                    await self.protocol.handle(RawData(data))
            await self.protocol.handle(Closed())

else:  # pragma: no cover
    TCPServer = None  # type: ignore[assignment, misc]


def install_lean_tcp() -> bool:
    """Make Hypercorn's ``worker_serve`` build :class:`TCPServer`; False (Hypercorn
    untouched) when the probe said no or its class is not the one this was written
    against."""
    if not fence().lean_tcp:
        return False
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is TCPServer:
        return True
    if current is not HYPERCORN_TCP_SERVER:
        return False
    setattr(hypercorn_run, "TCPServer", TCPServer)  # noqa: B010 (not exported there)
    return True
