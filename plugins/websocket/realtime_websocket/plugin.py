"""The seed's ``handler`` module as a plugin: the ``/ws`` route and its client pool."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from hypercorn.config import Config as ServerConfig

from realtime import ASGIRoute, Host, Option, hookimpl
from realtime_broker import DEFAULT_CHANNEL, get_broker

from .connection import ASGIConnection, Receive, Send
from .pool import (
    CLOSE_MISSED,
    MAX_INCOMING_RATE,
    MAX_INCOMING_SIZE,
    OVERFLOW_POLICIES,
    Pool,
    PoolClosed,
)
from .state import EXTENSION_KEY, get_pool

log = logging.getLogger("realtime.websocket")


@hookimpl
def register_options() -> list[Option]:
    return [
        Option("ws_path", "/ws", "URL path of the WebSocket endpoint"),
        Option(
            "ping_interval",
            20.0,
            "seconds between keepalive pings (0 turns keepalive off)",
            type=float,
        ),
        Option(
            "pong_timeout",
            20.0,
            "seconds after a ping with nothing from the client before it is dropped",
            type=float,
        ),
        Option(
            "client_buffer",
            1024 * 1024,
            "bytes queued for one client before the overflow policy applies",
            type=int,
        ),
        Option(
            "overflow_policy",
            "close",
            "what to do with a client whose buffer overflows: close (code 1008) or drop-oldest",
            choices=OVERFLOW_POLICIES,
        ),
        Option(
            "fast_path",
            True,
            "write each broadcast's frame straight to every socket that keeps up "
            "(--no-fast-path: an ASGI websocket.send for every client)",
            type=bool,
        ),
        Option(
            "compression",
            False,
            "accept permessage-deflate when clients offer it (costs memory and CPU per "
            "connection and encodes every broadcast once per client)",
            type=bool,
        ),
        Option(
            "max_incoming_size",
            MAX_INCOMING_SIZE,
            "largest message a client may send, bytes (UTF-8 for text, inflated if "
            "compressed); past it the client is closed with 1009 and dropped",
            type=int,
        ),
        Option(
            "max_incoming_rate",
            MAX_INCOMING_RATE,
            "frames a client may send per second, pings included, in bursts of as many; "
            "past it the client is closed with 1008 and dropped (0: no limit)",
            type=int,
        ),
    ]


@hookimpl
def validate(host: Host) -> None:
    if host.settings["max_incoming_size"] <= 0:
        raise ValueError("--max-incoming-size must be positive")
    if host.settings["max_incoming_rate"] < 0:
        raise ValueError("--max-incoming-rate must be 0 (no limit) or positive")


@hookimpl
def register_routes(host: Host) -> list[ASGIRoute]:
    async def websocket_endpoint(scope: Any, receive: Receive, send: Send) -> None:
        try:
            pool = get_pool(host)
        except PoolClosed:
            await send({"type": "websocket.close", "code": 1013})
            return
        await pool.serve(ASGIConnection(receive, send))

    return [ASGIRoute(host.settings["ws_path"], websocket_endpoint, scope_types=("websocket",))]


@hookimpl
def configure_server(config: ServerConfig, settings: Mapping[str, Any]) -> None:
    interval = settings["ping_interval"]
    if interval > 0:
        config.websocket_ping_interval = interval
        # Hypercorn sends pings but never checks for pongs; a read timeout just
        # longer than the ping interval drops a peer that has vanished silently,
        # even behind Caddy. It also bounds a plain HTTP request, so it must
        # outlast the host's script timeout.
        pong_deadline = interval + settings["pong_timeout"]
        config.read_timeout = math.ceil(max(pong_deadline, settings["script_timeout"] + 1))
    config.websocket_max_message_size = settings["max_incoming_size"]


@hookimpl
def startup(host: Host) -> None:
    pool = Pool(
        max_buffer=host.settings["client_buffer"],
        overflow=host.settings["overflow_policy"],
        fast_path=host.settings["fast_path"],
        compression=host.settings["compression"],
        max_incoming_size=host.settings["max_incoming_size"],
        max_incoming_rate=host.settings["max_incoming_rate"],
    )
    pool.start()
    host.app.extensions[EXTENSION_KEY] = pool
    # Every broadcast reaches the pool through the broker, from whichever process made it.
    broker = get_broker(host)
    broker.subscribe(DEFAULT_CHANNEL, pool.publish, count=pool.__len__)

    def missed(channel: str, count: int) -> None:
        # Clients must not believe they saw everything: close them, they reconnect.
        closed = pool.disconnect_all(CLOSE_MISSED, f"missed {count} broadcast(s); reconnect")
        log.warning("closed %d client(s) that missed %d broadcast(s)", closed, count)

    broker.on_loss(missed)


@hookimpl
async def drain(host: Host, grace: float) -> None:
    pool = host.app.extensions.get(EXTENSION_KEY)
    if isinstance(pool, Pool):
        await pool.close(grace=grace)


@hookimpl
async def shutdown(host: Host) -> None:
    pool = host.app.extensions.pop(EXTENSION_KEY, None)
    if isinstance(pool, Pool):
        await pool.close()
