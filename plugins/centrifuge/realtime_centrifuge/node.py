"""One host's Centrifuge node: its settings, its connections by user, and the server API.

What the server API asks of one user's connections (subscribe, unsubscribe,
disconnect) may concern connections on other processes: it travels as a control
message on the broker, on an internal channel no client can name, and every
process applies it to its own connections.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from realtime import Host, HTTPError
from realtime_broker import Broker, BrokerUnavailable, Publication, StreamPosition
from realtime_hub import ChannelRules, Client, Hub
from realtime_hub.channels import INTERNAL_PREFIX

from .api import ServerAPI
from .codec import RawJSON
from .codes import ERROR_INTERNAL, Disconnect, DisconnectError, Error
from .history import read_history, read_presence, read_presence_stats, remove_history
from .session import Session, SessionOptions
from .tokens import TokenSigner, TokenVerifier
from .transport import CentrifugeFormat, member_info, payload

log = logging.getLogger("realtime.centrifuge")

#: The broker channel control messages travel on. Clients cannot name it: the hub's
#: rules refuse every name with the internal prefix (and any control character). It
#: keeps a short history, so that each control message from a distributed broker is
#: checked against the broker's own stream before it is applied.
CONTROL_CHANNEL = INTERNAL_PREFIX + "centrifuge-control"
#: Control messages received and not yet checked against the broker's stream.
MAX_CONTROL_PENDING = 1024
#: Recovering subscribes whose duration is kept.
RECOVERY_TIMES = 10_000
#: Subscriptions that may join their stream at once in one process.
RECOVERIES_AT_ONCE = 4
#: Largest control message accepted from the broker, bytes.
MAX_CONTROL_SIZE = 64 * 1024


def api_publication(pub: Publication) -> dict[str, Any]:
    """A publication in a server API result: JSON values, not embedded text."""
    data = payload(pub)
    entry: dict[str, Any] = {"data": json.loads(data) if isinstance(data, RawJSON) else data}
    if pub.info:
        entry["info"] = json.loads(pub.info)
    entry["offset"] = pub.offset
    return entry


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
        max_message_size: int = 64 * 1024,
    ) -> None:
        self.host = host
        self.hub = hub
        self.broker = broker
        self.rules: ChannelRules = hub.rules
        self.verifier = verifier
        self.signer = signer
        #: Why scripts cannot mint tokens here, when ``signer`` is None.
        self.signer_missing = signer_missing
        self.options = options
        self.connect_timeout = connect_timeout
        self.version = version
        self.format = CentrifugeFormat(self)
        #: For subscribers that get the channel's joins and leaves too.
        self.format_join_leave = CentrifugeFormat(self, publications=self.format)
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
        #: Control messages waiting for their check, in the order they came...
        self._pending_control: deque[Publication] = deque()
        self._control_worker: asyncio.Task[None] | None = None
        #: ...and the last one applied (a repeat of it, or of an older one, is not).
        self._applied_control: StreamPosition | None = None
        #: The server HTTP API (off without a key), an ASGI app.
        self.api = ServerAPI(
            self,
            self.rules,
            api_key,
            max_body_size=max_body_size,
            max_message_size=max_message_size,
        )

    def format_for(self, join_leave: bool) -> CentrifugeFormat:
        return self.format_join_leave if join_leave else self.format

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
        self.broker.subscribe(CONTROL_CHANNEL, self._control)

    async def close(self) -> None:
        self.broker.unsubscribe(CONTROL_CHANNEL, self._control)
        for task in list(self._tasks):
            task.cancel()

    def register(self, client: Client, session: Session) -> None:
        if session.user:
            self.users.setdefault(session.user, {})[client.id] = client

    def unregister(self, client: Client, session: Session) -> None:
        clients = self.users.get(session.user)
        if clients is not None and clients.pop(client.id, None) is not None and not clients:
            del self.users[session.user]

    # The server API ----------------------------------------------------------

    async def publish(
        self, channel: str, data: RawJSON, *, tags: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        try:
            await self.broker.publish(channel, Publication(str(data), json=True))
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None
        return {}

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
        info: RawJSON | None = None,
        data: RawJSON | None = None,
    ) -> None:
        await self._send_control(
            {
                "op": "subscribe",
                "user": user,
                "client": client,
                "channel": channel,
                "info": _decoded(info),
                "data": _decoded(data),
            }
        )

    async def unsubscribe(self, user: str, channel: str, *, client: str = "") -> None:
        await self._send_control(
            {"op": "unsubscribe", "user": user, "client": client, "channel": channel}
        )

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
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
                "code": code,
                "reason": reason,
                "whitelist": list(whitelist),
            }
        )

    async def refresh(
        self, user: str, *, client: str = "", expired: bool = False, expire_at: int = 0
    ) -> None:
        await self._send_control(
            {
                "op": "refresh",
                "user": user,
                "client": client,
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
        text = json.dumps(message, separators=(",", ":"))
        try:
            await self.broker.publish(CONTROL_CHANNEL, Publication(text, json=True))
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None

    # Control messages, on every process ---------------------------------------

    def _control(self, publication: Publication) -> int:
        if not self.broker.distributed:
            self._apply_control(publication)  # this process's own: nobody else can send
            return 0
        if len(self._pending_control) >= MAX_CONTROL_PENDING:
            log.warning("control message refused: %d already wait", MAX_CONTROL_PENDING)
            return 0
        self._pending_control.append(publication)
        if self._control_worker is None or self._control_worker.done():
            self._control_worker = asyncio.get_running_loop().create_task(self._check_control())
            self._tasks.add(self._control_worker)
            self._control_worker.add_done_callback(self._done)
        return 0

    async def _check_control(self) -> None:
        """Apply each control message the broker's stream vouches for, in order.

        Whoever can PUBLISH on a distributed broker can make a message that looks like
        one; only the stream, written by the broker with the message's number, says what
        a server API call published under that number. A repeat of a number already
        applied is not applied again.
        """
        while self._pending_control:
            publication = self._pending_control.popleft()
            if self._genuine(publication) and await self._in_stream(publication):
                self._applied_control = StreamPosition(publication.offset, publication.epoch)
                self._apply_control(publication)
            else:
                log.warning(
                    "control message refused: not what the broker's stream holds at %s/%d",
                    publication.epoch,
                    publication.offset,
                )

    def _genuine(self, publication: Publication) -> bool:
        applied = self._applied_control
        return publication.offset > 0 and not (
            applied is not None
            and applied.epoch == publication.epoch
            and publication.offset <= applied.offset
        )

    async def _in_stream(self, publication: Publication) -> bool:
        since = StreamPosition(publication.offset - 1, publication.epoch)
        try:
            found = await self.broker.history(CONTROL_CHANNEL, limit=1, since=since)
        except HTTPError:  # BrokerUnavailable, HistoryUnavailable, UnrecoverablePosition
            return False
        return (
            len(found.publications) == 1
            and found.publications[0].offset == publication.offset
            and found.publications[0].data == publication.data
        )

    def _apply_control(self, publication: Publication) -> None:
        data = publication.data
        if not isinstance(data, str) or len(data) > MAX_CONTROL_SIZE:
            log.warning("control message refused: not text or over %d bytes", MAX_CONTROL_SIZE)
            return
        try:
            message = json.loads(data)
            op, user, client = message["op"], message["user"], message.get("client", "")
            if not (isinstance(user, str) and isinstance(client, str)):
                raise TypeError("user and client are strings")
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("control message refused: %r", exc)
            return
        targets = [
            c
            for c in self.users.get(user, {}).values()
            if isinstance(c.state, Session) and (not client or c.state.client_id == client)
        ]
        for target in targets:
            self.spawn(self._apply(op, target, message))

    async def _apply(self, op: str, client: Client, message: Mapping[str, Any]) -> None:
        session = client.state
        assert isinstance(session, Session)
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
        pushes: list[str | None]
        if op == "subscribe" and channel:
            pushes = [
                await session.server_subscribe(
                    channel, info=message.get("info"), data=message.get("data")
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
            self.hub.send(client, "\n".join(lines))
        if op == "subscribe" and pushes[0] is not None:
            await session.enter_presence(channel)


def _decoded(value: RawJSON | None) -> Any:
    return None if value is None else json.loads(value)
