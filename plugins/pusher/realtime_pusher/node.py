"""The running Pusher side of one host: its apps, its connections by user, presence
channels tracked by the broker, and what the HTTP API asks of them.

Publications reach Pusher connections through the hub in a :class:`PusherFormat`, one
per app (it strips the app's channel prefix): encoded once per channel and publication.
Presence joins and leaves come from the broker's store (:class:`PresenceEvent`, with
its user-level first/last flag), so ``member_added`` and ``member_removed`` are said
once per user across every host; the node tells its own presence subscribers, each
but the connection that caused it.

What concerns connections on other hosts (``terminate_user``) travels as a control
message on the broker (:meth:`realtime_broker.Broker.publish_control`), a JSON object
with an ``op`` as the Centrifuge node's are (each plugin ignores the other's ops).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from realtime import Host
from realtime_broker import (
    MAX_CONTROL_SIZE,
    Broker,
    Member,
    PresenceEvent,
    PresenceMode,
    get_broker,
)
from realtime_broker.presence import MAX_PRESENCE_MEMBERS
from realtime_hub import Client, Hub, get_hub

from . import wire
from .api_fields import RESERVED_EVENT_PREFIXES
from .apps import Apps, PusherApp
from .plugin import PUSHER_DEFAULT_EVENT

if TYPE_CHECKING:
    from .session import PusherSession

log = logging.getLogger("realtime.pusher")

#: Where a host keeps its node (``app.extensions``).
EXTENSION_KEY = "realtime_pusher.node"
#: The Pusher channel a signed-in user's own events go to (as Pusher names it).
USER_CHANNEL_PREFIX = wire.USER_CHANNEL_PREFIX
#: The control messages' op (the Centrifuge node ignores ops it does not know).
TERMINATE_OP = "pusher.terminate"
#: How a terminate control message begins (see _control).
TERMINATE_MARK = b'{"op":"pusher.terminate",'

#: The presence mode of a Pusher presence channel: listed and announced.
PRESENCE_MODE = PresenceMode(listed=True, announced=True)


class PusherFormat:
    """Publications as one app's connections see them: ``{"event", "channel", "data"}``
    with the app's prefix stripped from the channel and ``data`` a string (a JSON
    publication's text as that string, text as is). Binary publications are not sent:
    Pusher has no binary messages. Joins and leaves are said by the node instead."""

    __slots__ = ("default_event", "prefix_length")

    def __init__(self, prefix: str, default_event: str) -> None:
        self.prefix_length = len(prefix)
        self.default_event = default_event

    def encode(self, channel: str, publication: Any) -> str | None:
        if isinstance(publication, PresenceEvent):
            return None
        data = publication.data
        if not isinstance(data, str):
            return None
        event = publication.event or self.default_event
        if event.startswith(RESERVED_EVENT_PREFIXES):
            # The protocol's own (member_added, subscription_succeeded, errors): said by
            # this server only, never by a publisher (a Mercure update's ``type``).
            return None
        message: dict[str, Any] = {
            "event": event,
            "channel": channel[self.prefix_length :],
            "data": data,
        }
        attrs = publication.attrs
        if attrs is not None:
            user_id = attrs.get("user_id")
            if user_id is not None:
                message["user_id"] = user_id
        return wire.dumps(message)

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        # Pusher recovers nothing: the client reconnects at once and subscribes again.
        hub.disconnect(client, wire.RECONNECT, f"missed {count} message(s); reconnect")


class PusherNode:
    """Per host: nothing here is shared between two apps of the host."""

    def __init__(self, host: Host, apps: Apps, hub: Hub, broker: Broker) -> None:
        self.host = host
        self.apps = apps
        self.hub = hub
        self.broker = broker
        #: The event name of a publication that has none (a script's ``broadcast("hi",
        #: channel="news")``), as pusher-js binds it (``channel.bind("message", ...)``).
        self.default_event: str = PUSHER_DEFAULT_EVENT.get(host.settings) or "message"
        self.formats = {app.id: PusherFormat(apps.prefix(app), self.default_event) for app in apps}
        #: This host's sessions in each presence bus channel, by hub client id.
        self.presence_sessions: dict[str, dict[int, PusherSession]] = {}
        #: Connections of each (app id, user id): signed in, or in a presence channel.
        self.users: dict[tuple[str, str], dict[int, PusherSession]] = {}
        #: Every session of this host, by hub client id (for the activity sweep).
        self.sessions: dict[int, PusherSession] = {}
        self._prefixes = sorted(
            ((apps.prefix(app), app) for app in apps), key=lambda entry: -len(entry[0])
        )
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._stop_control: Callable[[], None] | None = None
        self._policy: Callable[[str], PresenceMode | None] | None = None

    # The interface of the HTTP API (helper P2) --------------------------------

    def bus_channel(self, app: PusherApp, pusher_channel: str) -> str:
        """The bus channel of ``app``'s ``pusher_channel`` (the app's prefix in front)."""
        return self.apps.prefix(app) + pusher_channel

    def open_channel(self, bus: str) -> bool:
        """Whether a public Pusher channel may be the bus channel ``bus``: where the
        hub's rules let anonymous clients listen (as raw ``/ws`` asks them), or a name
        no other protocol's client can subscribe to (another app's ``2:`` prefix, an
        unknown namespace). Else the channel is guarded there (a Centrifuge namespace
        whose clients need a token) and no Pusher auth can stand for that."""
        rules = self.hub.rules
        if rules.channel_refusal(bus) is not None:
            return True
        return rules.may_subscribe("", bus).allowed

    def user_channel(self, app: PusherApp, user_id: str) -> str:
        """The bus channel of the events sent to one user (``#server-to-user-<id>``)."""
        return self.bus_channel(app, USER_CHANNEL_PREFIX + user_id)

    async def terminate_user(self, app: PusherApp, user_id: str) -> None:
        """Close ``user_id``'s connections to ``app`` on every host (signed in, or in a
        presence channel as that user), with 4009."""
        message = wire.dumps({"op": TERMINATE_OP, "user": user_id, "app": app.id})
        await self.broker.publish_control(message.encode())

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._stop_control = self.broker.on_control(self._control)
        # Pusher presence channels are tracked by the broker whatever the channel
        # rules say; every other channel as they say.
        self._policy = self.broker.presence_policy
        self.broker.presence_policy = self.presence_mode
        self.broker.on_presence(self._presence)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._stop_control is not None:
            self._stop_control()
            self._stop_control = None
        if self.broker.presence_policy == self.presence_mode:
            self.broker.presence_policy = self._policy
        if self._presence in self.broker.presence_handlers:
            self.broker.presence_handlers.remove(self._presence)
        tasks = [*self._tasks, *([self._sweeper] if self._sweeper else [])]
        for task in tasks:
            task.cancel()
        self._sweeper = None

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("pusher task failed: %r", exc, exc_info=exc)

    # Channels -----------------------------------------------------------------

    def app_of_bus(self, channel: str) -> tuple[PusherApp, str] | None:
        """The app whose channel ``channel`` is on the bus, and its Pusher name."""
        for prefix, app in self._prefixes:
            if channel.startswith(prefix):
                return app, channel[len(prefix) :]
        return None

    def presence_mode(self, channel: str) -> PresenceMode | None:
        """The broker's presence policy: a Pusher ``presence-`` channel of an app is
        listed and announced; others as the policy before (the hub's rules)."""
        found = self.app_of_bus(channel)
        if found is not None and found[1].startswith("presence-"):
            return PRESENCE_MODE
        policy = self._policy
        return policy(channel) if policy is not None else None

    # Sessions -----------------------------------------------------------------

    def register(self, session: PusherSession) -> None:
        self.sessions[session.client.id] = session

    def unregister(self, session: PusherSession) -> None:
        self.sessions.pop(session.client.id, None)
        for key in list(session.user_keys):
            self.forget_user(key, session)

    def remember_user(self, app: PusherApp, user_id: str, session: PusherSession) -> None:
        key = (app.id, user_id)
        self.users.setdefault(key, {})[session.client.id] = session
        session.user_keys[key] = session.user_keys.get(key, 0) + 1

    def release_user(self, app: PusherApp, user_id: str, session: PusherSession) -> None:
        """One reason fewer for ``session`` to count as ``user_id`` (a presence channel
        left); out of the user's connections when none is left."""
        key = (app.id, user_id)
        left = session.user_keys.get(key, 0) - 1
        if left > 0:
            session.user_keys[key] = left
        else:
            self.forget_user(key, session)

    def forget_user(self, key: tuple[str, str], session: PusherSession) -> None:
        session.user_keys.pop(key, None)
        sessions = self.users.get(key)
        if sessions is not None:
            sessions.pop(session.client.id, None)
            if not sessions:
                del self.users[key]

    # Presence -----------------------------------------------------------------

    def _presence(self, channel: str, event: PresenceEvent) -> None:
        """A join or leave, from the broker's store: a user's first connection in or its
        last out is said to this host's other subscribers of the channel."""
        sessions = self.presence_sessions.get(channel)
        if not sessions or not event.user_changed:
            return
        found = self.app_of_bus(channel)
        if found is None:
            return
        name = found[1]
        member = event.member
        if event.joined:
            message = wire.member_added(name, member.user, user_info_of(member))
        else:
            message = wire.member_removed(name, member.user)
        for session in list(sessions.values()):
            if session.socket_id != member.client:
                session.presence_event(channel, message)

    async def members(
        self, channel: str, limit: int = MAX_PRESENCE_MEMBERS, own: str | None = None
    ) -> dict[str, Any]:
        """``{"ids", "hash", "count"}`` of a presence channel, from the broker's store:
        at most ``limit`` users (hosts joining at once may pass the limit a little),
        ``own`` among them (our own join may not be readable yet: said anyway)."""
        found = await self.broker.presence(channel)
        users: dict[str, Any] = {}
        if own is not None:
            users[own] = None
        for member in found.values():
            user = member.user
            if user in users:
                if user == own and users[user] is None:
                    users[user] = user_info_of(member)
            elif len(users) < limit:
                users[user] = user_info_of(member)
        return {"ids": list(users), "hash": users, "count": len(users)}

    async def presence_full(self, app: PusherApp, channel: str, user_id: str) -> bool:
        """Whether ``channel`` holds ``app.max_presence_members`` users already, none of
        them ``user_id`` (who may join on another connection): a count, read in full
        only at the limit."""
        limit = app.max_presence_members
        if (await self.broker.presence_stats(channel)).users < limit:
            return False
        found = await self.broker.presence(channel)
        return all(member.user != user_id for member in found.values())

    # Activity -----------------------------------------------------------------

    async def _sweep(self) -> None:
        """Ping connections silent for their app's ``activity_timeout``, and close with
        4201 those that then say nothing for another (at most 30 s), as Pusher does."""
        shortest = min((app.activity_timeout for app in self.apps), default=120)
        step = min(max(shortest / 4, 0.25), 5.0)
        while True:
            await asyncio.sleep(step)
            now = time.monotonic()
            for session in list(self.sessions.values()):
                session.check_activity(now)

    # Control messages ---------------------------------------------------------

    def _control(self, data: bytes) -> None:
        # Every host hears every control message (emulation requests of up to 64 KiB
        # among them): only ours, which wire.dumps writes with "op" first, is parsed.
        if len(data) > MAX_CONTROL_SIZE or not data.startswith(TERMINATE_MARK):
            return
        try:
            message = json.loads(data)
        except ValueError:
            return
        if not isinstance(message, dict) or message.get("op") != TERMINATE_OP:
            return
        user, app_id = message.get("user"), message.get("app")
        if not isinstance(user, str) or not isinstance(app_id, str):
            return
        for session in list(self.users.get((app_id, user), {}).values()):
            self.spawn(session.close(wire.UNAUTHORIZED, "terminated by the server"))


def user_info_of(member: Member) -> Any:
    """What a member's ``user_info`` was (kept as its JSON text), or None."""
    if member.info is None:
        return None
    try:
        return json.loads(member.info)
    except ValueError:
        return None


def get_node(host: Host) -> PusherNode:
    """The host's node; LookupError before start-up or after shutdown."""
    node = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(node, PusherNode):
        raise LookupError("the pusher plugin is not running")
    return node


def start(host: Host, apps: Apps) -> None:
    """Start serving ``apps`` on this host."""
    node = PusherNode(host, apps, get_hub(host), get_broker(host))
    node.start()
    host.app.extensions[EXTENSION_KEY] = node


async def stop(host: Host) -> None:
    """Stop, closing what is open."""
    node = host.app.extensions.pop(EXTENSION_KEY, None)
    if isinstance(node, PusherNode):
        await node.close()


__all__ = ["PusherFormat", "PusherNode", "get_node"]
