"""The ``/app/{key}`` WebSocket endpoint: one prefix route, ``/app/``, for every key.

A known key gets ``pusher:connection_established``; an unknown one is accepted and
closed with 4001 (after a ``pusher:error`` saying so), as Pusher does, so pusher-js
stops rather than retries; an unsupported ``protocol`` is closed with 4007. The
host's origin check applies to these handshakes as to every WebSocket.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from realtime import ASGIRoute, Host
from realtime.routes import AnyRoute
from realtime_hub import ASGIConnection, CloseCode, HubClosed, Receive, Send

from . import wire
from .apps import Apps
from .node import get_node
from .session import PusherSession

#: Where every app's socket is: ``/app/{key}``.
PATH_PREFIX = "/app/"


def protocol_of(scope: Any) -> int | None:
    """The ``protocol`` query parameter (pusher-js sends 7); None when absent or not
    a number."""
    query_string = scope.get("query_string", b"")
    if not query_string:
        return None
    try:
        query = parse_qs(query_string.decode("latin-1"), max_num_fields=20)
    except ValueError:
        return None
    values = query.get("protocol")
    if not values:
        return None
    try:
        return int(values[-1])
    except ValueError:
        return -1


async def refuse(receive: Receive, send: Send, code: int, message: str) -> None:
    """Accept the handshake, say why in a ``pusher:error``, close with ``code``."""
    first = await receive()
    if first.get("type") != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": wire.error(message, code)})
    await send({"type": "websocket.close", "code": code, "reason": message[:120]})


def routes(host: Host, apps: Apps) -> list[AnyRoute]:
    """``/app/`` and everything under it, for WebSocket handshakes only."""

    async def endpoint(scope: Any, receive: Receive, send: Send) -> None:
        key = scope.get("path", "")[len(PATH_PREFIX) :]
        app = apps.by_key.get(key)
        if app is None:
            await refuse(receive, send, wire.APP_NOT_FOUND, f"App key {key[:64]} does not exist")
            return
        protocol = protocol_of(scope)
        if protocol is not None and protocol not in wire.PROTOCOLS:
            await refuse(
                receive, send, wire.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol}"
            )
            return
        try:
            node = get_node(host)
            hub = node.hub
            if not hub.running:
                raise HubClosed
        except (LookupError, HubClosed):
            await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER})
            return
        socket_id = wire.new_socket_id()
        while hub.named(socket_id) is not None:  # 62 random bits: never, in practice
            socket_id = wire.new_socket_id()
        sessions: list[PusherSession] = []

        def handler(client: Any) -> PusherSession:
            session = PusherSession(node, app, client, socket_id)
            client.state = session
            sessions.append(session)
            return session

        client = await hub.connect(ASGIConnection(receive, send, scope), handler, protocol="pusher")
        if client is None:
            return
        hub.identify(client, name=socket_id)
        session = sessions[0]
        node.register(session)
        hub.send(client, wire.connection_established(socket_id, app.activity_timeout))
        await hub.serve(client)

    return [ASGIRoute(PATH_PREFIX, endpoint, scope_types=("websocket",), prefix=True)]
