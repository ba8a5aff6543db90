"""The hub plugin: the fan-out engine and its settings, bridged to the broker.

A process subscribes a channel on the broker when its first local subscriber joins
and unsubscribes when the last one leaves, so it receives only what its clients
want; a loss the broker detects on a channel is told to that channel's clients only.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from functools import partial
from typing import Any

from hypercorn.config import Config as ServerConfig

from realtime import Host, Option, hookimpl
from realtime.settings import SCRIPT_TIMEOUT
from realtime_broker import Deliver, PresenceEvent, get_broker

from . import hooks
from .channels import ChannelRules
from .engine import MAX_INCOMING_RATE as DEFAULT_MAX_INCOMING_RATE
from .engine import MAX_INCOMING_SIZE as DEFAULT_MAX_INCOMING_SIZE
from .engine import OVERFLOW_POLICIES, Hub, OverflowPolicy
from .metrics import HubMetrics
from .state import EXTENSION_KEY

#: The hub wires itself to the broker in ``startup``; the broker connects afterwards.
REQUIRES = ("broker",)


def channel_table(text: str) -> Any:
    """``--channel`` or ``REALTIME_CHANNEL``: the ``[channel]`` table as JSON."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ValueError(f"expected the [channel] table as JSON: {exc}") from None


#: The hub's settings, declared once: others read them with ``host.setting(...)``.
CHANNEL: Option[Any] = Option(
    "channel",
    None,
    "channel namespaces and permissions, Centrifugo's [channel] layout (a table in "
    "realtime.toml, JSON here); unset: the library's default rules (docs/channels.md); "
    "the chat demo sets its own in app/realtime.toml",
    type=channel_table,
)

PING_INTERVAL = Option(
    "ping_interval",
    20.0,
    "seconds between WebSocket keepalive pings (0 turns keepalive off)",
    type=float,
)

PONG_TIMEOUT = Option(
    "pong_timeout",
    20.0,
    "seconds after a ping with nothing from the client before it is dropped",
    type=float,
)

CLIENT_BUFFER = Option(
    "client_buffer",
    1024 * 1024,
    "bytes queued for one client before the overflow policy applies",
    type=int,
)

OVERFLOW_POLICY: Option[OverflowPolicy] = Option(
    "overflow_policy",
    "close",
    "what to do with a client whose buffer overflows: close (code 1008) or drop-oldest",
    choices=OVERFLOW_POLICIES,
)

FAST_PATH = Option(
    "fast_path",
    True,
    "write each publication's frame straight to every socket that keeps up "
    "(--no-fast-path: an ASGI websocket.send for every client)",
    type=bool,
)

COMPRESSION = Option(
    "compression",
    False,
    "accept permessage-deflate when clients offer it (costs memory and CPU per "
    "connection and encodes every publication once per client)",
    type=bool,
)

MAX_INCOMING_SIZE = Option(
    "max_incoming_size",
    DEFAULT_MAX_INCOMING_SIZE,
    "largest message a client may send, bytes (UTF-8 for text, inflated if "
    "compressed); past it the client is closed with 1009 and dropped",
    type=int,
)

MAX_INCOMING_RATE = Option(
    "max_incoming_rate",
    DEFAULT_MAX_INCOMING_RATE,
    "frames a client may send per second, pings included, in bursts of as many; "
    "past it the client is closed with 1008 and dropped (0: no limit)",
    type=int,
)


@hookimpl
def register_options() -> list[Option]:
    return [
        CHANNEL,
        PING_INTERVAL,
        PONG_TIMEOUT,
        CLIENT_BUFFER,
        OVERFLOW_POLICY,
        FAST_PATH,
        COMPRESSION,
        MAX_INCOMING_SIZE,
        MAX_INCOMING_RATE,
    ]


def channel_rules(settings: Mapping[str, Any]) -> ChannelRules:
    table = CHANNEL.get(settings)
    return ChannelRules.defaults() if table is None else ChannelRules.from_config(table)


