"""One host's Centrifuge node: its settings, its connections by user, and the server API.

What the server API asks of one user's connections (subscribe, unsubscribe,
disconnect, refresh) may concern connections on other processes: it travels as a
control message on the broker (:meth:`realtime_broker.Broker.publish_control`), beside
the channels: never numbered, never kept as history, never seen by a client. Every
process applies it to its own connections; a distributed broker hands over only the
control messages it sent (a forged one on Redis is dropped there).
"""

from __future__ import annotations

import asyncio
import dataclasses
import fnmatch
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

from realtime import Host
from realtime.logs import CONTEXT
from realtime_broker import MAX_CONTROL_SIZE as MAX_CONTROL_SIZE  # re-exported: it was here
from realtime_broker import Broker, BrokerUnavailable, Publication
from realtime_broker.plugin import MAX_MESSAGE_SIZE
from realtime_hub import ChannelRules, Client, Hub

from .api import ServerAPI
from .codec import RawJSON
from .codes import (
    DISCONNECT_CONNECTION_LIMIT,
    ERROR_INTERNAL,
    Disconnect,
    DisconnectError,
    Error,
)
from .emulation_routing import MARK as EMULATION_MARK
from .history import read_history, read_presence, read_presence_stats, remove_history
from .metrics import CentrifugeMetrics
from .session import Session, SessionOptions
from .tokens import TokenSigner, TokenVerifier
from .transport import CentrifugeFormat, SessionHandler, member_info, payload
from .wire import JSON, Codec, Frame

log = logging.getLogger("realtime.centrifuge")

#: Recovering subscribes whose duration is kept.
RECOVERY_TIMES = 10_000
#: Subscriptions that may join their stream at once in one process.
RECOVERIES_AT_ONCE = 4


def api_publication(pub: Publication) -> dict[str, Any]:
    """A publication in a server API result: JSON values, not embedded text."""
    data = payload(pub)
    entry: dict[str, Any] = {"data": json.loads(data) if isinstance(data, RawJSON) else data}
    if pub.info:
        entry["info"] = json.loads(pub.info)
    entry["offset"] = pub.offset
    return entry


#: The control operations :class:`Node` applies to a user's connections; others on the
#: same channel (``emulation``: commands routed to a stream) are not for it.
CONNECTION_OPS = frozenset({"disconnect", "refresh", "subscribe", "unsubscribe"})


