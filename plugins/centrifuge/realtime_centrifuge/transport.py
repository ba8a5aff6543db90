"""The Centrifuge protocol over the hub's WebSockets: no task per connection.

The hub hands each connection's frames to its :class:`SessionHandler`, which passes
them to the connection's :class:`.session.Session` and keeps one timer handle on the
session's next deadline (pings, expiry). Publications reach it through the hub in
:class:`CentrifugeFormat`, encoded once per publication for every Centrifuge client.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from realtime.logs import CONTEXT
from realtime_broker import BrokerUnavailable, Member, PresenceEvent, Publication, StreamPosition
from realtime_hub import ASGIConnection, Client, CloseCode, Held, Hub, Receive, Send

from .budget import join_leave_pushed
from .codec import RawJSON, encode_json
from .codes import (
    DISCONNECT_INSUFFICIENT_STATE,
    DISCONNECT_STALE,
    ERROR_INTERNAL,
    ERROR_LIMIT_EXCEEDED,
    ERROR_METHOD_NOT_FOUND,
    ERROR_NOT_AVAILABLE,
    UNSUBSCRIBE_INSUFFICIENT_STATE,
    DisconnectError,
    Error,
)
from .history import read_history, read_presence, read_presence_stats
from .protobuf import PROTOBUF as PROTOBUF_CODEC
from .session import ConnectAuth, HistoryPage, Session, SessionOptions
from .wire import JSON, Codec, Frame

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("realtime.centrifuge")

ASGIEndpoint = Callable[[Any, Receive, Send], Coroutine[Any, Any, None]]

#: The protobuf codec's subprotocol, as the SDKs offer it (accepted by that name).
PROTOBUF = "centrifuge-protobuf"
#: After a refused connect the client has this long to close (as Go), seconds.
REJECTED_GRACE = 5.0
#: A publication object's keys and offset in a reply, bytes (about).
PUBLICATION_OVERHEAD = 48
#: A presence member's keys in a reply, bytes (about).
MEMBER_OVERHEAD = 32


def payload(pub: Publication) -> Any:
    """A publication's ``data`` as the JSON codec carries it (the server API's too)."""
    return JSON.payload(pub)


def info_json(pub: Publication) -> RawJSON | None:
    """A publication's publisher ``info`` to splice into frames, only if it is a JSON
    object: it may come off Redis, where anyone who can PUBLISH can write it, and text
    spliced as it is could break (or add to) the frame every subscriber gets."""
    if not pub.info:
        return None
    try:
        valid = isinstance(json.loads(pub.info), dict)
    except ValueError:
        valid = False
    if not valid:
        # debug: one line per publication would let a forger flood the log.
        log.debug("dropped a publication's info: not a JSON object")
        return None
    return RawJSON(pub.info)


def publication_object(pub: Publication, codec: Codec = JSON) -> dict[str, Any]:
    """A ``Publication`` in a subscribe or history result, its data as ``codec`` carries it."""
    return {
        "data": codec.payload(pub),
        "info": info_json(pub),
        "offset": pub.offset,
    }


def wire_size(pub: Publication) -> int:
    """About the bytes ``pub`` takes in a reply (base64 for binary data, the keys)."""
    data = len(pub.data) if pub.json or isinstance(pub.data, str) else len(pub.data) * 4 // 3
    return data + len(pub.info or "") + PUBLICATION_OVERHEAD


def member_info(member: Member) -> Any:
    """A presence member as a ``ClientInfo`` (as it joined, or its user and client)."""
    if member.info:
        return RawJSON(member.info)
    return {"user": member.user, "client": member.client}


class CentrifugeFormat:
    """Publications as ``pub`` pushes, joins and leaves as ``join`` and ``leave`` pushes
    for subscribers that get them (``join_leave``); one object serves every Centrifuge
    connection of each kind and codec, so a publication is encoded once per codec."""

    def __init__(
        self, node: Node, publications: CentrifugeFormat | None = None, *, codec: Codec = JSON
    ) -> None:
        self._node = node
        self.codec = codec
        self._numbered = node.broker.history_supported
        #: Set for subscribers that get joins and leaves: that format encodes the
        #: publications, so a channel with both kinds encodes each once.
        self._publications = publications
        #: The last publication (or, for joins and leaves, event) encoded, its channel
        #: and its text: whoever asks again for the same gets the same, at no cost.
        self._last: tuple[Any, str, Frame | None] | None = None

    def encode(self, channel: str, publication: Any) -> Frame | None:
        if isinstance(publication, PresenceEvent):
            return self._join_leave(channel, publication)
        if self._publications is not None:
            return self._publications.encode(channel, publication)
        last = self._last
        if last is not None and last[0] is publication and last[1] == channel:
            return last[2]  # the same text object: the hub builds its frame once
        pub: Publication = publication
        info = info_json(pub)
        # An offset only where the channel keeps history: its place in the stream
        # (looked up only for a numbered publication, once per publication).
        offset = pub.offset
        if offset and not (self._numbered and self._node.broker.keeps_history(channel)):
            offset = 0
        codec = self.codec
        text = codec.encode_publication(channel, codec.payload(pub), info, offset)
        self._last = (publication, channel, text)
        return text

    def _join_leave(self, channel: str, event: PresenceEvent) -> Frame | None:
        """The ``join`` or ``leave`` push, or None where it is not pushed; decided once
        per event (the channel's size bound included), however often it is asked."""
        if self._publications is None:
            return None
        last = self._last
        if last is not None and last[0] is event and last[1] == channel:
            return last[2]
        text: Frame | None = None
        clients = self._node.hub.channels.get(channel, {}).get(self, ())
        # Not on a big channel: N joins would cost N² pushes.
        if join_leave_pushed(len(clients), self._node.options.max_join_leave_subscribers):
            kind = "join" if event.joined else "leave"
            text = self.codec.encode_push(channel, kind, {"info": member_info(event.member)})
        self._last = (event, channel, text)
        return text

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        """Insufficient state for this channel only: the SDK subscribes again (2500)."""
        session = client.state
        if isinstance(session, Session):
            self._node.spawn(_resubscribe(hub, client, session, channel))


async def _resubscribe(hub: Hub, client: Client, session: Session, channel: str) -> None:
    push = await session.server_unsubscribe(channel, UNSUBSCRIBE_INSUFFICIENT_STATE)
    if push is not None:
        hub.send(client, push)


async def answer(call: Callable[[], Any]) -> Any:
    """An implementation's answer, awaited when it is a coroutine."""
    result = call()
    if inspect.isawaitable(result):
        result = await result
    return result


class ConnectionBackend:
    """What one session reaches outside itself: hooks, the hub, the broker."""

    __slots__ = ("client", "codec", "node", "scope")

    def __init__(self, node: Node, client: Client, scope: Any, codec: Codec = JSON) -> None:
        self.node = node
        self.client = client
        self.scope = scope
        self.codec = codec

    async def _first(self, hook: str, **kwargs: Any) -> Any:
        for _, call in self.node.host.plugins.bound(hook, host=self.node.host, **kwargs):
            result = await answer(call)
            if result is not None:
                return result
        return None

    async def authorize_connect(
        self, *, client: str, data: Any, name: str, version: str, headers: Mapping[str, str]
    ) -> ConnectAuth | Error | None:
        if not self.node.hooked("authorize_connect"):
            return None
        merged = {
            key.decode("latin-1").lower(): value.decode("latin-1")
            for key, value in self.scope.get("headers", ())
        }
        merged.update({key.lower(): value for key, value in headers.items()})
        result: ConnectAuth | Error | None = await self._first(
            "authorize_connect",
            client=client,
            data=data,
            name=name,
            version=version,
            headers=merged,
        )
        return result

    async def authorize_subscribe(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> Any:
        if not self.node.hooked("authorize_subscribe"):
            return None
        return await self._first(
            "authorize_subscribe", client=client, user=user, meta=meta, channel=channel, data=data
        )

    async def authorize_publish(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> Any:
        if not self.node.hooked("authorize_publish"):
            return None
        return await self._first(
            "authorize_publish", client=client, user=user, meta=meta, channel=channel, data=data
        )

    async def rpc(self, *, client: str, user: str, meta: Any, method: str, data: Any) -> Any:
        if not self.node.hooked("rpc"):
            # Centrifugo's answer with no RPC proxy: 108, not 104 (centrifuge-js expects it).
            raise Error(ERROR_NOT_AVAILABLE.code)
        result = await self._first(
            "rpc", client=client, user=user, meta=meta, method=method, data=data
        )
        if result is None:
            raise Error(ERROR_METHOD_NOT_FOUND.code)
        return result

    async def on_send(self, *, client: str, user: str, meta: Any, data: Any) -> None:
        host = self.node.host
        for _, call in host.plugins.bound(
            "client_message", host=host, client=client, user=user, meta=meta, data=data
        ):
            await answer(call)

    async def subscribe(self, channel: str, join_leave: bool = False) -> list[str | bytes] | None:
        hub = self.node.hub
        fmt = self.node.format_for(join_leave, self.codec)
        if hub.confirm is None:  # heard at once (one process): live from here
            hub.join(channel, self.client, fmt)
            return None
        # Heard by this process before the reply goes: one Redis round trip, and what
        # arrives meanwhile is held, to follow the reply rather than go before it.
        held = hub.hold(channel, self.client)
        await hub.ready(channel)
        hub.release(channel, self.client, held, fmt)
        pushes = (fmt.encode(channel, pub) for pub in held.publications)
        return [push for push in pushes if push is not None]

    async def unsubscribe(self, channel: str) -> None:
        self.node.hub.leave(channel, self.client)
        session = self.client.state
        if isinstance(session, Session):
            await self.node.broker.leave_presence(channel, session.client_id)

    async def join_presence(self, channel: str, info: Mapping[str, Any]) -> None:
        session = self.client.state
        if isinstance(session, Session) and not self.client.closing:
            member = Member(session.client_id, session.user, client_info_json(info))
            await self.node.broker.join_presence(channel, member)

    def _reply_room(self, max_bytes: int | None) -> int:
        """Bytes of a reply's publications or members: ``max_bytes`` (what the command
        may still send), never more than half the client's buffer (it must fit in it)."""
        most = self.node.hub.max_buffer // 2
        return most if max_bytes is None else min(most, max_bytes)

    async def presence(self, channel: str, max_bytes: int | None = None) -> dict[str, Any]:
        members = await read_presence(self.node.broker, channel)
        most = self._reply_room(max_bytes)
        size = sum(
            len(member.info or member.user) + len(client) + MEMBER_OVERHEAD
            for client, member in members.items()
        )
        if size > most:
            # Not a truncated list (who is missing?): presence_stats still answers.
            raise Error(ERROR_LIMIT_EXCEEDED.code)
        return {client: member_info(member) for client, member in members.items()}

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        stats = await read_presence_stats(self.node.broker, channel)
        return stats.clients, stats.users

    def recovered(self, seconds: float) -> None:
        self.node.recovery_times.append(seconds)

    def recovery_slot(self) -> asyncio.Semaphore:
        return self.node.recovery_slots

    async def history(
        self,
        channel: str,
        *,
        limit: int,
        since: tuple[int, str] | None,
        reverse: bool,
        max_bytes: int | None = None,
    ) -> HistoryPage:
        result = await read_history(
            self.node.broker, channel, limit=limit, since=since, reverse=reverse
        )
        most = self._reply_room(max_bytes)
        publications: list[dict[str, Any]] = []
        size = 0
        for pub in result.publications:
            took = wire_size(pub)
            if publications and size + took > most:
                break  # the first is always in: a client paging on gets somewhere
            publications.append(publication_object(pub, self.codec))
            size += took
        return HistoryPage(publications, result.position.offset, result.position.epoch, size)

    def recovers(self) -> bool:
        return self.node.broker.recovers_atomically

    async def subscribe_held(self, channel: str) -> Held:
        hub = self.node.hub
        held = hub.hold(channel, self.client)
        await hub.ready(channel)
        return held

    async def release(
        self, channel: str, held: Held, top: tuple[int, str] | None, join_leave: bool = False
    ) -> tuple[list[dict[str, Any]], int]:
        try:
            if top is not None:
                await self.node.broker.caught_up(channel, StreamPosition(*top))
        except BrokerUnavailable:
            held.lost += 1  # what should have come did not: the subscribe fails (100)
        fmt = self.node.format_for(join_leave, self.codec)
        self.node.hub.release(channel, self.client, held, fmt)
        # Publications only: the hub never holds joins and leaves.
        return [publication_object(pub, self.codec) for pub in held.publications], held.lost

    async def publish(self, channel: str, data: Any, info: Mapping[str, Any]) -> None:
        info_text = client_info_json(info)
        if isinstance(data, bytes):  # a protobuf client's data that is not JSON
            publication = Publication(data, info=info_text)
        else:
            publication = Publication(encode_json(data), json=True, info=info_text)
        try:
            await self.node.broker.publish(channel, publication)
        except BrokerUnavailable:
            raise Error(ERROR_INTERNAL.code) from None  # temporary: the SDK retries
        except ValueError as exc:  # the publisher's info over the broker's bound
            raise Error(ERROR_INTERNAL.code, f"not published: {exc}"[:200], False) from None
        self.node.metrics.published_client.inc()


def client_info_json(info: Mapping[str, Any]) -> str:
    """ClientInfo as the protocol sends it: empty fields left out (user, client kept)."""
    return encode_json({key: value for key, value in info.items() if value is not None})


def codec_of(scope: Any) -> tuple[Codec, str | None]:
    """The codec a connection asks for, and the subprotocol to accept it with: protobuf
    by subprotocol (the SDKs) or query (Go's ``?format=protobuf``, ``?cf_protocol=``)."""
    if PROTOBUF in (scope.get("subprotocols") or ()):
        return PROTOBUF_CODEC, PROTOBUF
    with contextlib.suppress(ValueError):
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), max_num_fields=10)
        if "protobuf" in [*query.get("format", ()), *query.get("cf_protocol", ())]:
            return PROTOBUF_CODEC, None
    return JSON, None


class SessionHandler:
    """Reads one Centrifuge connection: frames to its session, its deadlines on a timer.

    The hub hands frames over one at a time (:class:`realtime_hub.Handler`). What is
    due (pings, expiry, the connect timeout) runs from one timer handle, re-armed on
    the session's next deadline, never at the same time as a frame: a connection
    costs no task while it is idle.
    """

    __slots__ = ("_connect_by", "_ids", "_ticking", "_timer", "client", "node", "registered",
                 "session")  # fmt: skip

    def __init__(
        self,
        node: Node,
        client: Client,
        scope: Any,
        codec: Codec = JSON,
        session_type: type[Session] = Session,  # an emulated session adds to its connect
        options: SessionOptions | None = None,  # the node's unless a transport has its own
    ) -> None:
        self.node = node
        self.client = client
        self.session = session_type(
            node.rules,
            node.verifier,
            ConnectionBackend(node, client, scope, codec),
            options=node.options if options is None else options,
            codec=codec,
        )
        client.state = self.session
        self.registered = False
        #: The log ids of this connection's work (``connection``, then ``client`` once
        #: connected), set at the start of each frame and timer: with the hub's fast
        #: path each runs in a task of its own, so a binding would not outlive it.
        self._ids: Mapping[str, str] = {**CONTEXT.get(), "connection": str(client.id)}
        # A client must connect within the timeout (3502 "stale" otherwise).
        self._connect_by = time.time() + node.connect_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._ticking: asyncio.Task[None] | None = None
        self._arm()

    @property
    def log_ids(self) -> Mapping[str, str]:
        """The ids this connection's log lines carry (``connection``, ``client``)."""
        return self._ids

    def received(self, data: str | bytes) -> Coroutine[Any, Any, None]:
        return self._frame(data)

    def dropped(self, count: int) -> None:
        """The hub dropped publications for this client (``drop-oldest``): a client that
        tracks offsets would see a hole, so it reconnects and recovers (3010)."""
        if self.session.positioned:
            self.node.hub.disconnect(
                self.client,
                DISCONNECT_INSUFFICIENT_STATE.code,
                DISCONNECT_INSUFFICIENT_STATE.reason,
            )

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.registered:
            self.registered = False
            self.node.unregister(self.client, self.session)
        self.node.spawn(self._close_session())

    async def _close_session(self) -> None:
        CONTEXT.set(self._ids)
        try:
            await self.session.close()
        finally:
            self.client.state = None  # the session refers to the client: no cycle kept

    async def _frame(self, data: str | bytes) -> None:
        CONTEXT.set(self._ids)
        ticking = self._ticking
        if ticking is not None:
            await asyncio.shield(ticking)  # what was due goes first, as it was due first
        session = self.session
        try:
            # Each reply goes out as its command finishes (in order with what the
            # channels publish meanwhile); a closing client gets no more work.
            lines = await session.handle_frame(data, self._emit)
            if lines:
                self._emit(session.codec.join(lines))
            if session.connected and not self.client.name and not self.client.closing:
                # Before the connect's own subscriptions join: watchers hear of those too.
                self.node.hub.identify(self.client, user=session.user, name=session.client_id)
            if session.joining:
                await session.after_reply()
            if session.rejected and not session.connected:
                self._connect_by = min(self._connect_by, time.time() + REJECTED_GRACE)
            if session.connected and not self.registered and not self.client.closing:
                self.registered = True
                self.node.register(self.client, session)
                self._ids = {**self._ids, "client": session.client_id}
                CONTEXT.set(self._ids)
        except DisconnectError as exc:
            await self._disconnect(exc)
        self._arm()

    def _emit(self, text: Frame) -> bool:
        """Send replies; False once the client is closing (its buffer overflowed)."""
        return self.node.hub.send(self.client, text) and not self.client.closing

    def _arm(self) -> None:
        """Set the timer on the next deadline (connected: the session's; else connect_by)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.client.closing:
            return
        deadline = self.session.next_deadline() if self.session.connected else self._connect_by
        if deadline is not None:
            loop = asyncio.get_running_loop()
            self._timer = loop.call_at(loop.time() + (deadline - time.time()), self._due)

    def _due(self) -> None:
        self._timer = None
        if self._ticking is None and not self.client.closing:
            self._ticking = asyncio.get_running_loop().create_task(self._tick())

    async def _tick(self) -> None:
        CONTEXT.set(self._ids)
        session = self.session
        try:
            now = time.time()
            if not session.connected:
                if now >= self._connect_by:
                    raise DisconnectError(DISCONNECT_STALE)
            else:
                lines = await session.tick(now)
                if lines:
                    self.node.hub.send(self.client, session.codec.join(lines))
        except DisconnectError as exc:
            await self._disconnect(exc)
        except Exception:
            log.exception("client %s: a timed task failed", session.client_id)
        finally:
            self._ticking = None
        self._arm()

    async def _disconnect(self, exc: DisconnectError) -> None:
        hub = self.node.hub
        if exc.replies:
            hub.send(self.client, self.session.codec.join(exc.replies))
        await hub.close_client(self.client, exc.disconnect.code, exc.disconnect.reason)


async def serve_connection(node: Node, scope: Any, receive: Receive, send: Send) -> None:
    """One Centrifuge connection's handshake; the hub then reads it for its handler."""
    hub = node.hub
    codec, subprotocol = codec_of(scope)
    client = await hub.connect(
        ASGIConnection(receive, send, scope),
        lambda client: SessionHandler(node, client, scope, codec),
        protocol="centrifuge",  # the label of realtime_connections
        subprotocol=subprotocol,
    )
    if client is not None:
        await hub.serve(client)


def endpoint(
    node_of: Callable[[], Node],
) -> Callable[[Any, Receive, Send], Coroutine[Any, Any, None]]:
    """The ASGI app at ``--centrifuge-path``; ``node_of`` finds the running node."""

    async def centrifuge_websocket(scope: Any, receive: Receive, send: Send) -> None:
        try:
            node = node_of()
        except LookupError:
            # Not started yet, or stopping: the client tries again later.
            await send({"type": "websocket.close", "code": CloseCode.TRY_AGAIN_LATER})
            return
        await serve_connection(node, scope, receive, send)

    return centrifuge_websocket
