"""The fan-out engine: connections, the channels they are in, and delivery that never waits.

Protocol-neutral: a wire protocol (the raw ``/ws``, the Centrifuge protocol) brings
its :class:`Format`, which says what a publication looks like on its connections,
and the engine encodes each publication once per format present in the channel,
then hands the same frame to every subscriber: straight onto the connection's
transport when it is keeping up (the fast path, :mod:`.fastpath`), or into the
connection's bounded backlog otherwise, which a short-lived sender task drains. A
client that stops reading fills only its own backlog; then the overflow policy
decides what happens to it. The cost of a publication follows the channel's
subscribers, never the number of connected clients.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Collection, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, Protocol

from realtime_broker import PresenceEvent

from .channels import ChannelRules
from .connection import ConnectionGone, Handler
from .fastpath import (
    OPEN,
    IncomingLimits,
    Keepalive,
    Socket,
    decline_compression,
    encode_frame,
    guard,
    take_over,
)

log = logging.getLogger("realtime.hub")

OverflowPolicy = Literal["close", "drop-oldest"]
OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = ("close", "drop-oldest")

#: RFC 6455 "policy violation": the client broke the deal by not reading.
CLOSE_OVERFLOW = 1008
#: RFC 6455 "internal error": sending to the client failed.
CLOSE_INTERNAL_ERROR = 1011
#: RFC 6455 "service restart": this process missed broadcasts; reconnect.
CLOSE_MISSED = 1012
#: RFC 6455 "going away": the server is shutting down.
CLOSE_GOING_AWAY = 1001
#: The largest chunk a sender joins from a client's backlog into one write. A fast-path
#: client is written to directly only while its transport holds nothing back; else
#: messages go to its backlog (where drop-oldest can act), and from there to the
#: transport a chunk at a time, each once the one before is out.
TRANSPORT_HIGH_WATER = 64 * 1024
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


class Format(Protocol):
    """How a publication looks on one wire protocol's connections.

    One object per protocol, shared by all its connections: the engine groups a
    channel's subscribers by format and encodes a publication once per format.
    """

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        """The WebSocket message (text for ``str``, binary for ``bytes``); None when
        this format's clients get nothing of it (a join or leave, say)."""
        ...

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        """This process missed ``count`` publications on ``channel``: tell ``client``."""
        ...


class Connection(Protocol):
    """What the hub needs of a connection (:class:`.connection.ASGIConnection`).

    ``receive`` raises :class:`.connection.ConnectionGone` (or the task is cancelled)
    when the client leaves. A connection may carry ``asgi_send``, for the fast path,
    and then its ``accept`` takes a ``handover`` (:meth:`.ASGIConnection.accept`).
    """

    async def accept(self) -> None: ...
    async def receive(self) -> Any: ...
    async def send(self, data: Any) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One outgoing message: a publication in one format, or a reply to one client.

    ``frame`` is the encoded WebSocket frame, shared by every fast-path subscriber.
    """

    data: str | bytes
    frame: bytes

    @property
    def size(self) -> int:
        return len(self.frame)


def _message(data: str | bytes) -> Message:
    if isinstance(data, str):
        return Message(data, encode_frame(data.encode(), text=True))
    return Message(data, encode_frame(data, text=False))


def _reuse(message: Message | None, data: str | bytes) -> Message:
    """The message of ``data``: the one before if two formats gave the same object."""
    if message is not None and message.data is data:
        return message
    return _message(data)


@dataclass(slots=True)
class _Pending:
    """A fan-out under way: the message, the clients it was published to, how far it got."""

    message: Message
    clients: list[Client]
    next: int = 0


@dataclass
class HubStats:
    connected: int = 0
    messages: int = 0
    deliveries: int = 0
    overflows: int = 0
    dropped: int = 0
    disconnected_slow: int = 0


@dataclass(eq=False, slots=True)
class Client:
    """A connected client. ``wire`` is set when the fast path took its socket over
    (it is then its ``connection`` too)."""

    id: int
    connection: Connection
    wire: Socket | None
    #: The protocol plugin's reader of this client's messages.
    handler: Handler | None = None
    #: Tells the host's connection count this connection ended (taken-over sockets).
    release: Callable[[], None] | None = None
    #: Channels this client is in (usually one or a few: a list is smaller than a set).
    channels: list[str] = field(default_factory=list)
    #: What the protocol keeps on the connection (a Centrifuge session, say).
    state: Any = None
    #: Backlog, created only while the client lags (an empty deque costs 760 bytes).
    queue: deque[Message] | None = None
    queued_bytes: int = 0
    sender: asyncio.Task[None] | None = None
    closing: bool = False
    overflow_logged: bool = False
    #: The socket's ``send`` while the client may be written to directly (fast path,
    #: open, keeping up, no backlog), else None: one lookup per delivery of a fan-out.
    direct: Callable[[bytes], int] | None = None


class Held:
    """A client's publications of one channel kept aside between :meth:`Hub.hold` and
    :meth:`Hub.release`. It stands in the channel as its own format group: the fan-out
    hands it the publications instead of encoding them."""

    __slots__ = ("lost", "publications")

    def __init__(self) -> None:
        self.publications: list[Any] = []
        #: Publications this process missed meanwhile (the broker lost them).
        self.lost = 0

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        raise RuntimeError("held publications are not encoded")

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        self.lost += count


Channel = dict[Any, dict[int, Client]]
"""A channel's subscribers, grouped by format: ``{format: {client id: client}}``."""


