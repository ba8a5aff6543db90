"""Bidirectional emulation: the Centrifuge protocol where WebSockets cannot go.

As centrifuge-js and Centrifugo do it: the client opens one long response and reads
the server's replies and pushes from it, and sends its commands in separate POSTs.

- ``POST /connection/http_stream``: the body is the connect command (JSON, or
  protobuf with ``Content-Type: application/octet-stream``); the response body is
  the stream, newline-delimited JSON or varint-delimited protobuf replies.
- ``GET /connection/sse?cf_connect=<connect command JSON>`` (or ``POST`` with it as
  the body): a ``text/event-stream``, one event per frame, JSON only.
- ``POST /emulation``: ``{"node", "session", "data"}`` (JSON, ``data`` the commands'
  text) or a protobuf ``EmulationRequest``; answered 204 once handed over, 404 for
  a node the cluster does not know, 400 malformed, 413 too large, 429 too fast.

Each stream runs a :class:`.transport.SessionHandler` as a WebSocket does, attached
to the hub (:func:`realtime_hub.httpstream.open_response`): publications take the
same fast path, with the same bounds and overflow policy. The connect result names
the stream's ``node`` and ``session``; requests reaching another process are routed
to it (:mod:`.emulation_routing`). The session ends with a ``disconnect`` push and
the end of the body.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from realtime import ASGIRoute, Host, log_access
from realtime.routes import read_body
from realtime_hub import HubClosed, Receive, Send
from realtime_hub.httpstream import BARE, EVENTS, LINES, BodyFraming, open_response

from .api import CLIENT_GONE, send_text
from .emulation_routing import EmulatedSession, Emulation, Refused
from .transport import SessionHandler
from .wire import JSON, Codec

if TYPE_CHECKING:
    from .node import Node

ASGIApp = Callable[[Any, Receive, Send], Coroutine[Any, Any, None]]

HTTP_STREAM_PATH = "/connection/http_stream"
SSE_PATH = "/connection/sse"
EMULATION_PATH = "/emulation"
#: The URL parameter an SSE client puts its connect command in (Centrifugo's).
CONNECT_PARAM = "cf_connect"
#: Where a node keeps its emulation layer (``app.extensions``): per host.
EXTENSION_KEY = "centrifuge.emulation"
BINARY = b"application/octet-stream"
#: Answer to a browser's preflight, as Go's handlers give it.
PREFLIGHT = [
    (b"access-control-max-age", b"300"),
    (b"access-control-allow-methods", b"POST, OPTIONS"),
]
#: Disconnects below this are the transport's (a server going away, a slow client's
#: overflow): the body just ends, and the client reconnects as after a dropped stream.
FIRST_PROTOCOL_CODE = 3000


def _protobuf() -> Codec | None:
    """The protobuf codec, where this installation has it (:mod:`.protobuf`)."""
    try:
        module = importlib.import_module(".protobuf", __package__)
    except ImportError:  # pragma: no cover - a build without the generated module
        return None
    codec: Codec | None = getattr(module, "PROTOBUF", None)
    return codec


def emulation_of(host: Host, node: Node) -> Emulation:
    """The node's emulation layer, made at its first use (one per running node)."""
    layer = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(layer, Emulation) or layer.node is not node:
        if isinstance(layer, Emulation):
            layer.close()
        layer = host.app.extensions[EXTENSION_KEY] = Emulation(node)
    return layer


def _header(scope: Any, name: bytes) -> bytes:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value)
    return b""


async def _refuse_method(scope: Any, send: Send, allowed: bytes) -> bool:
    """Answer a preflight (204) or a wrong method (405); True when answered."""
    method = scope.get("method", "")
    if method == "OPTIONS":
        await send({"type": "http.response.start", "status": 204, "headers": PREFLIGHT})
        await send({"type": "http.response.body", "body": b""})
        return True
    if method.encode() not in allowed.split(b", "):
        await send_text(send, 405, "method not allowed", [(b"allow", allowed)])
        return True
    return False


def _content_length(scope: Any) -> int | None:
    value = _header(scope, b"content-length")
    return int(value) if value.isdigit() else None