@hookimpl
def validate(host: Host) -> None:
    channel_rules(host.settings)
    if host.setting(MAX_INCOMING_SIZE) <= 0:
        raise ValueError("--max-incoming-size must be positive")
    if host.setting(MAX_INCOMING_RATE) < 0:
        raise ValueError("--max-incoming-rate must be 0 (no limit) or positive")


@hookimpl
def configure_server(config: ServerConfig, settings: Mapping[str, Any]) -> None:
    interval = PING_INTERVAL.get(settings)
    if interval > 0:
        config.websocket_ping_interval = interval
        # Hypercorn sends pings but never checks for pongs; a read timeout just
        # longer than the ping interval drops a peer that has vanished silently,
        # even behind Caddy. It also bounds a plain HTTP request, so it must
        # outlast the host's script timeout.
        pong_deadline = interval + PONG_TIMEOUT.get(settings)
        config.read_timeout = math.ceil(max(pong_deadline, SCRIPT_TIMEOUT.get(settings) + 1))
    config.websocket_max_message_size = MAX_INCOMING_SIZE.get(settings)


@hookimpl
def register_hookspecs() -> object:
    return hooks


def _reserving(rules: ChannelRules, host: Host) -> ChannelRules:
    """``rules`` with the prefixes other protocols reserve (the reserve_channels hook)."""
    reserved = tuple(
        str(prefix)
        for _, prefixes in host.plugins.call_each("reserve_channels", host=host)
        for prefix in prefixes
        if prefix
    )
    return dataclasses.replace(rules, reserved=reserved) if reserved else rules


@hookimpl
def startup(host: Host) -> None:
    hub = Hub(
        max_buffer=host.setting(CLIENT_BUFFER),
        overflow=host.setting(OVERFLOW_POLICY),
        fast_path=host.setting(FAST_PATH),
        compression=host.setting(COMPRESSION),
        max_incoming_size=host.setting(MAX_INCOMING_SIZE),
        max_incoming_rate=host.setting(MAX_INCOMING_RATE),
        rules=_reserving(channel_rules(host.settings), host),
        ping_interval=host.setting(PING_INTERVAL),
        pong_timeout=host.setting(PONG_TIMEOUT),
    )
    hub.start()
    host.app.extensions[EXTENSION_KEY] = hub
    # One sampler turns the hub's running counts into metrics, off the fan-out path.
    host.telemetry.sampler(HubMetrics(hub, host.telemetry).sample)
    broker = get_broker(host)
    delivering: dict[str, Deliver] = {}

    def first(channel: str) -> None:
        deliver = delivering[channel] = partial(hub.publish, channel)
        broker.subscribe(channel, deliver)

    def last(channel: str) -> None:
        deliver = delivering.pop(channel, None)
        if deliver is not None:
            broker.unsubscribe(channel, deliver)

    hub.on_first = first
    hub.on_last = last
    hub.confirm = broker.ready
    broker.history_policy = hub.rules.history_of
    broker.presence_policy = hub.rules.presence_of

    def presence(channel: str, event: PresenceEvent) -> None:
        # Joins and leaves go out like publications: each format says what its clients
        # see. The last leaves come while the hub closes: nobody is left to tell.
        if hub.running:
            hub.publish(channel, event)

    broker.on_presence(presence)
    broker.add_counter(hub.__len__)
    broker.add_channel_counter(hub.channel_counts)
    broker.on_loss(hub.lost)


@hookimpl
async def drain(host: Host, grace: float) -> None:
    hub = host.app.extensions.get(EXTENSION_KEY)
    if isinstance(hub, Hub):
        await hub.close(grace=grace)


@hookimpl
async def shutdown(host: Host) -> None:
    hub = host.app.extensions.pop(EXTENSION_KEY, None)
    if isinstance(hub, Hub):
        await hub.close()
