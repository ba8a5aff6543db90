"""NATS core pub/sub as the bus between processes and machines (nats-py), as Centrifugo's
NATS broker: publications reach the processes subscribed at that moment, at most once.

One connection per process. A subject per channel (:mod:`.wire`), subscribed while this
process has a subscriber for the channel (the base class counts them): a process
receives only what its own clients want, its own publications included (all clients
see the one order NATS delivers in, per channel). Nothing is numbered and nothing is
kept: no history, no presence, no idempotency keys, so start-up refuses channel rules
that ask for them (:meth:`NatsBroker.check_rules`). A lost connection is followed by
nats-py's reconnection (every subscription sent again); whatever was published
meanwhile is unknowable, so every channel subscribed here is then reported lost
(Centrifuge clients: insufficient state; raw ``/ws``: closed with 1012), never silently.

Trust: NATS's own authentication and permissions are the boundary. Whoever may publish
on ``PREFIX.>`` is taken for a realtime process (its publications are delivered, its
control messages told, its heartbeats counted); what is malformed, oversized or
repeated is dropped, counted and logged, throttled. Give realtime hosts a NATS user of
their own, the only one allowed to publish under the prefix.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from functools import partial
from itertools import islice
from typing import Any
from urllib.parse import unquote, urlsplit

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import Error as NatsError

from ..background import confirmed, spawn
from ..base import Broker, Publication, as_publication
from ..errors import BrokerUnavailable
from ..redis.envelope import CONTROL_MAGIC, Drop, decode_control, encode_control
from ..redis.tally import Tally
from . import wire

log = logging.getLogger("realtime.broker")

#: Seconds between two heartbeats, and how long a process unheard of counts as alive.
HEARTBEAT = 1.0
NODE_TTL = 5.0
#: Seconds between two reconnection attempts to a server (nats-py waits this long
#: before trying the same one again), and between two pings of an idle connection
#: (two unanswered: the connection is dead and reconnected).
RECONNECT_WAIT = 0.25
PING_INTERVAL = 5
#: Channels (un)subscribed between two flushes, at most.
SYNC_CHUNK = 256
#: Control message ids told recently, so a repeat is not told twice.
RECENT_IDS = 16 * 1024
#: What connection trouble looks like from nats-py.
UNREACHABLE = (NatsError, OSError, TimeoutError)
#: Schemes: nats:// plain, nats+tls:// (nats-py's tls://) with the system's CAs.
SCHEMES = {"nats": "nats", "nats+tls": "tls"}


class Dispatch:
    """What a channel's subscription hands each message to, at once, in nats-py's
    reading task: the ``future`` its ``subscribe()`` takes, which it tells every
    message (``set_result``) while not ``cancelled()``. A callback (``cb=``) would cost
    a task and a queue per subscription, and a hop per message: 15,000 channels took
    over a second to subscribe and 64 MB. Relies on nats-py 2.16's
    ``Client._process_msg`` (the pin in pyproject.toml; tests/integration/test_nats*.py
    fail if it changes)."""

    __slots__ = ("_heard",)

    def __init__(self, heard: Callable[[bytes], None]) -> None:
        self._heard = heard

    def cancelled(self) -> bool:
        return False

    def set_result(self, msg: Msg) -> None:
        self._heard(msg.data)


def parse_url(url: str) -> tuple[list[str], dict[str, str]]:
    """``nats://[user:password@|token@]host:port[,host:port...]`` as nats-py's servers and
    credentials; ValueError for anything else."""
    scheme, sep, rest = url.partition("://")
    target = SCHEMES.get(scheme.lower())
    if not sep or target is None:
        raise ValueError(f"not a NATS URL: {url!r} (nats://HOST:PORT or nats+tls://HOST:PORT)")
    netloc, _, path = rest.partition("/")
    if path.strip("/") or "?" in rest or "#" in rest:
        raise ValueError(f"a NATS broker URL has no path or query: {url!r}")
    userinfo, at, hosts = netloc.rpartition("@")
    credentials: dict[str, str] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if colon:
            credentials = {"user": unquote(user), "password": unquote(password)}
        else:
            credentials = {"token": unquote(user)}
    servers = []
    for host in hosts.split(","):
        parsed = urlsplit(f"{target}://{host.strip()}")
        try:
            port = parsed.port
        except ValueError:
            raise ValueError(f"a bad port in the NATS broker URL {url!r}") from None
        if not parsed.hostname:
            raise ValueError(f"a server without a host in the NATS broker URL {url!r}")
        servers.append(f"{target}://{parsed.netloc}" + ("" if port else ":4222"))
    return servers, credentials


class NatsBroker(Broker):
    """``nats://[user:password@]host:port[,host:port...]`` (or ``nats+tls://``).

    :meth:`ready` returns once the server confirmed the channel's subscription (a
    flush: PING and PONG after the SUB). :meth:`publish` answers the clients of every
    process as each last said in its heartbeat, whatever the channel: NATS does not
    tell who got it.
    """

    history_supported = False
    recovers_atomically = False

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        # Here, not at the top: the plugin module imports the broker package.
        from ..plugin import BROKER_PREFIX, BROKER_TIMEOUT, MAX_MESSAGE_SIZE

        self.servers, self._credentials = parse_url(url)
        self.timeout: float = BROKER_TIMEOUT.get(settings)
        self.subjects = wire.Subjects(BROKER_PREFIX.get(settings))
        self.max_message_size: int = MAX_MESSAGE_SIZE.get(settings)
        #: Dropped messages and failures by kind, logged without flooding.
        self.tally = Tally(log)
        #: Times the connection came back, and channels reported lost then.
        self.reconnects = 0
        self.losses_reported = 0
        self._nc: Client | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._connected: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._closed = False
        #: This process's NATS subscription per channel, as sent.
        self._subs: dict[str, Subscription] = {}
        self._sync_lock = asyncio.Lock()
        #: Channels subscribed or unsubscribed here since the last pass of the sync.
        self._changed: dict[str, None] = {}  # in order: the first asked, the first sent
        #: Per channel subscribed here: set once NATS confirmed its subscription.
        self._ready: dict[str, asyncio.Event] = {}
        #: Other processes, by uid: what each last said, and when (monotonic).
        self._nodes: dict[str, tuple[dict[str, Any], float]] = {}
        self._told: OrderedDict[bytes, None] = OrderedDict()
        self._down_since = time.monotonic()

    # Start-up ---------------------------------------------------------------------

    def check_rules(self) -> None:
        """Refuse channel rules that keep history or presence: NATS keeps neither.

        Asks the policies the plugins set (the hub's rules, and whatever wraps them,
        such as Mercure's history) about one channel of each configured namespace, a
        top-level one, and one of no namespace.
        """
        table = self.settings.get("channel")
        boundary = ":"
        names: list[str] = []
        if isinstance(table, Mapping):
            boundary = str(table.get("namespace_boundary", ":"))
            for namespace in table.get("namespaces", ()) or ():
                if isinstance(namespace, Mapping) and isinstance(namespace.get("name"), str):
                    names.append(namespace["name"])
        probes = {"top-level channels": "x"}
        probes |= {f"namespace {name!r}": f"{name}{boundary}x" for name in names}
        probes["channels of no namespace (such as Mercure's topics)"] = f"\x02nats{boundary}x"
        wanted = []
        for where, channel in probes.items():
            asks = []
            if self.history_policy is not None and self.history_policy(channel) is not None:
                asks.append("history")
            if self.presence_policy is not None and self.presence_policy(channel) is not None:
                asks.append("presence")
            if asks:
                wanted.append(f"{where} ({' and '.join(asks)})")
        if wanted:
            raise ValueError(
                f"--broker {self.describe()}: NATS carries live publications only (no history, "
                f"no presence), and {', '.join(wanted)} keep them: use a Redis broker "
                "(redis://HOST:6379/0), or turn history_size, presence and join_leave off there"
            )

    async def start(self) -> None:
        if self._nc is not None:
            raise RuntimeError("this broker is already started")
        self.check_rules()
        await super().start()
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._nc = Client()
        self._spawn(self._connect(self._nc), "nats connect")
        self._spawn(self._sync(), "nats subscriptions")
        self._spawn(self._heartbeat(), "nats heartbeat")
        try:
            async with asyncio.timeout(self.timeout * 3):
                await self._connected.wait()
        except TimeoutError:
            log.warning(
                "nats at %s is not answering; serving anyway, broadcasts fail with 503 "
                "until it is back",
                self.describe(),
            )

    async def _connect(self, nc: Client) -> None:
        """Connect (retrying for ever), then listen to the broker's own subjects."""
        await nc.connect(
            self.servers,
            error_cb=self._error,
            disconnected_cb=self._disconnected,
            reconnected_cb=self._reconnected,
            closed_cb=self._closed_for_good,
            name=f"realtime {self.name}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=RECONNECT_WAIT,  # type: ignore[arg-type]
            connect_timeout=max(1, round(self.timeout * 2)),
            ping_interval=PING_INTERVAL,
            max_outstanding_pings=2,
            **self._credentials,  # type: ignore[arg-type]
        )
        await nc.subscribe(self.subjects.control, cb=self._heard_control)
        await nc.subscribe(self.subjects.nodes, cb=self._heard_node)
        await nc.subscribe(self.subjects.channels, cb=self._asked_channels)
        await nc.flush(max(1, round(self.timeout * 3)))
        log.info("connected to nats at %s", self.describe())
        assert self._connected is not None
        self._connected.set()
        self._changed |= dict.fromkeys(self.subscribers)  # subscribed before connecting
        self._wake_sync()

    async def close(self) -> None:
        await super().close()
        self._closed = True
        nc, self._nc = self._nc, None
        if nc is not None and nc.is_connected:
            with contextlib.suppress(*UNREACHABLE):
                async with asyncio.timeout(self.timeout):
                    await nc.publish(self.subjects.nodes, wire.encode_node(self._me(), gone=True))
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout)
        if nc is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.timeout * 3):
                    await nc.close()
        self._subs.clear()
        for event in self._ready.values():
            event.set()  # waiters find the broker gone

    # The connection's callbacks ---------------------------------------------------

    async def _error(self, exc: Exception) -> None:
        self.tally.add(f"nats {type(exc).__name__}", f"nats: {type(exc).__name__}: {exc}")

    async def _disconnected(self) -> None:
        if self._closed:
            return
        if self._connected is not None and self._connected.is_set():
            log.warning("lost the nats connection to %s", self.describe())
            self._connected.clear()
            self._down_since = time.monotonic()
        for event in self._ready.values():
            event.clear()

    async def _reconnected(self) -> None:
        # Not awaited here: nats-py calls this from its reconnecting task, before its
        # reader serves the connection (a flush here would wait for ever).
        self._spawn(self._after_reconnect(), "nats reconnected")

    async def _after_reconnect(self) -> None:
        """Once the subscriptions nats-py sent again, and those asked for meanwhile, are
        confirmed, tell every channel subscribed here that it may have missed
        publications meanwhile (NATS cannot say which)."""
        nc = self._nc
        if nc is None:
            return
        try:
            async with self._sync_lock:
                await self._sync_once(nc, force=True)
        except UNREACHABLE as exc:
            # Told all the same: late is better than never (the next reconnection,
            # if this one failed, tells again).
            log.warning("nats did not confirm the subscriptions in time: %s", exc)
        self.reconnects += 1
        log.warning("the nats connection to %s is back", self.describe())
        if self._connected is not None:
            self._connected.set()
        for channel in list(self.subscribers):
            self._lost(channel)
        self._wake_sync()

    async def _closed_for_good(self) -> None:
        if not self._closed:
            log.critical("the nats connection to %s is closed for good", self.describe())

    def _lost(self, channel: str) -> None:
        self.losses_reported += 1
        try:
            self.report_loss(channel, 1)
        except Exception:
            log.exception("telling subscribers about missed broadcasts failed")

    # Subscriptions ------------------------------------------------------------------

    def _listen_to(self, channel: str) -> None:
        self._ready[channel] = asyncio.Event()
        self._changed[channel] = None
        self._wake_sync()

    def _stop_listening(self, channel: str) -> None:
        event = self._ready.pop(channel, None)
        if event is not None:
            event.set()  # its waiters find it gone
        self._changed[channel] = None
        self._wake_sync()

    def _wake_sync(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def ready(self, channel: str) -> None:
        waited = await confirmed(self._ready, channel, self.timeout, "nats")
        if waited and self.loop is None:  # closed while it waited
            raise ValueError(f"channel {channel!r} was unsubscribed meanwhile")

    async def _sync(self) -> None:
        """Make NATS's subscriptions what this process wants, whenever that changes:
        SUB and UNSUB as needed, then one flush confirms them all."""
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            nc = self._nc
            if nc is None or not nc.is_connected:
                continue  # woken again once connected
            try:
                async with self._sync_lock:
                    await self._sync_once(nc)
            except UNREACHABLE as exc:
                log.debug("sending subscriptions to nats failed: %s", exc)
                await asyncio.sleep(RECONNECT_WAIT)
                self._wake_sync()
            except Exception:
                self.tally.add("sync", "sending subscriptions to nats failed", exc_info=True)
                await asyncio.sleep(RECONNECT_WAIT)
                self._wake_sync()

    async def _sync_once(self, nc: Client, *, force: bool = False) -> None:
        """SUB or UNSUB each channel changed since the last pass, a chunk at a time, each
        chunk confirmed by a flush (so the first are ready without waiting for a burst of
        thousands); ``force`` (after a reconnection): confirm every subscription, even if
        nothing changed. What fails is tried again by the next pass."""
        if force:
            self._changed |= dict.fromkeys(self._subs)
        while self._changed:
            chunk = list(islice(self._changed, SYNC_CHUNK))
            for channel in chunk:
                del self._changed[channel]
            try:
                await self._sync_chunk(nc, chunk)
            except BaseException:
                self._changed = dict.fromkeys(chunk) | self._changed
                raise

    async def _sync_chunk(self, nc: Client, chunk: list[str]) -> None:
        for channel in chunk:
            sub = self._subs.get(channel)
            if channel not in self.subscribers:
                if sub is not None:
                    del self._subs[channel]
                    await sub.unsubscribe()
            elif sub is None:
                try:
                    subject = self.subjects.channel(channel)
                except ValueError as exc:
                    self.tally.add("name", f"cannot listen to a channel on nats: {exc}")
                    continue
                self._subs[channel] = await nc.subscribe(subject, future=self._handler(channel))
        waiting = [channel for channel in chunk if channel in self._subs]
        if waiting:
            await nc.flush(max(1, round(self.timeout * 3)))
        for channel in waiting:
            event = self._ready.get(channel)
            if event is not None and channel in self._subs:
                event.set()

    def _handler(self, channel: str) -> Any:
        return Dispatch(partial(self._heard, channel))

    def _heard(self, channel: str, raw: bytes) -> None:
        """A payload on ``channel``'s subject: delivered here, or counted and dropped."""
        if channel not in self.subscribers:
            return  # unsubscribed here since: nobody wants it
        publication = wire.decode_publication(raw, self.max_message_size)
        if isinstance(publication, Drop):
            why = publication.value
            if publication is Drop.OVERSIZED:
                why = f"over the {self.max_message_size}-byte size limit"
            self._drop(publication.name.lower(), self.subjects.channel(channel), why)
            return
        try:
            self.deliver_locally(channel, publication)
        except Exception:
            log.exception("delivering a broadcast failed")

    def _drop(self, kind: str, subject: str, why: str) -> None:
        self.tally.add(kind, f"ignored message(s) on nats subject {subject} {why}")

    # Publishing -----------------------------------------------------------------------

    def _client(self, what: str) -> Client:
        nc = self._nc
        if nc is None or self.loop is None:
            raise BrokerUnavailable("the broker is not running")
        if not nc.is_connected:
            raise BrokerUnavailable(f"broker {self.describe()} is unavailable; {what} not sent")
        return nc

    async def _send(self, subject: str, payload: bytes, what: str, reply: str = "") -> None:
        nc = self._client(what)
        if len(payload) > nc.max_payload:
            raise ValueError(
                f"the {what} is {len(payload)} bytes on the wire, over the nats server's "
                f"max_payload ({nc.max_payload})"
            )
        try:
            async with asyncio.timeout(self.timeout):
                await nc.publish(subject, payload, reply=reply)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                f"{what} not sent"
            ) from exc

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        started = time.perf_counter()
        try:
            payload = wire.encode_publication(as_publication(data), self.max_message_size)
            await self._send(self.subjects.channel(channel), payload, "message")
            return self._clients()
        finally:
            self.publish_seconds.observe(time.perf_counter() - started)

    # Control messages -----------------------------------------------------------------

    async def publish_control(self, data: bytes) -> None:
        """On the control subject, with a random id (a repeat is not told twice)."""
        body = encode_control(data)
        ident = os.urandom(8).hex().encode()
        payload = CONTROL_MAGIC + ident + b" " + body
        await self._send(self.subjects.control, payload, "control message")

    async def _heard_control(self, msg: Msg) -> None:
        decoded = decode_control(msg.data)
        if isinstance(decoded, Drop):
            self._drop(f"control {decoded.name.lower()}", self.subjects.control, decoded.value)
            return
        ident, body = decoded
        if ident in self._told:
            self._drop("control replayed", self.subjects.control, "repeating one already told")
            return
        self._told[ident] = None
        if len(self._told) > RECENT_IDS:
            self._told.popitem(last=False)
        self.report_control(body)

    # The cluster's view ---------------------------------------------------------------

    def _me(self) -> dict[str, Any]:
        return self.local_node()

    def _live_nodes(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        for uid in [uid for uid, (_, seen) in self._nodes.items() if now - seen > NODE_TTL]:
            del self._nodes[uid]
        return [node for node, _ in self._nodes.values()]

    def _clients(self) -> int:
        """Clients of every process: this one's now, the others' as last heard."""
        own = sum(counter() for counter in self.counters)
        return own + sum(int(node["num_clients"]) for node in self._live_nodes())

    async def _heard_node(self, msg: Msg) -> None:
        node = wire.decode_node(msg.data)
        if isinstance(node, Drop):
            self._drop(f"node {node.name.lower()}", self.subjects.nodes, node.value)
            return
        uid = node["uid"]
        if uid == self.uid:
            return
        if node.get("gone"):
            self._nodes.pop(uid, None)
        else:
            self._nodes[uid] = (node, time.monotonic())

    async def _heartbeat(self) -> None:
        """Say this process's counts every HEARTBEAT seconds (while connected)."""
        while True:
            try:
                self.tally.flush()
                nc = self._nc
                if nc is not None and nc.is_connected:
                    async with asyncio.timeout(self.timeout):
                        await nc.publish(self.subjects.nodes, wire.encode_node(self._me()))
            except UNREACHABLE:
                pass  # the connection's callbacks log trouble; beats resume when it is back
            except Exception:
                self.tally.add("heartbeat", "sending the heartbeat failed", exc_info=True)
            await asyncio.sleep(HEARTBEAT)

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        self._client("question")
        return [self.local_node(), *(dict(node) for node in self._live_nodes())]

    async def cluster_channels(self) -> dict[str, int]:
        """Every process's channel map, asked for now (request and replies): those that
        answer within the broker's timeout (one that does not is logged)."""
        nc = self._client("question")
        expected = {node["uid"] for node in self._live_nodes()}
        parts: dict[str, dict[int, dict[str, int]]] = {}
        complete: set[str] = set()
        done = asyncio.Event()
        if not expected:
            done.set()

        async def answer(msg: Msg) -> None:
            decoded = wire.decode_map(msg.data)
            if decoded is None:
                self._drop("map foreign", "(a reply inbox)", "that realtime did not send")
                return
            uid, part, count, channels = decoded
            got = parts.setdefault(uid, {})
            got[part] = channels
            if len(got) == count:
                complete.add(uid)
                if expected <= complete:
                    done.set()

        inbox = nc.new_inbox()
        try:
            sub = await nc.subscribe(inbox, cb=answer)
            try:
                await nc.publish(self.subjects.channels, wire.encode_ask(self.uid), reply=inbox)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.timeout):
                        await done.wait()
            finally:
                with contextlib.suppress(*UNREACHABLE):
                    await sub.unsubscribe()
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        if missing := expected - complete:
            self.tally.add("map late", f"{len(missing)} process(es) did not say their channels")
        merged = self.local_channels()
        for uid in complete:
            for got in parts[uid].values():
                for channel, n in got.items():
                    if n > 0:
                        merged[channel] = merged.get(channel, 0) + n
        return merged

    async def _asked_channels(self, msg: Msg) -> None:
        asker = wire.decode_ask(msg.data)
        if asker is None or not msg.reply:
            self._drop("ask foreign", self.subjects.channels, "that realtime did not send")
            return
        if asker == self.uid:
            return  # the asker counts its own
        nc = self._nc
        if nc is None:
            return
        budget = max(1024, min(nc.max_payload, 1024 * 1024) - 1024)
        try:
            for payload in wire.encode_maps(self.uid, self.local_channels(), budget):
                await nc.publish(msg.reply, payload)
        except UNREACHABLE:
            pass  # the asker logs that this process did not answer

    # Health ---------------------------------------------------------------------------

    @property
    def up(self) -> bool:
        """While connected to NATS (it hears the other processes)."""
        nc = self._nc
        return nc is not None and self.loop is not None and nc.is_connected

    def problem(self) -> str | None:
        """Unhealthy only when the connection is gone for good; while NATS is out of
        reach, it is for every process alike: sending new clients elsewhere would only
        take the page away from them too (broadcasts answer 503 meanwhile)."""
        nc = self._nc
        if nc is None or self.loop is None:
            return "the nats broker is not running"
        if nc.is_closed:
            return "the nats connection is closed for good (see the log); restart this process"
        if any(task.get_name() == "nats subscriptions" for task in self._tasks):
            return None
        return "the nats subscription task stopped (see the log); restart this process"

    # Background tasks -----------------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """A background task whose end, other than being cancelled, is logged."""
        return spawn(self._tasks, coroutine, name, must_run=False)