class Node:
    """Per host (``app.extensions``): nothing here is shared between two apps."""

    def __init__(
        self,
        host: Host,
        hub: Hub,
        broker: Broker,
        *,
        verifier: TokenVerifier,
        signer: TokenSigner | None,
        signer_missing: str = "",
        options: SessionOptions,
        connect_timeout: float,
        version: str = "",
        api_key: str = "",
        max_body_size: int = 1024 * 1024,
        max_message_size: int = MAX_MESSAGE_SIZE.default,
        single_connection: bool = False,
    ) -> None:
        self.host = host
        #: One connection per user (``user_personal_single_connection``): a user's
        #: new connection closes the others, on every host, with 3504.
        self.single_connection = single_connection
        self.hub = hub
        self.broker = broker
        self.rules: ChannelRules = hub.rules
        self.verifier = verifier
        self.signer = signer
        #: Why scripts cannot mint tokens here, when ``signer`` is None.
        self.signer_missing = signer_missing
        #: Its instruments, made here (in the plugin's startup, after the exporter's
        #: installation); sessions are timed only while they export.
        self.metrics = CentrifugeMetrics(host.telemetry, ServerAPI.METHODS)
        if self.metrics.enabled:
            options = dataclasses.replace(options, metrics=self.metrics)
        self.options = options
        self.connect_timeout = connect_timeout
        self.version = version
        #: Each codec's formats, made on first use: (publications only, with joins
        #: and leaves). A channel's publication is encoded once per codec present.
        self._formats: dict[Codec, tuple[CentrifugeFormat, CentrifugeFormat]] = {}
        self.format, self.format_join_leave = self._formats_of(JSON)
        #: How long the last recovering subscribes took, seconds (for the benchmark,
        #: later for /metrics): wall time from the command to its result.
        self.recovery_times: deque[float] = deque(maxlen=RECOVERY_TIMES)
        #: Subscriptions joining their stream at once (reading it, merging): the rest
        #: wait their turn, so a burst of returning clients takes its time rather than
        #: have every read time out behind all the others.
        self.recovery_slots = asyncio.Semaphore(RECOVERIES_AT_ONCE)
        #: Connected clients of each signed-in user, by hub id, for the server API.
        self.users: dict[str, dict[int, Client]] = {}
        self._hooks = {
            name: bool(getattr(host.hook, name).get_hookimpls())
            for name in ("authorize_connect", "authorize_subscribe", "authorize_publish", "rpc")
        }
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Stops this node's control messages (set by start).
        self._stop_control: Callable[[], None] | None = None
        #: The server HTTP API (off without a key), an ASGI app.
        self.api = ServerAPI(
            self,
            self.rules,
            api_key,
            max_body_size=max_body_size,
            max_message_size=max_message_size,
            observe=self.metrics.api,
        )

    def _formats_of(self, codec: Codec) -> tuple[CentrifugeFormat, CentrifugeFormat]:
        formats = self._formats.get(codec)
        if formats is None:
            plain = CentrifugeFormat(self, codec=codec)
            # For subscribers that get the channel's joins and leaves too.
            formats = self._formats[codec] = (plain, CentrifugeFormat(self, plain, codec=codec))
        return formats

    def format_for(self, join_leave: bool, codec: Codec = JSON) -> CentrifugeFormat:
        """The hub format of ``codec``'s subscribers (with joins and leaves or not)."""
        plain, with_join_leave = self._formats_of(codec)
        return with_join_leave if join_leave else plain

    def hooked(self, name: str) -> bool:
        """Whether any plugin implements ``name``: the handshake headers are built only then."""
        return self._hooks.get(name, True)

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("centrifuge task failed: %r", exc, exc_info=exc)

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        self._stop_control = self.broker.on_control(self._control)

    async def close(self) -> None:
        if self._stop_control is not None:
            self._stop_control()
            self._stop_control = None
        for task in list(self._tasks):
            task.cancel()

    def register(self, client: Client, session: Session) -> None:
        if session.user:
            self.users.setdefault(session.user, {})[client.id] = client
            if self.single_connection:
                self.spawn(self._single(session.user, session.client_id))

    async def _single(self, user: str, client_id: str) -> None:
        """Close ``user``'s other connections, wherever they are (Centrifugo's
        single connection mode of the personal channel)."""
        limit = DISCONNECT_CONNECTION_LIMIT
        try:
            await self.disconnect(user, code=limit.code, reason=limit.reason, whitelist=[client_id])
        except Error:
            log.warning("could not close the other connections of user %r", user)

    def unregister(self, client: Client, session: Session) -> None:
        clients = self.users.get(session.user)
        if clients is not None and clients.pop(client.id, None) is not None and not clients:
            del self.users[session.user]

    # The server API ----------------------------------------------------------

    async def publish(
        self,
        channel: str,
        data: RawJSON,
        *,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str = "",
    ) -> Mapping[str, Any]:
        """The publication's ``offset`` and ``epoch`` where the channel keeps history
        (``{}`` elsewhere); a key seen within five minutes answers its first result
        and publishes nothing."""
        publication = Publication(str(data), json=True)
        try:
            result = await self.broker.publish_result(
                channel, publication, idempotency_key=idempotency_key
            )
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None
        if not result.suppressed:
            self.metrics.published_api.inc()  # a broadcast: once per channel, as each comes
        if result.position is None:
            return {}
        return {"offset": result.position.offset, "epoch": result.position.epoch}

    async def history(
        self, channel: str, *, limit: int, since: tuple[int, str] | None, reverse: bool
    ) -> Mapping[str, Any]:
        """The server API's history result: publications with their data as JSON."""
        result = await read_history(self.broker, channel, limit=limit, since=since, reverse=reverse)
        return {
            "publications": [api_publication(pub) for pub in result.publications],
            "epoch": result.position.epoch,
            "offset": result.position.offset,
        }

    async def history_remove(self, channel: str) -> None:
        await remove_history(self.broker, channel)

    async def presence(self, channel: str) -> Mapping[str, Any]:
        """The server API's presence result: ClientInfo objects by client id."""
        members = await read_presence(self.broker, channel)
        infos = {client: member_info(member) for client, member in members.items()}
        return {
            "presence": {
                client: json.loads(info) if isinstance(info, RawJSON) else info
                for client, info in infos.items()
            }
        }

    async def presence_stats(self, channel: str) -> Mapping[str, Any]:
        stats = await read_presence_stats(self.broker, channel)
        return {"num_clients": stats.clients, "num_users": stats.users}

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        info: RawJSON | None = None,
        data: RawJSON | None = None,
        recover_since: tuple[int, str] | None = None,
    ) -> None:
        await self._send_control(
            {
                "op": "subscribe",
                "user": user,
                "client": client,
                "session": session,
                "channel": channel,
                "info": _decoded(info),
                "data": _decoded(data),
                "recover_since": None if recover_since is None else list(recover_since),
            }
        )

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        await self._send_control(
            {
                "op": "unsubscribe",
                "user": user,
                "client": client,
                "session": session,
                "channel": channel,
            }
        )

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        code: int = 3503,
        reason: str = "force disconnect",
        whitelist: Sequence[str] = (),
    ) -> None:
        Disconnect(code, reason)  # ValueError here, not on every process
        await self._send_control(
            {
                "op": "disconnect",
                "user": user,
                "client": client,
                "session": session,
                "code": code,
                "reason": reason,
                "whitelist": list(whitelist),
            }
        )

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
    ) -> None:
        await self._send_control(
            {
                "op": "refresh",
                "user": user,
                "client": client,
                "session": session,
                "expired": expired,
                "expire_at": expire_at,
            }
        )

    async def channels(self, pattern: str = "") -> Mapping[str, int]:
        try:
            counts = await self.broker.cluster_channels()
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None
        # The hub counts its clients' channels only: the control channel is never here.
        return {
            channel: count
            for channel, count in counts.items()
            if not pattern or fnmatch.fnmatchcase(channel, pattern)
        }

    async def info(self) -> Sequence[Mapping[str, Any]]:
        try:
            nodes = await self.broker.cluster_nodes()
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None
        return [{**node, "version": self.version} for node in nodes]

    async def _send_control(self, message: Mapping[str, Any]) -> None:
        data = json.dumps(message, separators=(",", ":")).encode()
        try:
            await self.broker.publish_control(data)
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None

    # Control messages, on every process ---------------------------------------

    def _control(self, message: bytes | Publication) -> int:
        """A control message the broker handed over (it vouches that a server API sent
        it): applied to this process's connections. Returns 0 (no client counted)."""
        data = message.data if isinstance(message, Publication) else message
        if len(data) > MAX_CONTROL_SIZE:
            log.warning("control message refused: over %d bytes", MAX_CONTROL_SIZE)
            return 0
        if isinstance(data, bytes) and data.startswith(EMULATION_MARK):
            return 0  # the emulation layer's: not parsed here too
        try:
            parsed = json.loads(data)
            op, user, client = parsed["op"], parsed["user"], parsed.get("client", "")
            session = parsed.get("session", "")
            if not all(isinstance(field, str) for field in (op, user, client, session)):
                raise TypeError("op, user, client and session are strings")
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            log.warning("control message refused: %r", exc)
            return 0
        if op not in CONNECTION_OPS:  # another listener's (the emulation layer's)
            return 0
        # A session targets the emulated or one-way connection holding it (Go's rule).
        targets = [
            c
            for c in self.users.get(user, {}).values()
            if isinstance(c.state, Session)
            and (not client or c.state.client_id == client)
            and (not session or c.state.session_id == session)
        ]
        for target in targets:
            self.spawn(self._apply(op, target, parsed))
        return 0

    async def _apply(self, op: str, client: Client, message: Mapping[str, Any]) -> None:
        session = client.state
        assert isinstance(session, Session)
        if isinstance(client.handler, SessionHandler):
            CONTEXT.set(client.handler.log_ids)  # this task's lines name the connection
        if op == "disconnect":
            if session.client_id not in message.get("whitelist", ()):
                await self.hub.close_client(client, int(message["code"]), str(message["reason"]))
            return
        if op == "refresh":
            try:
                push = session.server_refresh(
                    bool(message.get("expired")), int(message.get("expire_at") or 0)
                )
            except DisconnectError as exc:
                await self.hub.close_client(client, exc.disconnect.code, exc.disconnect.reason)
                return
            if push is not None:
                self.hub.send(client, push)
            return
        channel = message.get("channel")
        if not isinstance(channel, str):
            return
        if channel and (error := self.rules.check_channel(channel)):
            # The same checks as the server API's own: whatever sent it.
            log.warning("control message refused for channel %r: %r", channel, error)
            return
        pushes: list[Frame | None]
        if op == "subscribe" and channel:
            pushes = [
                await session.server_subscribe(
                    channel,
                    info=message.get("info"),
                    data=message.get("data"),
                    recover_since=_position(message.get("recover_since")),
                )
            ]
        elif op == "unsubscribe":
            # An empty channel is every channel, as in Centrifugo.
            channels = [channel] if channel else sorted(session.channels)
            pushes = [await session.server_unsubscribe(name) for name in channels]
        else:
            log.warning("control message refused: %r", op)
            return
        lines = [push for push in pushes if push is not None] + session.take_pushes()
        if lines:
            self.hub.send(client, session.codec.join(lines))
        if op == "subscribe" and pushes[0] is not None:
            await session.enter_presence(channel)


def _decoded(value: RawJSON | None) -> Any:
    return None if value is None else json.loads(value)


def _position(value: Any) -> tuple[int, str] | None:
    """A control message's ``recover_since``: ``[offset, epoch]``, else None."""
    if (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], int)
        and not isinstance(value[0], bool)
        and value[0] >= 0
        and isinstance(value[1], str)
    ):
        return value[0], value[1]
    return None
