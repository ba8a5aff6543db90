"""Centrifugo's one-way transports: ``uni_websocket``, ``uni_sse``, ``uni_http_stream``.

A one-way client needs no SDK: it sends its connect request once (a ``ConnectRequest``
as the ``cf_connect`` URL parameter, a POST body, or a WebSocket's first message)
and then only reads bare pushes (:mod:`.uni_codec`): a browser's ``EventSource``, a
``fetch`` reading lines, a plain WebSocket. Its channels are server-side
subscriptions: a token's ``channels``/``subs`` claims, the server API's
``subscribe``, or an ``authorize_connect`` hook's ``ConnectAuth`` (which sees the
request's headers, so a session cookie can stand for a token).

Each connection runs the same :class:`.session.Session` as a bidirectional one, in
the one-way codec, so the hub encodes a publication once for all of them and writes
it on its fast path: a WebSocket taken over as ``/connection/websocket``'s are, an
HTTP response taken over by :mod:`realtime_hub.httpstream`, with the same buffer
bound and overflow policy as every other client. Go's behaviour is followed
(centrifugal/centrifugo ``internal/uniws``, ``unisse``, ``unihttpstream``); where
this differs, the docstring says so.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from realtime import ASGIRoute, Host
from realtime.routes import deny_websocket, read_body
from realtime_hub import ASGIConnection, Client, CloseCode, HubClosed, Receive, Send
from realtime_hub.httpstream import LINES, BodyFraming, open_response
from realtime_hub.stream import CHUNKED

from .api import send_text
from .codes import (
    DISCONNECT_SERVER_ERROR,
    DISCONNECT_SHUTDOWN,
    DISCONNECT_SLOW,
    Disconnect,
    DisconnectError,
)
from .session import SessionOptions
from .transport import SessionHandler
from .uni_codec import MAX_CONNECT_SIZE, UNI_JSON, connect_command, disconnect_push, refused
from .wire import Frame

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("realtime.centrifuge")

UNI_WEBSOCKET_PATH = "/connection/uni_websocket"
UNI_SSE_PATH = "/connection/uni_sse"
UNI_HTTP_STREAM_PATH = "/connection/uni_http_stream"
#: The URL parameter holding the connect request (GET uni_sse, uni_websocket).
CONNECT_PARAM = "cf_connect"
#: Go's SSE headers: the event stream's type; the stream's own (no caching, no proxy
#: buffering) come with every long response.
SSE_HEADERS = ((b"content-type", b"text/event-stream; charset=utf-8"),)
#: Newline-delimited JSON; Go sets no type (and Go's server then sniffs text/plain).
HTTP_STREAM_HEADERS = ((b"content-type", b"text/plain; charset=utf-8"),)

NodeOf = Callable[[], "Node"]
ASGIApp = Callable[[Any, Receive, Send], Coroutine[Any, Any, None]]


class _UniEvents:
    """Each line of a message as a Server-Sent Event of its own.

    A message of several pushes is one per line (JSON never holds a raw newline), and
    an ``EventSource`` client parses each event's data as one JSON object, as Go writes
    them: ``data: {...}`` and a blank line, per push.
    """

    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        text = data if isinstance(data, str) else data.decode(errors="replace")
        return b"".join(b"data: %s\n\n" % line.encode() for line in text.split("\n") if line)


class _ChunkedUniEvents:
    __slots__ = ()

    def frame(self, data: str | bytes) -> bytes:
        return CHUNKED.frame(UNI_EVENTS.plain.frame(data))


#: One-way SSE bodies: one event a push.
UNI_EVENTS = BodyFraming(_UniEvents(), _ChunkedUniEvents())


def farewell(code: int, reason: str) -> Frame | None:
    """The disconnect push a one-way stream ends with (what the close frame says on a
    WebSocket). The hub's own closes use RFC codes: said as Centrifuge's."""
    if 3000 <= code <= 4999:
        return UNI_JSON.encode_push("", "disconnect", {"code": code, "reason": reason})
    if code == CloseCode.POLICY_VIOLATION:  # the client's buffer overflowed
        return disconnect_push(DISCONNECT_SLOW)
    if code in (CloseCode.GOING_AWAY, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER):
        return disconnect_push(DISCONNECT_SHUTDOWN)
    return disconnect_push(DISCONNECT_SERVER_ERROR)


class UniSessionHandler(SessionHandler):
    """A one-way connection: its connect request in, then only the server's pushes.

    What a one-way client sends after its connect request is read and dropped (as Go
    does; the hub still bounds its size and rate). A refused connect has no reply to
    carry its error: the connection gets the disconnect push the error maps to and is
    closed with it at once. A WebSocket gets each push in a message of its own
    (``split``), as Go sends them unless ``join_push_messages`` is set.
    """

    __slots__ = ("_refusal", "_split", "_started")

    def __init__(
        self, node: Node, client: Client, scope: Any, options: SessionOptions, *, split: bool
    ) -> None:
        # No pongs: a one-way client cannot answer a ping (and ``pong`` is false).
        super().__init__(node, client, scope, UNI_JSON, options=options)
        # Go gives each one-way connection a session (in its connect push): the server
        # API's ``session`` targets that one connection.
        self.session.session_id = str(uuid.uuid4())
        self._split = split
        self._started = False
        self._refusal: Disconnect | None = None

    def received(self, data: str | bytes) -> Coroutine[Any, Any, None] | None:  # type: ignore[override]
        if self._started:
            return None
        self._started = True
        return self._connect(data)

    async def _connect(self, request: str | bytes) -> None:
        try:
            connect_command(request)
        except DisconnectError as exc:
            await self._disconnect(exc)
            return
        await self._frame(request)
        refusal = self._refusal
        if refusal is not None and not self.client.closing:
            await self._close(refusal)

    def _emit(self, text: Frame) -> bool:
        if self._refusal is None and not self.session.connected:
            self._refusal = refused(text)
            if self._refusal is not None and not self._split:
                return True  # a stream says it in its farewell, as it closes
        return self._send(text)

    def _send(self, frame: Frame) -> bool:
        hub, client = self.node.hub, self.client
        if self._split and isinstance(frame, str) and "\n" in frame:
            sent = all([hub.send(client, line) for line in frame.split("\n")])
            return sent and not client.closing
        return hub.send(client, frame) and not client.closing

    async def _disconnect(self, exc: DisconnectError) -> None:
        if self._split:
            self._send(UNI_JSON.join([*exc.replies, disconnect_push(exc.disconnect)]))
        elif exc.replies:  # a stream says the disconnect in its farewell, as it closes
            self._send(UNI_JSON.join(exc.replies))
        await self._close(exc.disconnect)

    async def _close(self, disconnect: Disconnect) -> None:
        """Close after what was sent (the hub's close_client flushes the backlog first)."""
        await self.node.hub.close_client(self.client, disconnect.code, disconnect.reason)


class UniOptions:
    """The session options of one-way connections, made once per node: the node's,
    without pongs."""

    __slots__ = ("_node", "_options")

    def __init__(self) -> None:
        self._node: Node | None = None
        self._options: SessionOptions | None = None

    def of(self, node: Node) -> SessionOptions:
        if node is not self._node or self._options is None:
            self._node = node
            self._options = dataclasses.replace(node.options, pong_timeout=0.0)
        return self._options


def query_request(scope: Any) -> str | None:
    """The ``cf_connect`` URL parameter, or None; ValueError for a malformed query."""
    query = scope.get("query_string", b"").decode("latin-1")
    if not query:
        return None
    values = parse_qs(query, max_num_fields=32, strict_parsing=False, errors="strict")
    found = values.get(CONNECT_PARAM)
    return found[0] if found else None


def _declared_length(scope: Any) -> int | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def websocket_endpoint(node_of: NodeOf, options: UniOptions) -> ASGIApp:
    """``/connection/uni_websocket``: the connect request in the URL or the first message."""

    async def uni_websocket(scope: Any, receive: Receive, send: Send) -> None:
        try:
            node = node_of()
        except LookupError:
            await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER})
            return
        try:
            request = query_request(scope)
            if request is not None:
                connect_command(request)
        except (ValueError, DisconnectError):
            message = await receive()  # the handshake, to answer it
            if message["type"] == "websocket.connect":
                await deny_websocket(
                    scope, send, 400, "invalid connect request", close_code=CloseCode.NORMAL
                )
            return
        settings = options.of(node)
        hub = node.hub
        client = await hub.connect(
            ASGIConnection(receive, send, scope),
            lambda client: UniSessionHandler(node, client, scope, settings, split=True),
            protocol="centrifuge",
        )
        if client is None:
            return
        handler = client.handler
        connecting = None
        if request is not None and isinstance(handler, UniSessionHandler):
            connecting = handler.received(request)
        await hub.serve(client, connecting)

    return uni_websocket