async def _body_or_refuse(scope: Any, receive: Receive, send: Send, limit: int) -> bytes | None:
    declared = _content_length(scope)
    if declared is not None and declared > limit:
        await send_text(send, 413, f"request body over {limit} bytes")
        return None
    body = await read_body(receive, limit)
    if body is None:
        await send_text(send, 413, f"request body over {limit} bytes")
    return body


async def serve_stream(
    layer: Emulation,
    scope: Any,
    receive: Receive,
    send: Send,
    *,
    codec: Codec,
    framing: BodyFraming,
    headers: list[tuple[bytes, bytes]],
    commands: str | bytes,
    preamble: bytes = b"",
) -> None:
    """One emulated connection: counted, the response opened, the session attached to
    the hub and fed its connect command, then held until it ends."""
    node = layer.node
    hub = node.hub
    session_id = str(uuid.uuid4())

    def farewell(code: int, reason: str) -> str | bytes | None:
        if code < FIRST_PROTOCOL_CODE:
            return None
        return codec.encode_push("", "disconnect", {"code": code, "reason": reason})

    def handler(client: Any) -> SessionHandler:
        made = SessionHandler(node, client, scope, codec, session_type=EmulatedSession)
        session = made.session
        assert isinstance(session, EmulatedSession)
        session.emulation = (layer.uid, session_id)
        session.session_id = session_id  # what the server API's ``session`` targets
        return made

    if not hub.running:
        await send_text(send, 503, "the server is starting or stopping")
        return
    release = node.host.hold_connection(scope)  # WebSockets and streams: one count
    if isinstance(release, tuple):
        await send_text(send, *release)
        return

    def ended() -> None:
        layer.release(session_id)
        release()

    method, path = str(scope.get("method", ""))[:16], str(scope["path"])[:256]
    log_access("emulation", method, path, 200, 0.0)
    try:
        stream = await open_response(
            send,
            framing=framing,
            headers=headers,
            high_water=hub.direct_limit,
            farewell=farewell,
            preamble=preamble,
            take_over=hub.fast_path,
        )
        client = hub.attach(stream, stream.framing, handler, release=ended, protocol="centrifuge")
    except HubClosed:
        release()
        stream.abort()
        return
    except BaseException:
        release()
        raise
    if client.handler is None:
        return  # ended already (the client left while it was set up): released
    layer.hold(session_id, client)
    with contextlib.suppress(Refused):
        await layer.dispatch(layer.uid, session_id, commands)
    await stream.run(receive)


def _json_request(body: bytes) -> tuple[str, str, str | bytes]:
    parsed = json.loads(body)
    node, session, data = parsed["node"], parsed["session"], parsed["data"]
    if not (isinstance(node, str) and isinstance(session, str) and isinstance(data, str)):
        raise TypeError("node, session and data are strings")
    return node, session, data


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(10):
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint over 10 bytes")


def protobuf_request(body: bytes) -> tuple[str, str, bytes]:
    """An ``EmulationRequest`` (node = 1, session = 2, data = 3; unknown fields skipped)."""
    fields: dict[int, bytes] = {}
    pos = 0
    while pos < len(body):
        key, pos = _varint(body, pos)
        number, kind = key >> 3, key & 7
        if kind == 0:
            _, pos = _varint(body, pos)
        elif kind == 2:
            size, pos = _varint(body, pos)
            if size > len(body) - pos:
                raise ValueError("a field runs past the end")
            fields[number] = body[pos : pos + size]
            pos += size
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
            if pos > len(body):
                raise ValueError("a field runs past the end")
        else:
            raise ValueError(f"wire type {kind}")
    return fields.get(1, b"").decode(), fields.get(2, b"").decode(), fields.get(3, b"")


