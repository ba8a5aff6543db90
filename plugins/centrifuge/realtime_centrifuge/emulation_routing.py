"""Where an emulated session lives, and how its client's commands reach it from any host.

A browser on HTTP-streaming or SSE sends its commands in separate ``POST /emulation``
requests, each naming the ``node`` (the process holding its stream: its broker
``uid``) and the ``session`` (a random id given in the connect result, not the client
id, which presence shows to others). Behind a load balancer a request may reach any
process: this one hands its commands to the session when it holds it, and otherwise
sends them on as a control message (:meth:`realtime_broker.Broker.publish_control`,
vouched for by the broker, so a forged one on Redis is dropped) that the holder
applies. No sticky sessions, as in Centrifugo.

Each session's commands run one request at a time, in order, within the hub's
incoming rate (the frames a second a WebSocket may send); past it, or with too many
requests waiting, a request is refused (429).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from realtime.logs import CONTEXT
from realtime.rate import Bucket, Rate
from realtime_broker import MAX_CONTROL_SIZE, BrokerUnavailable, Publication
from realtime_hub import Client

from .codec import Command
from .session import Session
from .session.state import Result

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger("realtime.centrifuge")

#: The control message's ``op``; its ``user`` matches no signed-in user, so the node's
#: own control handler (:meth:`.node.Node._control`) finds no connection for it.
OP = "emulation"
NOBODY = "\x00emulation"
#: How a routed request begins (its ``op`` first): what every process's listeners look
#: for before parsing, as each hears every control message.
MARK = b'{"op":"emulation",'
#: Requests of one session that may wait for the one being handled.
MAX_WAITING = 16
#: Sessions whose forwarded requests this process counts (their rate, when it does
#: not hold them); past it the counts start afresh.
MAX_FORWARD_BUCKETS = 10_000
#: Requests one client address may send on to other processes: this many sessions'.
ADDRESS_RATE_FACTOR = 10
#: What one client address may send on to other processes, KiB a second (and in a
#: burst): every process hears each control message, so this is what one client can
#: make the whole cluster parse. A WebSocket's bytes reach its own process only.
FORWARDED_KIB_RATE = 1024
FORWARDED_KIB_BURST = 256
#: How long a list of the cluster's processes is trusted to say a node is unknown.
NODES_TTL = 2.0
#: The longest session id a request may name: the server gives UUIDs (36 characters).
#: Each one sent on is a key of this process's rate buckets, so a longer one would
#: let made-up ids hold ``MAX_FORWARD_BUCKETS`` times the request size.
MAX_SESSION_ID = 64


class EmulatedSession(Session):
    """A session whose client reaches it through ``/emulation``: its connect result
    carries ``session`` and ``node``, which the client puts in every request."""

    __slots__ = ("emulation",)

    #: ``(node, session)``: set by the transport right after it made the session.
    emulation: tuple[str, str]

    async def _connect(self, command: Command) -> Result:
        result = await super()._connect(command)
        if isinstance(result, Mapping):
            node, session = self.emulation
            return {**result, "session": session, "node": node}
        return result


@dataclass(eq=False)
class _Held:
    """One emulated session this process holds."""

    client: Client
    bucket: Bucket
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0


class Refused(Exception):
    """An emulation request refused with an HTTP status."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class Emulation:
    """One node's emulated sessions and the routing of their commands (per host)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        limits = node.hub.incoming
        self.rate = Rate(limits.rate, limits.burst) if limits.rate else Rate(0)
        factor = ADDRESS_RATE_FACTOR
        self.address_rate = (
            Rate(limits.rate * factor, limits.burst * factor) if limits.rate else Rate(0)
        )
        #: The largest request body, connect body or command frame: a WebSocket message's.
        self.max_size = limits.max_size
        self.address_bytes = Rate(FORWARDED_KIB_RATE, FORWARDED_KIB_BURST)
        self.sessions: dict[str, _Held] = {}
        self._forwarded: dict[str, Bucket] = {}
        self._nodes: tuple[float, frozenset[str]] = (0.0, frozenset())
        #: The read of the node list under way: every request waiting on it shares it.
        self._reading: asyncio.Task[frozenset[str]] | None = None
        self._stop = node.broker.on_control(self._control)

    @property
    def uid(self) -> str:
        """This process's node id (its broker's, made anew in each worker)."""
        return self.node.broker.uid

    def close(self) -> None:
        self._stop()

    def hold(self, session: str, client: Client) -> None:
        self.sessions[session] = _Held(client, Bucket(self.rate))

    def release(self, session: str) -> None:
        self.sessions.pop(session, None)

    async def dispatch(self, node: str, session: str, data: str | bytes, address: str = "") -> None:
        """Hand ``data`` (the client's commands, as its codec frames them) to the
        session: here, or through the broker to its process. :class:`Refused` with
        400 for a session id longer than any the server gives, 404 for a node the
        cluster does not know, 429 past the session's rate (or, sent on or for an
        unknown node, the client ``address``'s), 413 for what a control message cannot
        carry, 503 when the broker cannot take it."""
        if len(session) > MAX_SESSION_ID:
            raise Refused(400, "not a session id")
        if node == self.uid:
            await self._apply(session, data)
            return
        # The address first: a made-up node costs a read of the node list now and then.
        self._take_forwarded("\x00" + address, self.address_rate)
        if not await self._known(node):
            raise Refused(404, "node not found")
        self._take_forwarded(session, self.rate)
        binary = isinstance(data, bytes)
        text = base64.b64encode(data).decode("ascii") if isinstance(data, bytes) else data
        fields = {"op": OP, "user": NOBODY, "node": node, "session": session}
        message = json.dumps({**fields, "data": text, "binary": binary}, separators=(",", ":"))
        encoded = message.encode()
        if len(encoded) > MAX_CONTROL_SIZE:
            raise Refused(413, "request too large to route to its node")
        kib = -(-len(encoded) // 1024)
        self._take_forwarded("\x01" + address, self.address_bytes, kib)
        try:
            await self.node.broker.publish_control(encoded)
        except BrokerUnavailable:
            raise Refused(503, "the broker is unavailable") from None

    async def _apply(self, session: str, data: str | bytes) -> None:
        """The commands to a session held here, one request at a time, in order.

        An unknown session is not an error (as Centrifugo: the node answered): its
        client's commands time out and it connects again.
        """
        held = self.sessions.get(session)
        if held is None:
            return
        if not held.bucket.take():
            raise Refused(429, "too many emulation requests")
        if held.waiting >= MAX_WAITING:
            raise Refused(429, "too many emulation requests waiting")
        held.waiting += 1
        try:
            async with held.lock:
                client = held.client
                handler = client.handler
                if handler is None or client.closing:
                    return
                pending = handler.received(data)
                if pending is not None:
                    await pending
        finally:
            held.waiting -= 1

    def _take_forwarded(self, key: str, rate: Rate, count: int = 1) -> None:
        """Count a request sent on (or for an unknown node): against its session's
        rate, and its address's (:data:`ADDRESS_RATE_FACTOR` sessions' worth), so
        made-up sessions cannot turn one client into a flood of control messages to
        every process."""
        bucket = self._forwarded.get(key)
        if bucket is None:
            if len(self._forwarded) >= MAX_FORWARD_BUCKETS:
                self._forwarded.clear()
            bucket = self._forwarded[key] = Bucket(rate)
        if not bucket.take(count):
            raise Refused(429, "too many emulation requests")

    async def _known(self, node: str) -> bool:
        """Whether ``node`` is a live process of the cluster (listed within NODES_TTL)."""
        read_at, nodes = self._nodes
        now = time.monotonic()
        if node in nodes and now - read_at < NODES_TTL:
            return True
        if now - read_at < NODES_TTL / 2:
            return False  # just read: not there
        reading = self._reading
        if reading is None:  # one read at a time, however many requests wait on it
            reading = self._reading = asyncio.get_running_loop().create_task(self._read_nodes())
            # Its failure is each waiter's to raise; none may be left (all cancelled).
            reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        try:
            nodes = await asyncio.shield(reading)
        except BrokerUnavailable:
            raise Refused(503, "the broker is unavailable") from None
        return node in nodes

    async def _read_nodes(self) -> frozenset[str]:
        try:
            listed = await self.node.broker.cluster_nodes()
            nodes = frozenset(str(entry.get("uid", "")) for entry in listed)
            self._nodes = (time.monotonic(), nodes)
            return nodes
        finally:
            self._reading = None

    def _control(self, message: bytes | Publication) -> int:
        """A routed request from another process, for a session held here."""
        data = message.data if isinstance(message, Publication) else message
        if not isinstance(data, bytes) or not data.startswith(MARK):
            return 0
        # Another process's: the field as json.dumps wrote it (a quote inside a string
        # is escaped, so no session or data can hold it), no parse of the whole.
        if b'"node":%s,' % json.dumps(self.uid).encode() not in data:
            return 0
        try:
            parsed = json.loads(data)
            node, session, text = parsed["node"], parsed["session"], parsed["data"]
            if not (isinstance(node, str) and isinstance(session, str) and isinstance(text, str)):
                raise TypeError("node, session and data are strings")
            commands: str | bytes = base64.b64decode(text) if parsed.get("binary") else text
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            log.warning("emulation control message refused: %r", exc)
            return 0
        if node == self.uid and session in self.sessions:
            self.node.spawn(self._routed(session, commands))
        return 0

    async def _routed(self, session: str, data: str | bytes) -> None:
        CONTEXT.set({**CONTEXT.get(), "session": session[:8]})
        try:
            await self._apply(session, data)
        except Refused as refused:
            log.debug("a routed emulation request was refused: %s", refused.text)