def stream_endpoint(
    node_of: NodeOf,
    options: UniOptions,
    host: Host,
    *,
    framing: BodyFraming,
    headers: tuple[tuple[bytes, bytes], ...],
    get: bool,
    preamble: bytes = b"",
) -> ASGIApp:
    """``/connection/uni_sse`` (``get``: GET with ``cf_connect``, or POST) and
    ``/connection/uni_http_stream`` (POST): the connect request, then a body of pushes."""
    methods = b"GET, POST, OPTIONS" if get else b"POST, OPTIONS"

    async def uni_stream(scope: Any, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        if method == "OPTIONS":  # Go's answer to a preflight (CORS headers aside)
            preflight = [(b"access-control-max-age", b"300"),
                         (b"access-control-allow-methods", methods)]  # fmt: skip
            await send({"type": "http.response.start", "status": 204, "headers": preflight})
            await send({"type": "http.response.body", "body": b""})
            return
        request: str | bytes
        if method == "GET" and get:
            try:
                request = query_request(scope) or ""
            except ValueError:
                await send_text(send, 400, "malformed query string")
                return
        elif method == "POST":
            declared = _declared_length(scope)
            if declared is not None and declared > MAX_CONNECT_SIZE:
                await send_text(send, 413, f"connect request over {MAX_CONNECT_SIZE} bytes")
                return
            body = await read_body(receive, MAX_CONNECT_SIZE)
            if body is None:
                await send_text(send, 413, f"connect request over {MAX_CONNECT_SIZE} bytes")
                return
            request = body
        else:
            await send_text(send, 405, "method not allowed", [(b"allow", methods)])
            return
        try:
            connect_command(request)
        except DisconnectError:
            await send_text(send, 400, "malformed connect request")
            return
        try:
            node = node_of()
        except LookupError:
            await send_text(send, 503, "the server is starting or stopping")
            return
        hub = node.hub
        if not hub.running:
            await send_text(send, 503, "the server is starting or stopping")
            return
        release = host.hold_connection(scope)  # WebSockets and streams: one count
        if isinstance(release, tuple):
            await send_text(send, *release)
            return
        try:
            stream = await open_response(
                send,
                framing=framing,
                headers=headers,
                high_water=hub.direct_limit,
                farewell=farewell,
                preamble=preamble,
                take_over=hub.fast_path,  # --no-fast-path: through ASGI, as WebSockets
            )
        except BaseException:
            release()  # never attached: the hub will not
            raise
        settings = options.of(node)
        try:
            client = hub.attach(
                stream,
                stream.framing,
                lambda client: UniSessionHandler(node, client, scope, settings, split=False),
                release=release,
                protocol="centrifuge",
            )
        except HubClosed:  # stopping meanwhile
            release()
            stream.abort()
            return
        handler = client.handler
        if isinstance(handler, UniSessionHandler):
            connecting = handler.received(request)
            if connecting is not None:
                await connecting
        await stream.run(receive)

    return uni_stream


def uni_routes(host: Host, node_of: NodeOf) -> list[ASGIRoute]:
    """The one-way endpoints, at Centrifugo's default paths."""
    options = UniOptions()
    sse = stream_endpoint(
        node_of, options, host, framing=UNI_EVENTS, headers=SSE_HEADERS, get=True,
        preamble=b"\r\n",
    )  # fmt: skip
    http_stream = stream_endpoint(
        node_of, options, host, framing=LINES, headers=HTTP_STREAM_HEADERS, get=False
    )
    return [
        ASGIRoute(UNI_WEBSOCKET_PATH, websocket_endpoint(node_of, options), ("websocket",)),
        ASGIRoute(UNI_SSE_PATH, sse, ("http",)),
        ASGIRoute(UNI_HTTP_STREAM_PATH, http_stream, ("http",)),
    ]