def routes(host: Host, node_of: Callable[[], Node]) -> list[ASGIRoute]:
    """The three endpoints, to splice into the plugin's routes."""

    async def layer_of(send: Send) -> Emulation | None:
        try:
            node = node_of()
        except LookupError:
            await send_text(send, 503, "the server is starting or stopping")
            return None
        return emulation_of(host, node)

    async def http_stream(scope: Any, receive: Receive, send: Send) -> None:
        if await _refuse_method(scope, send, b"POST"):
            return
        layer = await layer_of(send)
        if layer is None:
            return
        codec: Codec = JSON
        if _header(scope, b"content-type").split(b";")[0].strip() == BINARY:
            protobuf = _protobuf()
            if protobuf is None:
                await send_text(send, 415, "the protobuf codec is not available here")
                return
            codec = protobuf
        body = await _body_or_refuse(scope, receive, send, layer.max_size)
        if body is None:
            return
        commands: str | bytes = body
        if not codec.binary:
            try:
                commands = body.decode()
            except UnicodeDecodeError:
                await send_text(send, 400, "the connect command is not UTF-8")
                return
        content_type = BINARY if codec.binary else b"application/json"
        await serve_stream(
            layer, scope, receive, send,
            codec=codec,
            framing=BARE if codec.binary else LINES,
            headers=[(b"content-type", content_type)],
            commands=commands,
        )  # fmt: skip

    async def sse(scope: Any, receive: Receive, send: Send) -> None:
        if await _refuse_method(scope, send, b"GET, POST"):
            return
        layer = await layer_of(send)
        if layer is None:
            return
        if scope["method"] == "GET":
            query = scope.get("query_string", b"")
            if len(query) > 4 * layer.max_size:
                await send_text(send, 413, "query string too long")
                return
            try:
                values = parse_qs(query.decode("latin-1"), max_num_fields=20)
            except ValueError:
                values = {}
            found = values.get(CONNECT_PARAM, [])
            commands = found[0] if found else ""
            if not commands:
                await send_text(send, 400, f"no {CONNECT_PARAM} parameter")
                return
            if len(commands) > layer.max_size:
                await send_text(send, 413, f"{CONNECT_PARAM} over {layer.max_size} bytes")
                return
            # parse_qs read it as Latin-1: the UTF-8 text the browser encoded.
            with contextlib.suppress(UnicodeError):
                commands = commands.encode("latin-1").decode()
        else:
            body = await _body_or_refuse(scope, receive, send, layer.max_size)
            if body is None:
                return
            commands = body.decode(errors="replace")
        await serve_stream(
            layer, scope, receive, send,
            codec=JSON,
            framing=EVENTS,
            headers=[(b"content-type", b"text/event-stream; charset=utf-8")],
            commands=commands,
            preamble=b"\r\n",
        )  # fmt: skip

    async def emulation(scope: Any, receive: Receive, send: Send) -> None:
        if await _refuse_method(scope, send, b"POST"):
            return
        layer = await layer_of(send)
        if layer is None:
            return
        body = await _body_or_refuse(scope, receive, send, layer.max_size)
        if body is None:
            return
        data: str | bytes
        try:
            if _header(scope, b"content-type").split(b";")[0].strip() == BINARY:
                target, session, data = protobuf_request(body)
            else:
                target, session, data = _json_request(body)
        except (ValueError, KeyError, TypeError, RecursionError):
            await send_text(send, 400, "not an emulation request")
            return
        if not data:
            await send_text(send, 400, "no commands")
            return
        try:
            address = str((scope.get("client") or ("unknown",))[0])
            await layer.dispatch(target, session, data, address)
        except Refused as refused:
            await send_text(send, refused.status, refused.text)
            return
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return [
        ASGIRoute(HTTP_STREAM_PATH, http_stream, ("http",)),
        ASGIRoute(SSE_PATH, sse, ("http",)),
        ASGIRoute(EMULATION_PATH, logged(emulation), ("http",)),
    ]


def logged(app: ASGIApp) -> ASGIApp:
    """One access line per request (as the server API's): which host answered what.

    Not for the streams, whose ``send`` must stay Hypercorn's own to be taken over:
    :func:`serve_stream` logs each one as it opens.
    """

    async def run(scope: Any, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = CLIENT_GONE

        async def watched(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await app(scope, receive, watched)
        finally:
            method = str(scope.get("method", ""))[:16]
            log_access(
                "emulation", method, str(scope["path"])[:256], status, time.perf_counter() - started
            )

    return run
