"""One Pusher connection: what it sends, read in order, and what it is subscribed to.

The hub hands each message to :meth:`PusherSession.received`; a subscribe (an auth
check, a broker round trip, a presence read) is awaited before the next message is
read, so a connection's commands take effect in the order it sent them.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from realtime.rate import Rate
from realtime_broker import BrokerError, Member, PresenceUnavailable, Publication
from realtime_hub import Client

from . import wire
from .apps import PusherApp
from .signing import channel_auth, check_auth, user_auth

if TYPE_CHECKING:
    from .node import PusherNode

log = logging.getLogger("realtime.pusher")

#: Channels one connection may be subscribed to at once. Below the hub's burst of
#: incoming frames (``max_incoming_rate``, 100 by default): pusher-js sends one
#: subscribe per channel, all at once, when it reconnects, and a signin beside them.
MAX_SUBSCRIPTIONS = 64
#: Client events a connection may send a second, in bursts of as many (Pusher's limit).
CLIENT_EVENT_RATE = Rate(10, 10)


class Subscription:
    """A channel a connection is in: its bus name, and its presence member if any."""

    __slots__ = ("bus", "kind", "pending", "user_id")

    def __init__(self, bus: str, kind: str) -> None:
        self.bus = bus
        self.kind = kind
        #: The presence member's user id (presence channels), once entered.
        self.user_id: str | None = None
        #: Joins and leaves heard before the members were sent, in order.
        self.pending: list[str] | None = None


class PusherSession:
    """The hub handler (and state) of one ``/app/{key}`` connection."""

    __slots__ = (
        "app",
        "client",
        "ended",
        "event_tat",
        "fmt",
        "last_seen",
        "node",
        "pinged",
        "socket_id",
        "subs",
        "user_data",
        "user_id",
        "user_keys",
    )

    def __init__(self, node: PusherNode, app: PusherApp, client: Client, socket_id: str) -> None:
        self.node = node
        self.app = app
        self.client = client
        self.socket_id = socket_id
        self.fmt = node.formats[app.id]
        #: Subscribed channels by Pusher name.
        self.subs: dict[str, Subscription] = {}
        #: The signed-in user (``pusher:signin``), and its ``user_data`` object.
        self.user_id: str | None = None
        self.user_data: dict[str, Any] | None = None
        #: Reasons this connection counts as each (app id, user id) (node.users).
        self.user_keys: dict[tuple[str, str], int] = {}
        self.last_seen = time.monotonic()
        self.pinged = False
        self.event_tat = 0.0
        #: The connection is over (:meth:`closed`): a subscribe under way undoes itself.
        self.ended = False

    # Sending ------------------------------------------------------------------

    def send(self, text: str) -> None:
        self.node.hub.send(self.client, text)

    async def close(self, code: int, reason: str) -> None:
        self.send(wire.error(reason, code))
        await self.node.hub.close_client(self.client, code, reason)

    # The hub's handler --------------------------------------------------------

    def received(self, data: str | bytes) -> Awaitable[None] | None:
        self.last_seen = time.monotonic()
        self.pinged = False
        try:
            message = json.loads(data)
        except (ValueError, RecursionError):
            self.send(wire.error("the message is not JSON"))
            return None
        if not isinstance(message, dict) or not isinstance(message.get("event"), str):
            self.send(wire.error("a message is a JSON object with an event name"))
            return None
        name: str = message["event"]
        payload = message.get("data")
        if name == "pusher:ping":
            self.send(wire.PONG)
        elif name == "pusher:pong":
            pass
        elif name == "pusher:subscribe":
            return self._subscribe(payload)
        elif name == "pusher:unsubscribe":
            return self._unsubscribe(payload)
        elif name == "pusher:signin":
            return self._signin(payload)
        elif name.startswith("client-"):
            return self._client_event(name, message.get("channel"), payload)
        else:
            self.send(wire.error(f"unsupported event {name[: wire.MAX_EVENT_NAME]!r}"))
        return None

    def closed(self) -> None:
        self.ended = True
        node = self.node
        node.unregister(self)
        for sub in self.subs.values():
            if sub.kind == "presence":
                self._leave_presence(sub)
        self.subs.clear()

    # Activity -----------------------------------------------------------------

    def check_activity(self, now: float) -> None:
        """Ping after ``activity_timeout`` of silence; 4201 when the pong does not come."""
        timeout = self.app.activity_timeout
        silent = now - self.last_seen
        if self.pinged:
            if silent >= timeout + min(timeout, wire.PONG_WAIT):
                self.node.spawn(self.close(wire.PONG_TIMEOUT, "Pong reply not received in time"))
                self.pinged = False
                self.last_seen = now  # closing: not again
        elif silent >= timeout:
            self.pinged = True
            self.send(wire.PING)

    # Subscriptions ------------------------------------------------------------

    async def _subscribe(self, data: Any) -> None:
        if self.ended:
            return
        if not isinstance(data, dict):
            self.send(wire.error("pusher:subscribe needs data with a channel"))
            return
        channel = data.get("channel")
        if not wire.valid_channel(channel):
            if isinstance(channel, str) and len(channel) <= wire.MAX_EVENT_NAME:
                self.send(
                    wire.subscription_error(
                        channel,
                        "InvalidChannel",
                        "channel names are up to 200 letters, digits and _-=@,.;",
                        400,
                    )
                )
            else:
                self.send(wire.error("invalid channel name", wire.CLIENT_EVENT_REFUSED))
            return
        assert isinstance(channel, str)
        if channel not in self.subs and len(self.subs) >= MAX_SUBSCRIPTIONS:
            self.send(
                wire.subscription_error(
                    channel,
                    "LimitReached",
                    f"a connection subscribes to {MAX_SUBSCRIPTIONS} channels at most",
                    400,
                )
            )
            return
        kind = wire.channel_kind(channel)
        app = self.app
        user_id: str | None = None
        user_info: Any = None
        if kind in ("private", "encrypted"):
            expected = channel_auth(app.key, app.secret, self.socket_id, channel)
            if not check_auth(expected, data.get("auth")):
                self._auth_error(channel)
                return
        elif kind == "presence":
            member = self._presence_member(channel, data)
            if member is None:
                return
            user_id, user_info = member
        elif kind == "user" and (
            self.user_id is None or channel != wire.USER_CHANNEL_PREFIX + self.user_id
        ):
            self._auth_error(channel)
            return
        elif kind == "public" and not self.node.open_channel(self.node.bus_channel(app, channel)):
            self.send(
                wire.subscription_error(
                    channel,
                    "AuthError",
                    "the server's channel rules let no anonymous client subscribe here",
                    403,
                )
            )
            return
        existing = self.subs.get(channel)
        if existing is not None:
            if kind == "presence" and existing.user_id != user_id:
                # A new member for this connection: out as the old one first.
                self._leave_presence(existing)
                del self.subs[channel]
            else:
                await self._succeeded(channel, existing)
                return
        bus = self.node.bus_channel(app, channel)
        if kind == "presence":
            assert user_id is not None
            try:
                full = await self.node.presence_full(app, bus, user_id)
            except (BrokerError, PresenceUnavailable) as exc:
                log.warning("pusher: presence read on %r failed: %r", bus, exc)
                full = False
            if full:
                self.send(
                    wire.subscription_error(
                        channel,
                        "LimitReached",
                        "The maximum members per presence channel limit was reached",
                        4100,
                    )
                )
                return
            if self.ended or channel in self.subs:
                return  # gone, or the same channel subscribed meanwhile
        sub = Subscription(bus, kind)
        self.subs[channel] = sub
        hub = self.node.hub
        hub.join(bus, self.client, self.fmt)
        if kind == "presence":
            assert user_id is not None
            sub.user_id = user_id
            sub.pending = []
            self.node.presence_sessions.setdefault(bus, {})[self.client.id] = self
            self.node.remember_user(app, user_id, self)
            info = None if user_info is None else wire.dumps(user_info)
            await hub.ready(bus)
            broker = self.node.broker
            try:
                await broker.join_presence(bus, Member(self.socket_id, user_id, info))
            except (ValueError, BrokerError) as exc:
                log.warning("pusher: presence join on %r failed: %r", bus, exc)
            if self.ended or self.subs.get(channel) is not sub:
                # Gone while joining: its leave may have gone before the join.
                await broker.leave_presence(bus, self.socket_id)
                return
        else:
            await hub.ready(bus)
        if self.subs.get(channel) is sub:
            await self._succeeded(channel, sub)

    async def _succeeded(self, channel: str, sub: Subscription) -> None:
        if sub.kind != "presence":
            self.send(wire.subscription_succeeded(channel))
            return
        try:
            members = await self.node.members(sub.bus, self.app.max_presence_members, sub.user_id)
        except (BrokerError, PresenceUnavailable) as exc:
            log.warning("pusher: presence read on %r failed: %r", sub.bus, exc)
            self.send(
                wire.subscription_error(channel, "ServerError", "presence is unavailable", 500)
            )
            return
        if self.subs.get(channel) is not sub:
            return  # unsubscribed meanwhile
        self.send(wire.subscription_succeeded(channel, members))
        pending, sub.pending = sub.pending, None
        for message in pending or ():
            self.send(message)

    def presence_event(self, bus: str, message: str) -> None:
        """A member added or removed on a presence channel this connection is in."""
        for sub in self.subs.values():
            if sub.bus == bus:
                if sub.pending is not None:
                    sub.pending.append(message)
                else:
                    self.send(message)
                return

    def _presence_member(self, channel: str, data: dict[str, Any]) -> tuple[str, Any] | None:
        """The (user id, user info) a presence subscribe is authorized for; None (and the
        error sent) if it is not."""
        app = self.app
        channel_data = data.get("channel_data")
        if channel_data is None and self.user_data is not None:
            # A signed-in connection's presence: as that user (pusher-js allows it).
            expected = channel_auth(app.key, app.secret, self.socket_id, channel)
            if not check_auth(expected, data.get("auth")):
                self._auth_error(channel)
                return None
            assert self.user_id is not None
            return self._bounded_member(channel, self.user_id, self.user_data.get("user_info"))
        if not isinstance(channel_data, str):
            self._auth_error(channel, "a presence channel's auth needs channel_data")
            return None
        expected = channel_auth(app.key, app.secret, self.socket_id, channel, channel_data)
        if not check_auth(expected, data.get("auth")):
            self._auth_error(channel)
            return None
        try:
            parsed = json.loads(channel_data)
        except (ValueError, RecursionError):
            parsed = None
        user_id = wire.user_id_of(parsed.get("user_id")) if isinstance(parsed, dict) else None
        if user_id is None:
            self._auth_error(channel, "channel_data needs a user_id (a string or a number)")
            return None
        assert isinstance(parsed, dict)
        return self._bounded_member(channel, user_id, parsed.get("user_info"))

    def _bounded_member(self, channel: str, user_id: str, user_info: Any) -> tuple[str, Any] | None:
        """``(user_id, user_info)``, or None (and the error sent) for an info over
        :data:`wire.MAX_MEMBER_INFO`: by channel_data or by signin alike."""
        if user_info is not None and len(wire.dumps(user_info).encode()) > wire.MAX_MEMBER_INFO:
            self.send(
                wire.subscription_error(
                    channel,
                    "LimitReached",
                    f"a member's user_info is {wire.MAX_MEMBER_INFO} bytes at most",
                    400,
                )
            )
            return None
        return user_id, user_info

    def _auth_error(self, channel: str, message: str = "") -> None:
        self.send(
            wire.subscription_error(
                channel,
                "AuthError",
                message or f"Invalid signature: the auth for {channel!r} does not match",
                401,
            )
        )

    async def _unsubscribe(self, data: Any) -> None:
        channel = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(channel, str):
            self.send(wire.error("pusher:unsubscribe needs data with a channel"))
            return
        sub = self.subs.pop(channel, None)
        if sub is None:
            return
        self.node.hub.leave(sub.bus, self.client)
        if sub.kind == "presence":
            self._leave_presence(sub)

    def _leave_presence(self, sub: Subscription) -> None:
        node = self.node
        sessions = node.presence_sessions.get(sub.bus)
        if sessions is not None:
            sessions.pop(self.client.id, None)
            if not sessions:
                del node.presence_sessions[sub.bus]
        if sub.user_id is not None:
            node.release_user(self.app, sub.user_id, self)
            node.spawn(node.broker.leave_presence(sub.bus, self.socket_id))
            sub.user_id = None

    # Signin -------------------------------------------------------------------

    async def _signin(self, data: Any) -> None:
        if not isinstance(data, dict):
            self.send(wire.error("pusher:signin needs data with auth and user_data"))
            return
        user_data = data.get("user_data")
        app = self.app
        if not isinstance(user_data, str) or not check_auth(
            user_auth(app.key, app.secret, self.socket_id, user_data), data.get("auth")
        ):
            await self.close(wire.UNAUTHORIZED, "Invalid signature: signin refused")
            return
        try:
            parsed = json.loads(user_data)
        except (ValueError, RecursionError):
            parsed = None
        user_id = parsed.get("id") if isinstance(parsed, dict) else None
        if not isinstance(user_id, str) or not 0 < len(user_id) <= wire.MAX_USER_ID:
            await self.close(wire.UNAUTHORIZED, "user_data needs an id (a string)")
            return
        assert isinstance(parsed, dict)
        if self.user_id is not None:
            if self.user_id == user_id:
                self.user_data = parsed
                self.send(wire.event("pusher:signin_success", {"user_data": user_data}))
                return
            self.node.forget_user((app.id, self.user_id), self)
        self.user_id = user_id
        self.user_data = parsed
        self.node.remember_user(app, user_id, self)
        self.send(wire.event("pusher:signin_success", {"user_data": user_data}))

    # Client events ------------------------------------------------------------

    async def _client_event(self, name: str, channel: Any, data: Any) -> None:
        app = self.app
        refused = wire.CLIENT_EVENT_REFUSED
        where = channel if isinstance(channel, str) and len(channel) <= 200 else None
        if not app.enable_client_messages:
            self.send(wire.error("client events are not enabled for this app", refused, where))
            return
        if len(name) > wire.MAX_EVENT_NAME:
            self.send(wire.error("event names are 200 characters at most", refused, where))
            return
        sub = self.subs.get(channel) if isinstance(channel, str) else None
        if sub is None:
            self.send(wire.error("client events go to a channel subscribed to", refused, where))
            return
        if sub.kind not in ("private", "presence"):
            # Not on encrypted channels either: their data is the clients' ciphertext,
            # and pusher-js refuses to send client events there.
            self.send(
                wire.error("client events go to private and presence channels", refused, where)
            )
            return
        now = time.monotonic()
        tat = CLIENT_EVENT_RATE.take(self.event_tat, now)
        if tat < 0:
            self.send(wire.error("client event rate limit: 10 a second", refused, where))
            return
        self.event_tat = tat
        text = data if isinstance(data, str) else wire.dumps(data)
        if len(text.encode()) > app.max_event_size:
            self.send(
                wire.error(f"client event data over {app.max_event_size} bytes", refused, where)
            )
            return
        attrs = {"user_id": sub.user_id} if sub.user_id is not None else None
        publication = Publication(
            text, json=not isinstance(data, str), event=name, skip=self.socket_id, attrs=attrs
        )
        try:
            await self.node.broker.publish(sub.bus, publication)
        except (BrokerError, ValueError) as exc:
            log.warning("pusher: client event on %r not published: %r", sub.bus, exc)
            self.send(wire.error("the client event could not be sent", refused, where))
