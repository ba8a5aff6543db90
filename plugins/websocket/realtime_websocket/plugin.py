"""The seed's ``handler`` module as a plugin: the raw ``/ws`` endpoint over the hub.

A raw client gets each publication of its channel as it was published (``str`` as a
text frame, ``bytes`` as a binary one, a JSON value as its JSON text) and what it
sends is read and discarded. ``/ws`` listens to the ``default`` channel, which is
where ``broadcast("...")`` publishes; ``/ws?channel=NAME`` to another one that the
hub's channel policy lets anonymous clients read.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from realtime import ASGIRoute, Host, Option, hookimpl
from realtime_broker import DEFAULT_CHANNEL, PresenceEvent
from realtime_hub import (
    ASGIConnection,
    Client,
    Format,
    Hub,
    HubClosed,
    Receive,
    Send,
    get_hub,
)
from realtime_hub.closecode import CloseCode
from realtime_hub.policy import ChannelPolicy

#: The raw endpoint is clients of the hub: without it start-up stops, naming both.
REQUIRES = ("hub",)

#: The raw endpoint's one setting, declared once.
WS_PATH = Option("ws_path", "/ws", "URL path of the raw WebSocket endpoint")


class RawFormat:
    """Publications as they were published: no envelope, nothing added."""

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        if isinstance(publication, PresenceEvent):
            return None  # joins and leaves are for protocols that can say them
        data: str | bytes = publication.data
        return data

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        # A raw client cannot be told what it missed: close it as a restart would, and
        # it reconnects knowing.
        hub.disconnect(client, CloseCode.SERVICE_RESTART, f"missed {count} broadcast(s); reconnect")


class Discard:
    """What a raw client sends is read and dropped; one object serves them all."""

    def received(self, data: str | bytes) -> None:
        return None

    def closed(self) -> None:
        pass


_DISCARD = Discard()


def _discard(client: Client) -> Discard:
    return _DISCARD


@hookimpl
def register_options() -> list[Option]:
    return [WS_PATH]


def channel_of(scope: Any, policy: ChannelPolicy) -> str | None:
    """The channel asked for in the query string (``default`` when none); None if refused.

    Raw clients carry no credentials and the raw protocol has no hooks: they may listen
    where the policy lets anonymous clients subscribe without a grant, by its own
    answer (by default, any top-level name).
    """
    query_string = scope.get("query_string", b"")
    names = None
    if query_string:
        try:
            query = parse_qs(
                query_string.decode("latin-1"), keep_blank_values=True, max_num_fields=10
            )
        except ValueError:
            return None
        names = query.get("channel")
    name: str = names[-1] if names else DEFAULT_CHANNEL
    if not policy.may_subscribe("", name).allowed:
        return None
    return name


@hookimpl
def register_routes(host: Host) -> list[ASGIRoute]:
    raw: Format = RawFormat()

    async def websocket_endpoint(scope: Any, receive: Receive, send: Send) -> None:
        try:
            hub = get_hub(host)
        except HubClosed:
            await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER})
            return
        policy: ChannelPolicy = hub.rules
        channel = channel_of(scope, policy)
        if channel is None:
            # 403 before the upgrade
            await send({"type": "websocket.close", "code": CloseCode.POLICY_VIOLATION})
            return
        client = await hub.connect(ASGIConnection(receive, send, scope), _discard, protocol="raw")
        if client is None:
            return
        hub.identify(client)  # anonymous: /ws has no users
        hub.join(channel, client, raw)
        # Subscribed on the broker before anything else: one Redis round trip.
        await hub.serve(client, hub.ready(channel))

    return [ASGIRoute(host.setting(WS_PATH), websocket_endpoint, scope_types=("websocket",))]
