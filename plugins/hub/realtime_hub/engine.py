"""The fan-out engine: connections, the channels they are in, and delivery that never waits.

Protocol-neutral: a wire protocol (the raw ``/ws``, the Centrifuge protocol) brings
its :class:`Format`, which says what a publication looks like on its connections, and
each connection its :class:`.Framing`, which says how a message becomes its bytes (a
WebSocket frame, a Server-Sent Event, an HTTP chunk). The engine encodes each
publication once per format present in the channel and frames it once per framing,
then hands the same bytes to every subscriber: straight to the connection when it is
keeping up (the fast path: a taken-over WebSocket, :mod:`.fastpath`, or any
:class:`.Stream` a transport attaches), or into the connection's bounded backlog
otherwise (:mod:`.backlog`), which a short-lived sender task drains. A client that
stops reading fills only its own backlog; then the overflow policy decides what
happens to it. The cost of a publication follows the channel's subscribers, never the
number of connected clients.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import suppress
from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from realtime_broker import PresenceEvent

from .backlog import OVERFLOW_POLICIES, TRANSPORT_HIGH_WATER, Backlogs, OverflowPolicy
from .census import MAX_RECENT, Disconnect, arrived, departed
from .channels import ChannelRules
from .clients import Channel, Client, Connection, Format, Group, Held, HubStats, Message
from .closecode import CloseCode
from .connection import ASGIConnection, ConnectionGone, Handler
from .fastpath import (
    IncomingLimits,
    Keepalive,
    Socket,
    decline_compression,
    encode_frame,
    guard,
    take_over,
)
from .membership import Membership
from .stream import WEBSOCKET, Framing, Stream
from .watchers import HubWatcher, Watchers

__all__ = [
    "OVERFLOW_POLICIES",
    "TRANSPORT_HIGH_WATER",
    "Channel",
    "Client",
    "Connection",
    "Format",
    "Held",
    "Hub",
    "HubClosed",
    "HubStats",
    "Message",
    "OverflowPolicy",
]

log = logging.getLogger("realtime.hub")

#: How long a close frame may take to reach a client before the socket is dropped.
CLOSE_TIMEOUT = 1.0
#: Clients written to in one turn of the event loop by a fan-out (about 8 ms of it).
FAN_OUT_SLICE = 1024
#: Fan-outs that may wait for their turn; past it a publish delivers them all at once,
#: holding the loop (and so the publishers) until it caught up: memory stays bounded.
MAX_PENDING = 10_000
#: Publications a subscriber held aside (:meth:`Hub.hold`) may collect; past it they
#: count as lost. A history read takes a round trip or two: this is ample.
MAX_HELD = 10_000
#: Largest message a client may send, bytes (UTF-8 for text, inflated if compressed).
MAX_INCOMING_SIZE = 64 * 1024
#: Frames a client may send per second, pings included, and in one burst. A chat
#: client sends a few a second at most (messages, typing notices, a pong per ping);
#: an answered ping costs about 20 µs here, so a hundred a second is 0.2% of a core.
MAX_INCOMING_RATE = 100


class HubClosed(RuntimeError):
    """The hub is not serving (not started yet, or shut down)."""


def _message(data: str | bytes) -> Message:
    """``data`` as a WebSocket message (its frame built once, for every subscriber)."""
    if isinstance(data, str):
        return Message(data, encode_frame(data.encode(), text=True))
    return Message(data, encode_frame(data, text=False))


def _framed(data: str | bytes, framing: Framing) -> Message:
    """``data`` as a message of ``framing``."""
    if framing is WEBSOCKET:
        return _message(data)
    return Message(data, framing.frame(data))


@dataclass(slots=True)
class _Pending:
    """A fan-out under way: the message, the clients it was published to, how far it got."""

    message: Message
    clients: list[Client]
    next: int = 0


class Hub(Backlogs, Membership):
    """Connections and channels of one host. Lives in ``app.extensions``: hosts share nothing.

    ``on_first(channel)`` and ``on_last(channel)`` are called when the first local
    subscriber joins a channel and when the last one leaves: the plugin subscribes
    the broker there, so a process hears only the channels its clients are in.
    """

    def __init__(
        self,
        *,
        max_buffer: int = 1024 * 1024,
        overflow: OverflowPolicy = "close",
        fast_path: bool = True,
        compression: bool = False,
        max_incoming_size: int = MAX_INCOMING_SIZE,
        max_incoming_rate: int = MAX_INCOMING_RATE,
        rules: ChannelRules | None = None,
        ping_interval: float = 0.0,
        pong_timeout: float = 0.0,
        fan_out_slice: int = FAN_OUT_SLICE,
        max_pending: int = MAX_PENDING,
        max_held: int = MAX_HELD,
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow policy must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
            )
        if max_buffer <= 0:
            raise ValueError("max_buffer must be positive")
        self.max_buffer = max_buffer
        # A fast-path client's bytes sit in its transport (a chunk of up to direct_limit
        # plus a frame) and in its backlog (up to backlog_limit): together, max_buffer.
        self.direct_limit = min(TRANSPORT_HIGH_WATER, max_buffer // 4)
        self.backlog_limit = max_buffer - self.direct_limit
        self.overflow: OverflowPolicy = overflow
        self.fast_path = fast_path
        self.compression = compression
        self.channels: dict[str, Channel] = {}
        #: Namespaces and who may subscribe or publish where, for every protocol.
        self.rules = rules or ChannelRules.defaults()
        self.on_first: Callable[[str], None] | None = None
        self.on_last: Callable[[str], None] | None = None
        #: Waits until the broker hears ``channel`` (set by the plugin to ``broker.ready``).
        self.confirm: Callable[[str], Awaitable[None]] | None = None
        #: What each client may send; checked under Hypercorn by :func:`.fastpath.guard`.
        self.incoming = IncomingLimits(
            max_incoming_size, max_incoming_rate, close_timeout=CLOSE_TIMEOUT
        )
        #: Pings for taken-over sockets (Hypercorn pings the others).
        self.keepalive = (
            Keepalive(ping_interval, pong_timeout or ping_interval) if ping_interval > 0 else None
        )
        #: Clients a fan-out writes to in one turn of the loop.
        self.fan_out_slice = max(1, fan_out_slice)
        #: Fan-outs waiting past which publish() delivers them all at once.
        self.max_pending = max(1, max_pending)
        #: Publications one :meth:`hold` keeps aside at most.
        self.max_held = max(1, max_held)
        self._pending: deque[_Pending] = deque()
        #: Channels with a client in :meth:`hold`, and how many.
        self._holding: dict[str, int] = {}
        self._drainer: asyncio.Task[None] | None = None
        self.stats = HubStats()
        #: The latest disconnects (:class:`.census.Disconnect`), newest last, for the admin page.
        self.recent_disconnects: deque[Disconnect] = deque(maxlen=MAX_RECENT)
        #: Told of clients and channels coming and going (:meth:`watch`).
        self.watchers = Watchers()
        self._clients: dict[int, Client] = {}
        #: Identified clients by their protocol's name for them: a publication's
        #: ``skip`` names the one it is not delivered to.
        self._named: dict[str, Client] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running loop: :meth:`publish` is called there (the broker's job)."""
        self._loop = asyncio.get_running_loop()
        if self.keepalive is not None:
            self.keepalive.start()

    async def close(
        self,
        code: int = CloseCode.GOING_AWAY,
        reason: str = "server shutting down",
        grace: float = 5.0,
    ) -> None:
        """Refuse further broadcasts, let clients take what is queued, then close them.

        A client still holding queued messages after ``grace`` seconds is closed anyway.
        """
        self._loop = None
        self._flush_pending()  # what was accepted goes out before the close frames
        if self._drainer is not None:
            self._drainer.cancel()
        if self.keepalive is not None:
            self.keepalive.stop()
        deadline = asyncio.get_running_loop().time() + grace

        async def flush_then_close(client: Client) -> None:
            await self._flush(client, deadline)
            await self._close(client, code, reason)

        await asyncio.gather(*(flush_then_close(c) for c in list(self._clients.values())))

    @property
    def running(self) -> bool:
        return self._loop is not None

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    # Connections --------------------------------------------------------------

    async def connect(
        self,
        connection: Connection,
        handler: Callable[[Client], Handler] | None = None,
        *,
        protocol: str = "raw",
        subprotocol: str | None = None,
    ) -> Client | None:
        """Accept a WebSocket and hold it; ``None`` if the client left during the handshake.

        Under Hypercorn with the fast path on, the socket is taken over from Hypercorn
        (:func:`.fastpath.take_over`): read, written and kept alive here, with no task of
        its own. Otherwise it stays on ASGI, guarded (:func:`.fastpath.guard`). Either
        way ``handler(client)`` makes the reader of its messages; the protocol then calls
        :meth:`serve`, which reads an ASGI connection until it ends. ``protocol`` names
        the wire protocol it speaks, the label of its connection in metrics;
        ``subprotocol``, one the client offered, the one accepted (an ASGI connection).
        """
        if not self.running:
            await connection.close(CloseCode.TRY_AGAIN_LATER, "server not ready")
            return None
        asgi_send = getattr(connection, "asgi_send", None)
        if asgi_send is not None and not self.compression:
            decline_compression(asgi_send)  # in both fan-out modes
        client_id = next(self._ids)
        sock: Socket | None = None
        try:
            if self.fast_path and asgi_send is not None:
                sock = await connection.accept(  # type: ignore[call-arg, func-returns-value]
                    partial(
                        take_over,
                        limits=self.incoming,
                        client=client_id,
                        high_water=self.direct_limit,
                        subprotocol=subprotocol,
                    ),
                    subprotocol=subprotocol,
                )
            elif subprotocol is not None and isinstance(connection, ASGIConnection):
                await connection.accept(subprotocol=subprotocol)
            else:
                await connection.accept()
        except ConnectionGone:
            return None
        if sock is None:
            client = Client(client_id, connection, None, protocol=protocol)
            if asgi_send is not None:
                watching = guard(asgi_send, self.incoming, client_id)  # what the client sends
                if isinstance(connection, ASGIConnection):
                    connection.guard = watching
            log.debug("client %d connected (ASGI)", client_id)
            self._register(client, handler)
            return client
        detach = getattr(connection, "detach", None)
        release = detach() if detach is not None else None
        log.debug("client %d connected (taken over)", client_id)
        return self._adopt(client_id, sock, WEBSOCKET, handler, release, protocol)

    def attach(
        self,
        stream: Stream,
        framing: Framing,
        handler: Callable[[Client], Handler] | None = None,
        *,
        release: Callable[[], None] | None = None,
        protocol: str = "raw",
    ) -> Client:
        """Hold a connection another transport accepted, written on the fast path.

        For a transport that is not a taken-over WebSocket (a Server-Sent-Events
        response, an HTTP streaming body): ``stream`` says how to write to it and
        when it ends (:class:`.Stream`), ``framing`` how a message becomes its bytes
        (:data:`.EVENT_STREAM`, :data:`.CHUNKED`, or the transport's own). The client
        then joins channels in the protocol's :class:`Format` like any other, and gets
        each publication's bytes written directly while it keeps up, the same backlog
        and overflow policy when not. ``handler(client)`` reads what the stream hands
        over; ``release`` is called once the stream has ended (the host's count, say);
        ``protocol`` names the wire protocol, as for :meth:`connect`.
        """
        if not self.running:
            raise HubClosed("the hub is not running")
        client_id = next(self._ids)
        log.debug("client %d attached (%s)", client_id, type(framing).__name__)
        return self._adopt(client_id, stream, framing, handler, release, protocol)

    def _adopt(
        self,
        client_id: int,
        stream: Stream,
        framing: Framing,
        handler: Callable[[Client], Handler] | None,
        release: Callable[[], None] | None,
        protocol: str,
    ) -> Client:
        """A stream the hub writes to directly: it reads by itself and says when it ends."""
        client = Client(
            client_id, stream, stream, release=release, framing=framing, protocol=protocol
        )
        stream.on_writable = partial(self._refresh, client)
        self._refresh(client)
        self._register(client, handler)
        if self.keepalive is not None and isinstance(stream, Socket):
            self.keepalive.sockets.add(stream)
        stream.start(client.handler, partial(self._stream_lost, client))
        return client

    def _register(self, client: Client, handler: Callable[[Client], Handler] | None) -> None:
        self._clients[client.id] = client
        self.stats.connected = len(self._clients)
        arrived(self.stats, client)
        if handler is not None:
            client.handler = handler(client)

    async def serve(self, client: Client, setup: Awaitable[Any] | None = None) -> None:
        """Hand an ASGI connection's messages to its handler until it ends.

        ``setup`` (say, :meth:`ready`) is awaited first, within the connection's life.
        Returns after it for a taken-over socket, which hands messages over by itself:
        the protocol's ASGI call may then end, and Hypercorn's machinery with it.
        """
        if client.wire is not None:
            if setup is not None:
                await setup
            return
        connection = cast(Connection, client.connection)  # no stream: an ASGI connection
        try:
            if setup is not None:
                await setup
            while True:
                data = await connection.receive()
                handler = client.handler
                if handler is not None and not client.closing:
                    pending = handler.received(data)
                    if pending is not None:
                        await pending
        except ConnectionGone:
            pass
        except Exception:
            log.exception("client %d: its message handler failed", client.id)
            await self.close_client(client, CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            self._ended(client)

    def _stream_lost(self, client: Client, stream: Stream) -> None:
        if self.keepalive is not None and isinstance(stream, Socket):
            self.keepalive.sockets.discard(stream)
        self._ended(client)

    def _ended(self, client: Client) -> None:
        """The connection is over: out of the hub, the handler told once, the count down."""
        self.forget(client)
        handler, client.handler = client.handler, None
        release, client.release = client.release, None
        if release is not None:
            release()
        if handler is not None:
            handler.closed()

    def forget(self, client: Client) -> None:
        """The connection ended (or is being closed): out of every channel, nothing queued."""
        client.closing = True
        client.direct = None
        client.queue = None
        client.queued_bytes = 0
        if client.sender is not None:
            client.sender.cancel()
        for channel in client.channels[:]:
            self.leave(channel, client)
        if client.name and self._named.get(client.name) is client:
            del self._named[client.name]
        if self._clients.pop(client.id, None) is not None:
            self.stats.connected = len(self._clients)
            record = departed(self.stats, self.recent_disconnects, client)
            if self.watchers and client.name:
                self.watchers.disconnected(client, record.code, record.reason)

    def watch(self, watcher: HubWatcher) -> None:
        """Tell ``watcher`` of clients and channels from now on (:mod:`.watchers`)."""
        self.watchers.append(watcher)

    def identify(self, client: Client, *, user: str = "", name: str = "") -> None:
        """The protocol has connected ``client``: its id for it (``name``, by default the
        hub's) and its user, if any. Watchers hear of it (and later of its channels and
        its disconnect) from here on; an unidentified client is not told about."""
        if client.closing or client.name:
            return
        client.user = user
        client.name = name or str(client.id)
        if name:  # a protocol's own name for it, which a publication's skip may give
            self._named[name] = client
        if self.watchers:
            self.watchers.connected(client)

    def named(self, name: str) -> Client | None:
        """The client a protocol identified by ``name`` (:meth:`identify`), if here."""
        return self._named.get(name)

    def lost(self, channel: str, count: int) -> None:
        """This process missed ``count`` publications on ``channel``: each format tells its own."""
        for fmt, clients in list(self.channels.get(channel, {}).items()):
            for client in list(clients.values()):
                fmt.missed(self, client, channel, count)

    async def _close(self, client: Client, code: int, reason: str) -> None:
        if client.ending is None:
            client.ending = (code, reason)
        self.forget(client)
        try:
            # The close frame goes after whatever the transport still holds; a client
            # that has stopped reading never takes it, and is dropped after the timeout.
            await asyncio.wait_for(client.connection.close(code, reason), CLOSE_TIMEOUT)
        except (TimeoutError, Exception):
            if client.wire is not None:
                client.wire.abort()

    def disconnect(self, client: Client, code: int, reason: str) -> None:
        """Close one client: out of its channels now, the close frame after what it holds."""
        if not client.closing:
            self._spawn(self._close(client, code, reason))

    async def close_client(self, client: Client, code: int, reason: str) -> None:
        """Close one client after what was queued to it, awaited: out of its channels now,
        its backlog sent (for at most :data:`CLOSE_TIMEOUT`), then the close frame.

        A protocol's farewell (a disconnect reply sent just before) so reaches a plain
        ASGI WebSocket too, whose only buffer is the backlog :meth:`disconnect` drops.
        """
        if client.closing:
            return
        for channel in client.channels[:]:
            self.leave(channel, client)
        if client.queue:
            await self._flush(client, asyncio.get_running_loop().time() + CLOSE_TIMEOUT)
        if not client.closing:
            await self._close(client, code, reason)

    @staticmethod
    async def _flush(client: Client, deadline: float) -> None:
        """Wait until ``client``'s backlog and transport have gone out, or ``deadline``."""
        with suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                while client.queue and client.sender is not None and not client.closing:
                    await asyncio.shield(client.sender)
                if client.wire is not None and not client.closing:
                    await client.wire.drain()

    # Fan-out ------------------------------------------------------------------

    def publish(self, channel: str, publication: Any) -> int:
        """Queue ``publication`` for every subscriber of ``channel``; call on the loop.

        Encoded once per format in the channel and framed once per framing (formats
        that give the same object share its frames); returns how many clients it was
        queued for. A channel of at most ``fan_out_slice`` clients is written to at
        once; a bigger one, or any while others wait, goes to the pending fan-outs,
        which a task delivers in slices of that many clients with a turn of the loop
        between: a broadcast to 10,000 clients never holds the loop for its whole
        length, so HTTP requests, handshakes and the publisher's own answer go on
        meanwhile.
        """
        if self._loop is None:
            raise HubClosed("the hub is not running")
        members = self.channels.get(channel)
        self.stats.messages += 1
        if not members:
            return 0
        if channel in self._holding:
            members = self._hold_publication(members, publication)
            if not members:
                return self._holding.get(channel, 0)
        skip = getattr(publication, "skip", None)
        if skip is not None:
            members = self._skipping(members, channel, skip)
        pending = self._pending
        now = not pending and sum(map(len, members.values())) <= self.fan_out_slice
        if not now and len(pending) >= self.max_pending:
            # Backpressure, not a growing queue: the loop catches up here and now.
            self._flush_pending()
        count = 0
        # The last message built, shared by formats that give the same object; and by
        # framing, once a format's members differ in framing (an SSE stream among them).
        last: Message | None = None
        last_framing: Framing = WEBSOCKET
        built: dict[Framing, Message] | None = None
        # Nothing below changes ``members`` synchronously (closes are tasks): no copy.
        for fmt, clients in members.items():
            data = fmt.encode(channel, publication)
            if data is None:
                continue
            split = clients.split
            if split is None and built is None:  # one framing so far: nearly always
                if last is None or last.data is not data or last_framing is not clients.framing:
                    last_framing = clients.framing
                    last = (
                        _message(data) if last_framing is WEBSOCKET else _framed(data, last_framing)
                    )
                if now:
                    count += self._deliver(last, clients.values())
                else:
                    pending.append(_Pending(last, list(clients.values())))
                    count += len(clients)
                continue
            if built is None:
                built = {} if last is None else {last_framing: last}
            groups = split.items() if split is not None else ((clients.framing, clients),)
            for framing, group in groups:
                message = built.get(framing)
                if message is None or message.data is not data:
                    message = built[framing] = _framed(data, framing)
                if now:
                    count += self._deliver(message, group.values())
                else:
                    pending.append(_Pending(message, list(group.values())))
                    count += len(group)
        if not now and self._drainer is None:
            self._drainer = self._loop.create_task(self._drain_pending())
        return count

    def _skipping(self, members: Channel, channel: str, name: str) -> Channel:
        """``members`` without the client named ``name`` (a publisher's own connection,
        as Pusher's ``socket_id`` excludes it); the same object when it is not there."""
        skipped = self._named.get(name)
        if skipped is None or channel not in skipped.channels:
            return members
        trimmed: Channel = {}
        for fmt, group in members.items():
            if skipped.id not in group:
                trimmed[fmt] = group
            elif group.split is None:  # one framing, nearly always: a copy at C speed
                kept = Group(group.framing)
                dict.update(kept, group)
                del kept[skipped.id]
                if kept:
                    trimmed[fmt] = kept
            else:
                kept = Group(group.framing)
                for client in group.values():
                    if client is not skipped:
                        kept.add(client)
                if kept:
                    trimmed[fmt] = kept
        return trimmed

    def _hold_publication(self, members: Channel, publication: Any) -> Channel:
        """Give ``publication`` to the channel's holders; the other groups, to deliver.

        A holder keeps at most ``max_held``; past that it counts them as lost (the
        protocol then fails its subscribe), so a stalled read cannot grow it.
        """
        others: Channel = {}
        event = isinstance(publication, PresenceEvent)  # a join or leave: not held
        for fmt, clients in members.items():
            if not isinstance(fmt, Held):
                others[fmt] = clients
            elif event:
                continue
            elif len(fmt.publications) < self.max_held:
                fmt.publications.append(publication)
            else:
                fmt.lost += 1
        return others

    def _deliver(self, message: Message, clients: Collection[Client]) -> int:
        """A publication to ``clients``: how many it was sent or queued to."""
        queued = self._write(message, clients)
        stats = self.stats
        stats.deliveries += queued
        stats.sent_bytes += queued * len(message.frame)
        return queued

    def _write(self, message: Message, clients: Collection[Client]) -> int:
        """Write ``message`` to each client keeping up; queue it for the others.

        The loop is the cost of a fan-out per client: a keeping-up client is one
        lookup and its stream's ``send_now``; everything else is in :meth:`_other`.
        """
        frame = message.frame
        size = len(frame)
        skipped = 0
        for client in clients:
            send = client.direct
            if send is not None:
                try:
                    sent = send(frame)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                except OSError:
                    sent = -1
                if sent != size:
                    self._spill(client, frame, sent)
            elif not self._other(client, message):
                skipped += 1
        return len(clients) - skipped

    async def _drain_pending(self) -> None:
        """Deliver the pending fan-outs in order, a slice of clients per turn of the loop."""
        pending = self._pending
        step = self.fan_out_slice
        try:
            while pending:
                item = pending[0]
                start = item.next
                end = item.next = start + step
                self._deliver(item.message, item.clients[start:end])
                if end >= len(item.clients):
                    pending.popleft()
                await asyncio.sleep(0)
        finally:
            self._drainer = None

    def _flush_pending(self) -> None:
        """Every pending fan-out, now, in order (at the bound, and when closing)."""
        pending = self._pending
        while pending:
            item = pending.popleft()
            self._deliver(item.message, item.clients[item.next :])

    def send(self, client: Client, data: str | bytes) -> bool:
        """One message to one client (a reply), in order with its publications.

        False when it was not sent: the client is closing, or the message is larger
        than the room left in its buffer (its backlog and what its stream holds; then
        the overflow policy applies, even with nothing queued: a reply never takes
        more than ``max_buffer``).
        """
        if client.closing:
            return False
        message = _framed(data, client.framing)
        wire = client.wire
        if wire is not None:
            if not wire.open():
                return False  # closing or closed: nothing more goes out
            held = wire.transport.get_write_buffer_size()
        else:
            held = 0
        if not self._admit(client, message.size, held, self.max_buffer):
            return False
        self.stats.sent_bytes += message.size
        if client.direct is not None:
            return self._write(message, (client,)) == 1
        self._append(client, message)
        return True
