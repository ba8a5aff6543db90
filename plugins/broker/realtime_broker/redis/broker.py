"""Redis pub/sub as the bus between processes and machines (redis-py's asyncio client).

:class:`RedisBroker` composes the package's parts: the subscription
(:mod:`.listener`, with its sans-IO bookkeeping in :mod:`.sequence`), the envelopes on
the wire (:mod:`.envelope`), the Lua scripts (``*.lua``, :mod:`.scripts`), presence
(:mod:`.presence`), the cluster's view (:mod:`.cluster`) and control messages
(:mod:`.control`); the names it uses in Redis are in :mod:`.names`.

Each publication is numbered by ``publish.lua`` in the same step that PUBLISHes it.
``realtime:{ch:NAME}:meta`` holds the numbering (``epoch``, ``seq``); a publication
creates it (a read never does: a channel without one is at offset 0 in the empty
epoch, which the first publication's epoch follows), and it expires ``META_TTL`` (30
days) after its first publication, renewed every 64th. Where the channel's namespace
keeps history, ``realtime:{ch:NAME}:history`` is a stream: entry ``N-1`` is
publication N, at most ``history_size`` of them (``MAXLEN``), the whole stream
expiring ``history_ttl`` after the last one, written by the same script, so history
and live delivery share one numbering; a new epoch deletes what an old one left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any

from ..background import spawn
from ..base import HistoryResult, Publication, StreamPosition, as_publication
from ..errors import BrokerUnavailable, UnrecoverablePosition
from ..history import MAX_HISTORY_LIMIT
from ..presence import Member, PresenceEvent
from ..results import IDEMPOTENCY_TTL, PublishResult, check_idempotency_key
from . import scripts
from .cluster import HEARTBEAT, ClusterMaps
from .connection import UNREACHABLE, make_client
from .control import PROOF_TTL, ControlCheck
from .envelope import CONTROL_MAGIC, MAGIC, decode, decode_control, encode, encode_control
from .listener import RedisListener
from .presence import RedisPresence

log = logging.getLogger("realtime.broker")

#: How many times close() cancels a task that goes on anyway (see close).
CLOSE_ROUNDS = 5
#: How long a channel's numbering lives, seconds, renewed by every 64th publication
#: (the first included). Channels come and go (a room, a conversation): their hashes
#: must not pile up for ever. A process still listening when it expires follows the
#: next epoch without a loss.
META_TTL = 30 * 24 * 3600


class RedisBroker(RedisListener):
    """``redis://[user:password@]host:port/db`` (or ``rediss://``).

    Channels that keep history keep it in a Redis stream beside their numbering,
    written by the same script that publishes: one numbering for both.

    :meth:`ready` returns once Redis confirmed the channel's subscription and this
    process knows where the channel's numbering stands: from then on, every
    publication on it reaches this process, or its loss is reported.
    """

    history_supported = True
    recovers_atomically = False  # the subscribe's round trips: the hub holds meanwhile

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self._script: Any = None
        self._history_script: Any = None
        self._control_script: Any = None
        self._tasks: list[asyncio.Task[None]] = []
        #: When Redis last answered this process (a command, or a ping while unsubscribed).
        self._redis_answered = time.monotonic()
        self.cluster = ClusterMaps(self, self.names, self.timeout)
        self.presence_store = RedisPresence(
            self.names,
            describe=self.describe(),
            timeout=self.timeout,
            ttl=self.presence_ttl,
            update_interval=self.presence_update_interval,
            mode=self.presence_mode,
            report=self.report_presence,
            listening=self.subscribers.__contains__,
            tally=self.tally,
            decided=self.tracker.decided,
        )
        self.presence_manager = self.presence_store
        self.control_check = ControlCheck(
            self._control_proofs,
            self.report_control,
            lambda kind, why: self.tally.add(kind, f"ignored control message(s) {why}"),
        )

    # Names, as before the package (tests and tools use them) ----------------------

    @property
    def node(self) -> str:
        """This process's field in ``realtime:nodes`` (made by :meth:`start`)."""
        return self.cluster.node

    @property
    def nodes_key(self) -> str:
        return self.names.nodes

    def meta_key(self, channel: str) -> str:
        return self.names.meta_key(channel)

    def history_key(self, channel: str) -> str:
        return self.names.history_key(channel)

    def presence_keys(self, channel: str) -> list[str]:
        return self.names.presence_keys(channel)

    def channels_key(self, node: str) -> str:
        return self.names.channels_key(node)

    def info_key(self, node: str) -> str:
        return self.names.info_key(node)

    # Life -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("this broker is already started")
        await super().start()
        node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # One immediate retry on a new connection: after an outage the pooled one is
        # stale, and without it the first broadcast after Redis is back would fail.
        self._publisher = self._make_publisher()
        await self._prepare()
        self._script = self._publisher.register_script(scripts.script("publish"))
        self._history_script = self._publisher.register_script(scripts.script("history"))
        self._control_script = self._publisher.register_script(scripts.script("control"))
        self.cluster.bind(self._publisher, node)
        self.presence_store.bind(self._publisher)
        self._subscribed = asyncio.Event()
        self._down_since = time.monotonic()
        self._listener = self._spawn(self._listen(), "redis listener")
        self._spawn(self._heartbeat(), "redis heartbeat")
        self._spawn(self.presence_store.renew_all(), "redis presence")
        try:
            async with asyncio.timeout(self.timeout * 3):
                await self._subscribed.wait()
        except TimeoutError:
            log.warning(
                "redis at %s is not answering; serving anyway, broadcasts fail with 503 "
                "until it is back",
                self.describe(),
            )

    def _make_publisher(self) -> Any:
        """The client for commands (see :mod:`.clustered` for Redis Cluster's)."""
        return make_client(self.url, self.timeout, 1, socket_timeout=self.timeout)

    async def _prepare(self) -> None:
        """Before the subscription starts (Redis Cluster learns its shards here)."""

    async def close(self) -> None:
        await super().close()
        await self.presence_store.stop_checking()
        await self.control_check.close()
        tasks, self._tasks = self._tasks, []
        tasks += self._flush_tasks
        # Whatever they ended with was logged when they ended (see _spawn). Cancelled
        # again if need be: redis-py (8.1) sometimes lets a command finish normally
        # although its task was cancelled meanwhile, and the task would go on for ever.
        for _ in range(CLOSE_ROUNDS):
            pending = [task for task in tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=self.timeout)
        if stuck := [task.get_name() for task in tasks if not task.done()]:
            log.error("redis broker tasks did not stop: %s", ", ".join(stuck))
        self._listener = None
        if self._publisher is not None:
            await self.presence_store.leave_all()
            await self.cluster.remove()
            await self._publisher.aclose()
            self._publisher = None

    @property
    def up(self) -> bool:
        """While its subscription to Redis is up (it hears the other processes)."""
        return self._listener is not None and not self._listener.done() and self.subscribed

    def problem(self) -> str | None:
        """Unhealthy while this process hears no broadcasts: its clients would miss them."""
        listener = self._listener
        if listener is None:
            return "the redis broker is not running"
        if listener.done():
            return "the redis subscription task stopped (see the log); restart this process"
        if not self.subscribed:
            now = time.monotonic()
            if now - self._redis_answered > HEARTBEAT * 3:
                # Redis is down for every process alike: sending new clients elsewhere
                # would only take the page away from them too. Broadcasts answer 503.
                return None
            return f"not subscribed to the redis broker for {now - self._down_since:.1f} s"
        return None

    # Publishing and history ---------------------------------------------------------

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        return (await self.publish_result(channel, data)).receivers

    async def publish_result(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        """One ``publish.lua`` call, which also keeps the key's result in Redis, so
        every process sharing it publishes a key once (see :meth:`Broker.publish_result`)."""
        check_idempotency_key(idempotency_key)
        started = time.perf_counter()
        try:
            return await self._publish(channel, data, idempotency_key)
        finally:
            self.publish_seconds.observe(time.perf_counter() - started)

    async def _publish(
        self, channel: str, data: str | bytes | Publication, key: str = ""
    ) -> PublishResult:
        """:meth:`publish_result`, untimed."""
        if self._publisher is None or self._script is None:
            raise BrokerUnavailable("the broker is not running")
        payload = encode(as_publication(data), self.max_message_size)
        listening = channel in self.subscribers
        names = self.names
        nodes = names.nodes if names.publish_command == "PUBLISH" else names.meta_key(channel)
        keys = [names.meta_key(channel), nodes, names.history_key(channel)]
        if key:
            keys.append(names.result_key(channel, key))
        kept = self.keeps_history(channel)
        size, ttl = kept or (0, 0.0)
        args = [payload, os.urandom(4).hex(), MAGIC, names.key(channel), int(listening), META_TTL,
                size, max(1, round(ttl * 1000)),
                round(IDEMPOTENCY_TTL * 1000) if key else 0, names.publish_command]  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout):
                # EVALSHA, loading the script only when Redis says it does not know it.
                receivers, flat, epoch, offset = await self._script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                "message not sent"
            ) from exc
        position = None if kept is None else StreamPosition(int(offset), epoch.decode())
        if receivers == -1:
            return PublishResult(0, position, suppressed=True)
        if not receivers:
            if listening:
                # This process listens to the channel, so its own subscription is down:
                # its clients did not get it either, and Redis left no gap for it.
                raise BrokerUnavailable(
                    "no server process is subscribed to the broker right now; message not sent"
                )
            # Nobody listens right now; a process whose subscription is down finds the
            # gap when it is back, and tells its clients.
            return PublishResult(0, position)
        count = self.cluster.count(self._nodes_reported(flat))
        return PublishResult(count, position)

    def _nodes_reported(self, flat: list[bytes]) -> Mapping[bytes, bytes]:
        """The nodes hash as the publish script read it (see RedisClusterBroker)."""
        return dict(zip(flat[::2], flat[1::2], strict=True))

    async def _read_history(
        self, channel: str, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        if self._publisher is None or self._history_script is None:
            raise BrokerUnavailable("the broker is not running")
        count = MAX_HISTORY_LIMIT if limit < 0 or limit > MAX_HISTORY_LIMIT else limit
        if since is None:
            first, last = "-", "+"
        elif reverse:
            first, last = "-", f"({since.offset}-1"
        else:
            first, last = f"({since.offset}-1", "+"
        keys = [self.meta_key(channel), self.history_key(channel)]
        args = [first, last, count, int(reverse)]
        try:
            async with asyncio.timeout(self.timeout):
                epoch, top, entries = await self._history_script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        epoch = epoch.decode()
        if since is not None and since.epoch and since.epoch != epoch:
            raise UnrecoverablePosition("that position is in another epoch of the stream")
        publications = []
        for entry_id, fields in entries:
            number = entry_id.split(b"-", 1)[0]
            raw = b"%s%s %s %s" % (MAGIC, epoch.encode(), number, fields[1])
            publication = decode(raw, self.max_message_size)
            if isinstance(publication, Publication):
                publications.append(publication)
        return HistoryResult(tuple(publications), StreamPosition(int(top), epoch))

    async def _remove_history(self, channel: str) -> None:
        if self._publisher is None:
            raise BrokerUnavailable("the broker is not running")
        try:
            async with asyncio.timeout(self.timeout):
                await self._publisher.delete(self.history_key(channel))
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc

    # Control messages ---------------------------------------------------------------

    async def publish_control(self, data: bytes) -> None:
        """PUBLISH on the control channel, after leaving the proof the receivers check
        (``control.lua``): never numbered, never kept past the proof's minute."""
        body = encode_control(data)
        if self._publisher is None or self._control_script is None:
            raise BrokerUnavailable("the broker is not running")
        ident = os.urandom(8).hex().encode()
        keys = [self.names.control_key(ident)]
        args = [body, self.names.control, CONTROL_MAGIC + ident + b" ", round(PROOF_TTL * 1000),
                self.names.publish_command]  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout):
                receivers = await self._control_script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                "control message not sent"
            ) from exc
        if receivers == -1:
            raise BrokerUnavailable("a control message id was taken; control message not sent")
        if not receivers:
            # Every process listens to the control channel, this one included: its
            # own subscription is down, so the message reached nobody here either.
            raise BrokerUnavailable(
                "no server process is subscribed to the broker right now; message not sent"
            )

    def _heard_control(self, raw: bytes) -> None:
        decoded = decode_control(raw)
        if isinstance(decoded, tuple):
            self.control_check.add(decoded)
        else:
            self._drop(decoded.name.lower(), self.names.control, decoded.value)

    async def _control_proofs(self, idents: Sequence[bytes]) -> list[Any]:
        """The proofs Redis holds for these control message ids (one round trip)."""
        if self._publisher is None:
            raise BrokerUnavailable("the broker is not running")
        async with asyncio.timeout(self.timeout):
            pipe = self._publisher.pipeline(transaction=False)
            for ident in idents:
                pipe.hget(self.names.control_key(ident), "p")
            return list(await pipe.execute())

    # Presence and the cluster's view ------------------------------------------------

    def _heard_presence(self, channel: str, event: PresenceEvent) -> None:
        self.presence_store.heard(channel, event)

    async def _renew_chunk(self, channel: str, clients: list[str]) -> None:
        """One renewal call (tests drive the races with it)."""
        await self.presence_store.renew_chunk(channel, clients)

    async def _add_members(self, channel: str, members: list[Member], announce: bool) -> None:
        """One join call (tests drive the races with it)."""
        await self.presence_store.add_members(channel, members, announce)

    async def cluster_channels(self) -> dict[str, int]:
        return await self.cluster.channels()

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        return await self.cluster.nodes()

    def _resubscribed(self) -> None:
        # A restarted Redis has no counts yet, and maybe an old channel map.
        self.cluster.forget_map()

    def _hearing(self) -> bool:
        """Whether this process hears broadcasts, so that its clients count."""
        return self.subscribed

    async def _reported(self) -> None:
        """After each heartbeat's count report (Redis Cluster reads the others' here)."""

    # Background tasks -----------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task that cannot end unnoticed: any end but a cancel is logged
        (and, for the listener, reported by ``/-/health``)."""
        return spawn(self._tasks, coroutine, name, must_run=True)

    async def _heartbeat(self) -> None:
        """Report this process's client count and channel map, and forget processes
        long gone."""
        assert self._publisher is not None
        beat_now = self.cluster.beat_now
        assert beat_now is not None
        while True:
            beat_now.clear()
            try:
                self.tally.flush()
                count = sum(counter() for counter in self.counters)
                if not self._hearing():
                    # Whether Redis answers at all: if it does, this process alone cannot
                    # hear broadcasts, and /-/health says so.
                    async with asyncio.timeout(self.timeout):
                        await self._publisher.ping()
                    self._redis_answered = time.monotonic()
                    raise ConnectionError("not subscribed: not counted as reachable")
                async with asyncio.timeout(self.timeout):
                    await self.cluster.report_count(count)
                    self._redis_answered = time.monotonic()
                    await self._reported()
                    await self.cluster.maybe_forget_stale_nodes()
                await self.cluster.report_channels()
            except UNREACHABLE:
                pass  # the listener logs connection trouble; reports resume when it is back
            except Exception:
                self.tally.add("heartbeat", "reporting the client count failed", exc_info=True)
            # Not wait_for: in Python 3.11 it can swallow the cancellation close() sends
            # when the event is set at the same moment, and close() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await beat_now.wait()