class Hub:
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
        self._clients: dict[int, Client] = {}
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
        code: int = CLOSE_GOING_AWAY,
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
            with suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    while client.queue and client.sender is not None:
                        await asyncio.shield(client.sender)
                    if client.wire is not None and not client.closing:
                        await client.wire.drain()
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
        self, connection: Connection, handler: Callable[[Client], Handler] | None = None
    ) -> Client | None:
        """Accept a WebSocket and hold it; ``None`` if the client left during the handshake.

        Under Hypercorn with the fast path on, the socket is taken over from Hypercorn
        (:func:`.fastpath.take_over`): read, written and kept alive here, with no task of
        its own. Otherwise it stays on ASGI, guarded (:func:`.fastpath.guard`). Either
        way ``handler(client)`` makes the reader of its messages; the protocol then calls
        :meth:`serve`, which reads an ASGI connection until it ends.
        """
        if not self.running:
            await connection.close(1013, "server not ready")
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
                    )
                )
            else:
                await connection.accept()
        except ConnectionGone:
            return None
        if sock is not None:
            client = Client(client_id, sock, sock)
            sock.on_writable = partial(self._refresh, client)
            self._refresh(client)
            detach = getattr(connection, "detach", None)
            if detach is not None:
                client.release = detach()
        else:
            client = Client(client_id, connection, None)
            if asgi_send is not None:
                guard(asgi_send, self.incoming, client_id)  # what the client sends
        log.debug("client %d connected (%s)", client_id, "taken over" if sock else "ASGI")
        self._clients[client_id] = client
        self.stats.connected = len(self._clients)
        if handler is not None:
            client.handler = handler(client)
        if sock is not None:
            if self.keepalive is not None:
                self.keepalive.sockets.add(sock)
            sock.start(client.handler, partial(self._lost_socket, client))
        return client

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
        connection = client.connection
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
            await self.close_client(client, CLOSE_INTERNAL_ERROR, "internal error")
        finally:
            self._ended(client)

    def _lost_socket(self, client: Client, sock: Socket) -> None:
        if self.keepalive is not None:
            self.keepalive.sockets.discard(sock)
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
        self._clients.pop(client.id, None)
        self.stats.connected = len(self._clients)

    # Channels -----------------------------------------------------------------

    def join(self, channel: str, client: Client, fmt: Format) -> None:
        """Put ``client`` in ``channel``; publications reach it in ``fmt``."""
        if client.closing or channel in client.channels:
            return
        members = self.channels.get(channel)
        if members is None:
            members = self.channels[channel] = {}
            if self.on_first is not None:
                self.on_first(channel)
        members.setdefault(fmt, {})[client.id] = client
        client.channels.append(channel)

    def hold(self, channel: str, client: Client) -> Held:
        """Put ``client`` in ``channel`` with its publications kept aside, not sent.

        For a protocol that must read the channel's history before going live (stream
        recovery over a distributed broker): publications from now until
        :meth:`release` are collected in the returned :class:`Held`, so none is missed
        or sent twice around the read.
        """
        held = Held()
        if client.closing or channel in client.channels:
            return held
        members = self.channels.get(channel)
        if members is None:
            members = self.channels[channel] = {}
            if self.on_first is not None:
                self.on_first(channel)
        members[held] = {client.id: client}
        client.channels.append(channel)
        self._holding[channel] = self._holding.get(channel, 0) + 1
        return held

    def release(self, channel: str, client: Client, held: Held, fmt: Format) -> None:
        """From :meth:`hold` to a member receiving in ``fmt``, in one step: what was
        published until now is in ``held.publications``, what comes next is sent."""
        members = self.channels.get(channel)
        if members is None or members.pop(held, None) is None:
            return  # left (or gone) meanwhile
        self._unhold(channel)
        members.setdefault(fmt, {})[client.id] = client

    def _unhold(self, channel: str) -> None:
        left = self._holding[channel] - 1
        if left:
            self._holding[channel] = left
        else:
            del self._holding[channel]

    def leave(self, channel: str, client: Client) -> None:
        if channel not in client.channels:
            return
        client.channels.remove(channel)
        members = self.channels.get(channel)
        if members is None:
            return
        for fmt, clients in list(members.items()):
            if clients.pop(client.id, None) is not None and not clients:
                del members[fmt]
                if isinstance(fmt, Held):
                    self._unhold(channel)
        if not members:
            del self.channels[channel]
            if self.on_last is not None:
                self.on_last(channel)

    async def ready(self, channel: str) -> bool:
        """Wait until publications on ``channel`` reach this process (after :meth:`join`).

        With Redis that is one round trip; False if the broker could not confirm it
        (Redis down: the client stays, and hears the channel once Redis is back).
        """
        if self.confirm is None:
            return True
        try:
            await self.confirm(channel)
        except Exception as exc:
            log.debug("channel %r not confirmed by the broker: %r", channel, exc)
            return False
        return True

    def channel_counts(self) -> dict[str, int]:
        """Subscribers of every channel with any, for the broker's cluster-wide view."""
        return {
            channel: sum(len(clients) for clients in members.values())
            for channel, members in self.channels.items()
        }

    def subscribers(self, channel: str) -> int:
        return sum(len(clients) for clients in self.channels.get(channel, {}).values())

    def lost(self, channel: str, count: int) -> None:
        """This process missed ``count`` publications on ``channel``: each format tells its own."""
        for fmt, clients in list(self.channels.get(channel, {}).items()):
            for client in list(clients.values()):
                fmt.missed(self, client, channel, count)

    async def _drain_backlog(self, client: Client) -> None:
        """Send a client's backlog in order, then end: no task idles per client."""
        wire = client.wire
        queue = client.queue
        assert queue is not None  # _enqueue creates it before starting this task
        try:
            while queue and not client.closing:
                if wire is not None:
                    await wire.drain()  # wait until the transport has room again
                    if client.closing or not wire.open():
                        break
                    chunk = []
                    chunk_bytes = 0
                    while queue and chunk_bytes < self.direct_limit:
                        message = queue.popleft()
                        chunk.append(message.frame)
                        chunk_bytes += message.size
                    client.queued_bytes -= chunk_bytes
                    wire.transport.write(b"".join(chunk))
                else:
                    message = queue.popleft()
                    client.queued_bytes -= message.size
                    await client.connection.send(message.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The connection broke under us: forget the client now and close what is left.
            log.debug("client %d send failed: %r", client.id, exc)
            self._spawn(self._close(client, CLOSE_INTERNAL_ERROR, "send failed"))
        finally:
            client.sender = None
            if client.queue is queue and not queue:
                client.queue = None  # caught up: back to the fast path, no backlog kept
                self._refresh(client)

    @staticmethod
    def _refresh(client: Client) -> None:
        """Whether fan-outs may write to ``client`` directly (on every change of it)."""
        wire = client.wire
        if wire is not None and not client.closing and not client.queue and wire.writable():
            client.direct = wire.send_now
        else:
            client.direct = None

    async def _close(self, client: Client, code: int, reason: str) -> None:
        self.forget(client)
        try:
            # The close frame goes after whatever the transport still holds; a client
            # that has stopped reading never takes it, and is dropped after the timeout.
            await asyncio.wait_for(client.connection.close(code, reason), CLOSE_TIMEOUT)
        except (TimeoutError, Exception):
            if client.wire is not None:
                client.wire.abort()

    # Fan-out ------------------------------------------------------------------

    def publish(self, channel: str, publication: Any) -> int:
        """Queue ``publication`` for every subscriber of ``channel``; call on the loop.

        Encoded once per format in the channel; returns how many clients it was queued
        for. A channel of at most ``fan_out_slice`` clients is written to at once;
        a bigger one, or any while others wait, goes to the pending fan-outs, which a
        task delivers in slices of that many clients with a turn of the loop between:
        a broadcast to 10,000 clients never holds the loop for its whole length, so
        HTTP requests, handshakes and the publisher's own answer go on meanwhile.
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
        pending = self._pending
        if not pending and sum(map(len, members.values())) <= self.fan_out_slice:
            # Nothing below changes ``members`` synchronously (closes are tasks): no copy.
            count = 0
            message = None
            for fmt, clients in members.items():
                data = fmt.encode(channel, publication)
                if data is not None:
                    message = _reuse(message, data)
                    count += self._deliver(message, clients.values())
            return count
        if len(pending) >= self.max_pending:
            # Backpressure, not a growing queue: the loop catches up here and now.
            self._flush_pending()
        count = 0
        message = None
        for fmt, clients in members.items():
            data = fmt.encode(channel, publication)
            if data is not None:
                message = _reuse(message, data)
                pending.append(_Pending(message, list(clients.values())))
                count += len(clients)
        if self._drainer is None:
            self._drainer = self._loop.create_task(self._drain_pending())
        return count

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
        self.stats.deliveries += queued
        return queued

    def _write(self, message: Message, clients: Collection[Client]) -> int:
        """Write ``message`` to each client keeping up; queue it for the others.

        The loop is the cost of a fan-out per client: a keeping-up client is one
        lookup and the socket's ``send``; everything else is in :meth:`_other`.
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

    @staticmethod
    def _spill(client: Client, frame: bytes, sent: int) -> None:
        """The socket took part of ``frame`` (``sent`` bytes, -1 on an error): the
        transport takes the rest, and pauses writing (so the client leaves the direct
        path), or meets the error itself and closes (and the client leaves it now,
        rather than at ``connection_lost`` on the next turn of the loop)."""
        wire = client.wire
        assert wire is not None
        wire.transport.write(frame[sent:] if sent > 0 else frame)
        if wire.transport.is_closing():
            client.direct = None

    def _other(self, client: Client, message: Message) -> bool:
        """A client not on the direct path: its backlog, unless it is closing."""
        if client.closing:
            return False
        wire = client.wire
        if wire is not None and wire.state != OPEN:
            return False  # closing or closed: nothing more goes out
        return self._enqueue(client, message)

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
        than the room left in its buffer (then the overflow policy applies, even with
        nothing queued: a reply never takes more than ``max_buffer``).
        """
        message = _message(data)
        if client.closing or not self._room_for(client, message.size):
            return False
        return self._write(message, (client,)) == 1

    def _room_for(self, client: Client, size: int) -> bool:
        """Whether ``size`` more bytes fit in what ``client`` holds (its backlog, and
        what its transport holds on the fast path), after the overflow policy."""
        wire = client.wire
        held = wire.transport.get_write_buffer_size() if wire is not None else 0
        if held + client.queued_bytes + size <= self.max_buffer:
            return True
        self.stats.overflows += 1
        if self.overflow == "drop-oldest" and held + size <= self.max_buffer:
            self._overflowed(client, "dropping its oldest messages")
            self._drop_oldest(client, self.max_buffer - held - size)
            return True
        self._overflowed(client, "closing it")
        self.stats.disconnected_slow += 1
        reason = f"outgoing buffer overflow ({self.max_buffer} bytes)"
        self.forget(client)  # closing from now: the protocol stops answering it at once
        self._spawn(self._close(client, CLOSE_OVERFLOW, reason))
        return False

    def _drop_oldest(self, client: Client, room: int) -> None:
        """Drop the oldest queued messages until ``client`` holds at most ``room``."""
        count = 0
        while client.queue and client.queued_bytes > room:
            dropped = client.queue.popleft()
            client.queued_bytes -= dropped.size
            count += 1
        self.stats.dropped += count
        told = getattr(client.handler, "dropped", None)
        if told is not None and count:  # a protocol whose clients notice holes
            told(count)

    def disconnect(self, client: Client, code: int, reason: str) -> None:
        """Close one client: out of its channels now, the close frame after what it holds."""
        if not client.closing:
            self._spawn(self._close(client, code, reason))

    async def close_client(self, client: Client, code: int, reason: str) -> None:
        """:meth:`disconnect`, awaited: the close frame is on its way (or the socket dropped)."""
        if not client.closing:
            await self._close(client, code, reason)

    def _enqueue(self, client: Client, message: Message) -> bool:
        limit = self.backlog_limit if client.wire is not None else self.max_buffer
        if client.queued_bytes + message.size > limit:
            # Even with nothing queued: one message never takes more than the bound.
            self.stats.overflows += 1
            if self.overflow == "close" or message.size > limit:
                self._overflowed(client, "closing it")
                self.stats.disconnected_slow += 1
                reason = f"outgoing buffer overflow ({self.max_buffer} bytes)"
                self._spawn(self._close(client, CLOSE_OVERFLOW, reason))
                return False
            self._overflowed(client, "dropping its oldest messages")
            self._drop_oldest(client, limit - message.size)
        if client.queue is None:
            client.queue = deque()
            client.direct = None
        client.queue.append(message)
        client.queued_bytes += message.size
        if client.sender is None:
            client.sender = asyncio.get_running_loop().create_task(self._drain_backlog(client))
        return True

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _overflowed(self, client: Client, action: str) -> None:
        if not client.overflow_logged:
            client.overflow_logged = True
            log.warning(
                "client %d is not reading: its %d-byte buffer overflowed, %s",
                client.id,
                self.max_buffer,
                action,
            )
