"""Redis pub/sub as the bus between processes and machines (redis-py's asyncio client).

Every process subscribes to the channel and delivers what it receives to its own
clients, the publishing process included, so all clients see Redis's one order.

Pub/sub forgets what a disconnected subscriber missed, so each message carries a
sequence number, stamped by Redis itself (a Lua script: INCR then PUBLISH, atomic)
under an epoch that changes when Redis loses its data. A process that finds numbers
it never received tells its subscribers (the WebSocket pool then closes its clients
with 1012, so they reconnect knowing they missed something): nothing is lost silently.

Anyone allowed to PUBLISH on the channel can send something that looks like an
envelope, so an envelope is believed without a question only when it carries the next
number in the epoch this process is in (the normal path: no extra round trip). Any
other number (the first after subscribing, a gap, a jump, another epoch, an old
number) is checked against Redis's own counter, the source of truth, before it can
cost anyone a broadcast or a 1012: see :meth:`RedisBroker._settle`. A message that
is malformed, too large, or not numbered by Redis is counted, logged without flooding
the log, and dropped; one message never stops the subscription.

Each process also reports its client count to a hash every second while it is
subscribed, which is how ``broadcast()`` answers "how many clients" cluster-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import random
import re
import socket
import time
import uuid
from collections import Counter, deque
from collections.abc import Coroutine, Iterable, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import Broker, BrokerUnavailable

log = logging.getLogger("realtime.broker")

#: What every payload starts with; anything else on the channel is not ours.
MAGIC = b"realtime/1 "
TEXT, BINARY = b"t", b"b"
#: What an epoch looks like (realtime makes 8 hex digits; a short token, nothing else).
EPOCH = re.compile(rb"[0-9A-Za-z]{1,32}")
EPOCH_MAX = 32
#: Where a process stands when Redis has no epoch yet: the next number in any new one is next.
NEW_EPOCH = b""
#: Redis counts in a signed 64-bit integer: a sequence number has at most 19 digits.
SEQ_DIGITS = 19
#: The envelope around a message at its largest: magic, epoch, sequence, spaces, kind.
ENVELOPE_OVERHEAD = len(MAGIC) + EPOCH_MAX + 1 + SEQ_DIGITS + 1 + len(TEXT)
#: The broadcast plugin's default ``max_message_size``, for when it is not loaded.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
#: A process that has not reported for this long is left out of client counts.
NODE_TTL = 5.0
HEARTBEAT = 1.0
#: Reconnect backoff bounds, seconds (full jitter in between). A process holds one
#: subscription and one publishing connection, not thousands: there is no herd to
#: protect Redis from, so the cap is what bounds how late Redis's return is noticed.
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
#: How often an idle subscription is pinged (and must answer), so a dead one is noticed.
IDLE_PING = 5.0
#: How many recently delivered sequence numbers each channel remembers...
RECENT = 1024
#: ...and how many different messages one number may carry before more are dropped.
COPIES = 4
#: Messages already received that one question to Redis covers at most.
BATCH = 1024
#: Seconds between two log lines about the same kind of dropped message (as the host's LogThrottle).
REPORT_EVERY = 10.0

#: KEYS: epoch, sequence, channel, nodes. ARGV: kind+body, a new epoch if none, MAGIC.
#: Returns {receivers, the nodes hash flattened}: one round trip per broadcast.
PUBLISH_SCRIPT = """
local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[2]
  redis.call('SET', KEYS[1], epoch)
end
local seq = redis.call('INCR', KEYS[2])
local receivers = redis.call('PUBLISH', KEYS[3], ARGV[3] .. epoch .. ' ' .. seq .. ' ' .. ARGV[1])
if receivers == 0 then
  -- Nobody heard it and the caller is told it failed: it must leave no gap.
  redis.call('DECR', KEYS[2])
end
return {receivers, redis.call('HGETALL', KEYS[4])}
"""


def encode(data: str | bytes) -> bytes:
    """The part the publisher sends; Redis prefixes magic, epoch and sequence."""
    if isinstance(data, str):
        return TEXT + data.encode()
    return BINARY + data


@dataclass(frozen=True, slots=True)
class Envelope:
    epoch: bytes
    seq: int
    data: str | bytes


def decode(raw: bytes) -> Envelope | None:
    """The message, or ``None`` when the payload was not published by realtime.

    Never raises: the epoch and sequence are bounded before anything is converted.
    """
    if not raw.startswith(MAGIC):
        return None
    parts = raw[len(MAGIC) :].split(b" ", 2)
    if len(parts) != 3 or not parts[2]:
        return None
    epoch, seq, rest = parts
    if not EPOCH.fullmatch(epoch) or not (0 < len(seq) <= SEQ_DIGITS and seq.isdigit()):
        return None
    kind, body = rest[:1], rest[1:]
    if kind == TEXT:
        try:
            return Envelope(epoch, int(seq), body.decode())
        except UnicodeDecodeError:
            return None
    return Envelope(epoch, int(seq), body) if kind == BINARY else None


def parse_counter(value: Any) -> int | None:
    """Redis's counter as a number, or ``None`` when absent or not one realtime keeps."""
    if isinstance(value, bytes) and 0 < len(value) <= SEQ_DIGITS and value.isdigit():
        return int(value)
    return None


@dataclass(frozen=True, slots=True)
class Truth:
    """Redis's word at one moment: its epoch and each channel's counter."""

    epoch: bytes | None
    counters: Mapping[str, int | None]


class Place(enum.Enum):
    """Where a message's number stands relative to what this process delivered."""

    NEXT = "next"  # the number after the last one: deliver, no questions asked
    AGAIN = "again"  # a number delivered moments ago: a replay, or someone else's message
    OFF = "off"  # anything else: Redis is asked before it is believed


class Verdict(enum.Enum):
    """What Redis's word makes of a message that looked off (the value says why it was dropped)."""

    ACCEPT = "accepted"  # deliver, and this process moves on to its number
    BEHIND = "accepted behind"  # deliver; forgeries had pushed this process ahead
    RENUMBERED = "renumbered"  # deliver; Redis's counter started again (key reset or evicted)
    FOREIGN_EPOCH = "with an epoch Redis does not have (not stamped by realtime)"
    BEYOND = "numbered beyond Redis's counter (not stamped by realtime)"
    OUT_OF_ORDER = "numbered ahead of messages that arrived after them (not stamped by realtime)"
    STALE = "with a sequence number Redis had issued before it was last asked"


DELIVER = {Verdict.ACCEPT, Verdict.BEHIND, Verdict.RENUMBERED}

#: Messages received in order and not handled yet: (channel, envelope).
Queue = deque[tuple[str, Envelope]]


def digest(data: str | bytes) -> int:
    """Tells two messages under one number apart (salted per process: not predictable)."""
    return hash((isinstance(data, str), data))


class Sequence:
    """Where one process is in each channel's numbering, and what Redis last said of it.

    Pure bookkeeping, no I/O, so every rule can be tested on its own.
    """

    def __init__(self) -> None:
        self.position: dict[str, tuple[bytes, int]] = {}
        #: Redis's counter at the last check whose barrier completed: every message it
        #: had numbered by then has been handled, so a number up to it is not new.
        self.confirmed: dict[str, tuple[bytes, int]] = {}
        self._recent: dict[str, dict[int, list[int]]] = {}
        self._order: dict[str, deque[int]] = {}

    def place(self, channel: str, epoch: bytes, seq: int) -> Place:
        known = self.position.get(channel)
        if known is None or known[0] not in (epoch, NEW_EPOCH):
            return Place.OFF
        if seq == known[1] + 1:
            return Place.NEXT
        if known[0] != epoch:
            return Place.OFF
        if seq <= known[1] and seq in self._recent.get(channel, ()):
            return Place.AGAIN
        return Place.OFF

    def delivered(
        self, channel: str, epoch: bytes, seq: int, mark: int, *, renumbered: bool = False
    ) -> None:
        """Move to ``seq`` (unless behind) and remember what it carried."""
        known = self.position.get(channel)
        if renumbered or known is None or known[0] != epoch:
            if known is not None:
                self._forget(channel)  # a new numbering: old numbers mean nothing in it
            self.position[channel] = (epoch, seq)
        elif seq > known[1]:
            self.position[channel] = (epoch, seq)
        recent = self._recent.setdefault(channel, {})
        if seq in recent:
            recent[seq].append(mark)
            return
        recent[seq] = [mark]
        order = self._order.setdefault(channel, deque())
        order.append(seq)
        if len(order) > RECENT:
            recent.pop(order.popleft(), None)

    def again(self, channel: str, seq: int, mark: int) -> bool:
        """A number already delivered came again: deliver it only if it carries something new.

        Without a forger this never happens. With one, the genuine message may be the
        second to arrive under its number: it is delivered too (the forger could add
        messages anyway), never dropped in favour of the forgery. Exact repeats are not.
        """
        copies = self._recent[channel][seq]
        return mark not in copies and len(copies) < COPIES

    def judge(
        self,
        channel: str,
        epoch: bytes,
        seq: int,
        truth: Truth,
        later: Iterable[tuple[str, Envelope]],
    ) -> tuple[Verdict, int]:
        """A message that looked off, received before ``truth`` was asked for and before a
        barrier proved that everything Redis had numbered by then has arrived (``later``
        holds what arrived after it): deliver it or not, and how many were missed.
        """
        counter = truth.counters.get(channel)
        if truth.epoch is None or counter is None or epoch != truth.epoch:
            return Verdict.FOREIGN_EPOCH, 0
        if seq > counter:
            # Redis had not issued this number when the message was already here.
            return Verdict.BEYOND, 0
        known = self.position.get(channel)
        if known is None:
            return Verdict.ACCEPT, 0
        checked = self._checked(channel, epoch)
        if known[0] == epoch and seq <= known[1]:
            if checked is not None and counter < checked:
                verdict, base = Verdict.RENUMBERED, 0
            elif checked is not None and seq <= checked:
                return Verdict.STALE, 0
            else:
                # Issued since Redis was last asked, so not a replay, yet behind this
                # process: forged numbers had pushed it ahead. Never let that drop it.
                return Verdict.BEHIND, 0
        else:
            verdict = Verdict.ACCEPT
            base = known[1] if known[0] in (epoch, NEW_EPOCH) else 0
        if any(c == channel and e.epoch == epoch and base < e.seq < seq for c, e in later):
            # Redis delivers in order: had this been stamped by Redis, the numbers before
            # it would have come first.
            return Verdict.OUT_OF_ORDER, 0
        return verdict, seq - base - 1

    def check(self, channel: str, epoch: bytes | None, current: int | None) -> int:
        """Once everything Redis numbered up to ``current`` has arrived: how many never did."""
        if epoch is None:
            # Redis has no epoch (new, restarted empty or flushed): the next broadcast
            # starts one, numbered after the counter, with nothing before it to miss.
            self.position[channel] = (NEW_EPOCH, current or 0)
            self._forget(channel)
            return 0
        if current is None:
            return 0
        known = self.position.get(channel)
        if known is None:
            self.position[channel] = (epoch, current)
            return 0
        if known[0] != epoch:
            missed = current  # a new numbering, none of which arrived
            self._forget(channel)
        elif current >= known[1]:
            missed = current - known[1]
        else:
            checked = self._checked(channel, epoch)
            if checked is None or current >= checked:
                return 0  # behind this process's position: forged numbers pushed it ahead
            missed = current  # the counter went back: a new numbering, none of it arrived
            self._forget(channel)
        self.position[channel] = (epoch, current)
        return missed

    def confirm(self, truth: Truth) -> None:
        """Record Redis's word once everything it had numbered then has been handled."""
        for channel, counter in truth.counters.items():
            if truth.epoch is not None and counter is not None:
                self.confirmed[channel] = (truth.epoch, counter)

    def _checked(self, channel: str, epoch: bytes) -> int | None:
        confirmed = self.confirmed.get(channel)
        return confirmed[1] if confirmed is not None and confirmed[0] == epoch else None

    def _forget(self, channel: str) -> None:
        self._recent.pop(channel, None)
        self._order.pop(channel, None)


class Tally:
    """Counts events by kind and logs them without flooding the log: the first at once,
    then at most one line per kind every ``every`` seconds, saying how many there were.
    """

    def __init__(self, logger: logging.Logger, every: float = REPORT_EVERY) -> None:
        self.log = logger
        self.every = every
        self.counts: Counter[str] = Counter()
        self._reported: dict[str, tuple[float, int]] = {}
        self._text: dict[str, str] = {}

    def add(self, kind: str, text: str, *, exc_info: bool = False) -> None:
        self.counts[kind] += 1
        self._text[kind] = text
        reported = self._reported.get(kind)
        if reported is None or time.monotonic() - reported[0] >= self.every:
            self._report(kind, exc_info)

    def flush(self) -> None:
        """Report counts held back, once their kind's quiet time is over."""
        now = time.monotonic()
        for kind, (when, count) in list(self._reported.items()):
            if self.counts[kind] > count and now - when >= self.every:
                self._report(kind, False)

    def _report(self, kind: str, exc_info: bool) -> None:
        count = self.counts[kind]
        before = self._reported.get(kind, (0.0, 0))[1]
        self.log.warning(
            "%s: %d since the last report, %d in all", self._text[kind], count - before, count,
            exc_info=exc_info,
        )  # fmt: skip
        self._reported[kind] = (time.monotonic(), count)


class RedisBroker(Broker):
    """``redis://[user:password@]host:port/db`` (or ``rediss://``)."""

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self.timeout: float = settings["broker_timeout"]
        self.prefix: str = settings["broker_prefix"]
        limit = settings.get("max_message_size")
        self.max_message_size = limit if isinstance(limit, int) else DEFAULT_MAX_MESSAGE_SIZE
        self.node = ""  # set in start(): workers are forked after this object is made
        self.nodes_key = f"{self.prefix}:nodes"
        self.epoch_key = f"{self.prefix}:epoch"
        self.sequence = Sequence()
        self.missed = 0
        self.subscription_losses = 0
        #: Dropped messages and listener errors by kind, logged without flooding.
        self.tally = Tally(log)
        self._script: Any = None
        self._publisher: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._beat_now: asyncio.Event | None = None
        self._down_since = time.monotonic()
        #: When Redis last answered this process (a command, or a ping while unsubscribed).
        self._redis_answered = time.monotonic()

    @property
    def foreign(self) -> int:
        """How many messages on the channel were not realtime's (kept for callers and tests)."""
        return self.tally.counts["foreign"]

    def key(self, channel: str) -> str:
        return f"{self.prefix}:channel:{channel}"

    def seq_key(self, channel: str) -> str:
        return f"{self.prefix}:seq:{channel}"

    def _client(self, retries: int, **options: Any) -> Redis:
        """A client without redis-py's default retries: ten, with backoff, they would
        stretch a failing call past ``broker_timeout`` and renew a lost subscription
        behind this broker's back (missing what was published meanwhile, unnoticed)."""
        return Redis.from_url(
            self.url,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), retries),
            **options,
        )

    async def start(self) -> None:
        await super().start()
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # One immediate retry on a new connection: after an outage the pooled one is
        # stale, and without it the first broadcast after Redis is back would fail.
        self._publisher = self._client(1, socket_timeout=self.timeout)
        self._script = self._publisher.register_script(PUBLISH_SCRIPT)
        self._subscribed = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._down_since = time.monotonic()
        self._listener = self._spawn(self._listen(), "redis listener")
        self._spawn(self._heartbeat(), "redis heartbeat")
        try:
            await asyncio.wait_for(self._subscribed.wait(), self.timeout * 3)
        except TimeoutError:
            log.warning(
                "redis at %s is not answering; serving anyway, broadcasts fail with 503 "
                "until it is back",
                self.describe(),
            )

    async def close(self) -> None:
        await super().close()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        # Whatever they ended with was logged when they ended (see _spawn).
        await asyncio.gather(*tasks, return_exceptions=True)
        self._listener = None
        if self._publisher is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._publisher.hdel(self.nodes_key, self.node)
            await self._publisher.aclose()
            self._publisher = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed is not None and self._subscribed.is_set()

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

    async def publish(self, channel: str, data: str | bytes) -> int:
        if self._publisher is None or self._script is None:
            raise BrokerUnavailable("the broker is not running")
        keys = [self.epoch_key, self.seq_key(channel), self.key(channel), self.nodes_key]
        args = [encode(data), uuid.uuid4().hex[:8].encode(), MAGIC]
        try:
            async with asyncio.timeout(self.timeout):
                # EVALSHA, loading the script only when Redis says it does not know it.
                receivers, flat = await self._script(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                "message not sent"
            ) from exc
        if not receivers:
            raise BrokerUnavailable(
                "no server process is subscribed to the broker right now; message not sent"
            )
        return self._count(dict(zip(flat[::2], flat[1::2], strict=True)))

    def _count(self, nodes: Mapping[bytes, bytes]) -> int:
        """This process's clients now, plus every other live process's last report."""
        now = time.time()
        total = sum(counter() for counter in self.counters)
        me = self.node.encode()
        for node, value in nodes.items():
            if node == me:
                continue
            with contextlib.suppress(ValueError):
                count, seen = value.split()
                if now - float(seen) < NODE_TTL:
                    total += int(count)
        return total

    # Background tasks -----------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a background task that cannot end unnoticed: an end other than being
        cancelled is logged (and, for the listener, reported by ``/-/health``)."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.append(task)

        def ended(done: asyncio.Task[None]) -> None:
            if done in self._tasks:
                self._tasks.remove(done)
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                log.critical("%s died", name, exc_info=error)
            else:
                log.critical("%s ended", name)

        task.add_done_callback(ended)
        return task

    async def _listen(self) -> None:
        """Subscribe and handle messages; on any failure, reconnect with backoff and jitter."""
        assert self._subscribed is not None
        keys = {self.key(channel): channel for channel in self.subscribers}
        delay = BACKOFF_MIN
        while True:
            client = self._client(0)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            queue: Queue = deque()
            try:
                await pubsub.subscribe(*keys)
                await self._serve(pubsub, keys, queue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._salvage(queue)
                why = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    # Not a connection problem: a bug or a surprise, worth a traceback.
                    self.tally.add(
                        "listener", f"the redis listener failed and restarts ({why})", exc_info=True
                    )
                elif self._subscribed.is_set():
                    log.warning("lost the redis subscription: %s", why)
                else:
                    self.tally.add(
                        f"retry {type(exc).__name__}", f"cannot subscribe to redis yet ({why})"
                    )
                if self._subscribed.is_set():
                    self._subscribed.clear()
                    self._down_since = time.monotonic()
                    self.subscription_losses += 1
                    delay = BACKOFF_MIN  # it worked until now: retry soon
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()
            # Reached only after a failure (_serve never returns normally).
            await asyncio.sleep(random.uniform(BACKOFF_MIN, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve(self, pubsub: PubSub, keys: Mapping[str, str], queue: Queue) -> None:
        """One subscription's life: catch up with Redis, then handle messages in order."""
        assert self._subscribed is not None
        await self._settle(pubsub, keys, queue)
        if self.subscription_losses:
            log.info("resubscribed to redis at %s", self.describe())
        self._subscribed.set()
        if self._beat_now is not None:
            self._beat_now.set()  # a restarted Redis has no counts yet
        while True:
            message = await self._read(pubsub, IDLE_PING)
            if message is None:
                # Idle: the subscription must answer a PING, or it is dead.
                await self._barrier(pubsub, keys, queue)
            else:
                self._enqueue(keys, message, queue)
            while queue:
                if self._step(*queue[0]):
                    queue.popleft()
                else:
                    await self._settle(pubsub, keys, queue)

    def _salvage(self, queue: Queue) -> None:
        """The subscription failed with messages received but not handled: deliver those
        that need no question, in order, up to the first that does; count the rest.
        (Genuine ones among the rest are found missing when resubscribing.)
        """
        while queue and self._step(*queue[0]):
            queue.popleft()
        for channel, _ in queue:
            self._drop("unverified", self.key(channel), "Redis could not be asked about")
        queue.clear()

    async def _read(self, pubsub: PubSub, wait: float | None) -> dict[str, Any] | None:
        """The next thing on the subscription (``None`` after ``wait`` seconds; forever if None)."""
        message: dict[str, Any] | None = await pubsub.get_message(timeout=wait)
        return message

    def _enqueue(self, keys: Mapping[str, str], message: Mapping[str, Any], queue: Queue) -> None:
        """Queue a message from the subscription, or count and drop it."""
        if message.get("type") != "message":
            return  # a PONG no barrier waits for
        try:
            name = _text(message.get("channel"))
            channel = keys.get(name)
            raw = message.get("data")
            if channel is None or not isinstance(raw, bytes):
                self._drop("foreign", name, "that realtime did not publish")
            elif len(raw) > self.max_message_size + ENVELOPE_OVERHEAD:
                self._drop("oversized", name, f"over the {self.max_message_size}-byte size limit")
            elif (envelope := decode(raw)) is None:
                self._drop("foreign", name, "that realtime did not publish")
            else:
                queue.append((channel, envelope))
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)

    def _drop(self, kind: str, name: str, why: str) -> None:
        self.tally.add(kind, f"ignored message(s) on redis channel {name} {why}")

    def _step(
        self,
        channel: str,
        envelope: Envelope,
        truth: Truth | None = None,
        later: Iterable[tuple[str, Envelope]] = (),
    ) -> bool:
        """Handle one queued message; ``False`` when it needs Redis's word first.

        Whatever goes wrong with one message is counted and logged, never fatal.
        """
        try:
            place = self.sequence.place(channel, envelope.epoch, envelope.seq)
            if place is Place.NEXT:
                self._deliver(channel, envelope, digest(envelope.data))
                return True
            if place is Place.AGAIN:
                mark = digest(envelope.data)
                if self.sequence.again(channel, envelope.seq, mark):
                    self.tally.add(
                        "second",
                        f"delivered message(s) on redis channel {self.key(channel)} under a "
                        "sequence number that already carried another one: someone else "
                        "publishes on the channel",
                    )
                    self._deliver(channel, envelope, mark)
                else:
                    self._drop("replayed", self.key(channel), "repeating one already delivered")
                return True
            if truth is None:
                return False
            verdict, missed = self.sequence.judge(
                channel, envelope.epoch, envelope.seq, truth, later
            )
            if verdict not in DELIVER:
                self._drop(verdict.name.lower(), self.key(channel), verdict.value)
                return True
            if verdict is Verdict.BEHIND:
                self.tally.add(
                    "behind",
                    f"delivered message(s) on redis channel {self.key(channel)} numbered "
                    "behind this process, which forged numbers had pushed ahead: someone "
                    "else publishes on the channel",
                )
            elif verdict is Verdict.RENUMBERED:
                self.tally.add(
                    "renumbered",
                    f"redis's counter for {self.key(channel)} went back (its key was reset "
                    "or evicted): following its new numbering",
                )
            if missed:
                self._lost(channel, missed)
            renumbered = verdict is Verdict.RENUMBERED
            self._deliver(channel, envelope, digest(envelope.data), renumbered=renumbered)
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)
        return True

    async def _settle(self, pubsub: PubSub, keys: Mapping[str, str], queue: Queue) -> None:
        """Ask Redis, then handle the queue (whose head looked off) in that light.

        Each round: take what has already arrived, ask Redis for its epoch and counters,
        then PING through the subscription and read up to the PONG. Every message taken
        before the question was here before Redis answered, so one numbered beyond the
        counter was not stamped by Redis. Redis delivers in order, so after the PONG
        everything it numbered up to the counter has arrived: numbers that did not were
        missed (while unsubscribed), and a message that came before lower numbers was
        not Redis's either. A message that arrived after the question and looks off
        waits for the next round. One round costs two round trips, covers up to BATCH
        messages, and happens only when something looks off (and once per subscription).
        """
        while True:
            while len(queue) < BATCH and (message := await self._read(pubsub, 0.0)) is not None:
                self._enqueue(keys, message, queue)
            covered = len(queue)
            truth = await self._truth()
            await self._barrier(pubsub, keys, queue)
            index = 0
            while queue:
                channel, envelope = queue[0]
                if index < covered:
                    self._step(channel, envelope, truth, islice(queue, 1, None))
                elif not self._step(channel, envelope):
                    break
                queue.popleft()
                index += 1
            else:
                for channel in self.subscribers:
                    missed = self.sequence.check(channel, truth.epoch, truth.counters.get(channel))
                    if missed:
                        self._lost(channel, missed)
                # Only now has everything Redis had numbered been handled (not before a
                # round that stopped early: what it left queued is judged by the next).
                self.sequence.confirm(truth)
                return

    async def _truth(self) -> Truth:
        """Redis's epoch and counters (one MGET on the publishing connection)."""
        assert self._publisher is not None
        channels = list(self.subscribers)
        async with asyncio.timeout(self.timeout):
            values = await self._publisher.mget([self.epoch_key, *map(self.seq_key, channels)])
        epoch = values[0] if isinstance(values[0], bytes) and EPOCH.fullmatch(values[0]) else None
        counters = {c: parse_counter(v) for c, v in zip(channels, values[1:], strict=True)}
        return Truth(epoch, counters)

    async def _barrier(self, pubsub: PubSub, keys: Mapping[str, str], queue: Queue) -> None:
        """PING through the subscription and queue what arrives until its PONG.

        Redis answers in order, so everything it published before the PING has then
        arrived. No PONG within the time allowed means the connection is dead.
        """
        token = uuid.uuid4().hex.encode()
        await pubsub.ping(token)
        async with asyncio.timeout(max(3 * self.timeout, 1.0)):
            while True:
                message = await self._read(pubsub, None)
                if message is None:
                    continue
                if message.get("type") == "pong" and message.get("data") == token:
                    return
                self._enqueue(keys, message, queue)

    def _deliver(
        self, channel: str, envelope: Envelope, mark: int, *, renumbered: bool = False
    ) -> None:
        self.sequence.delivered(channel, envelope.epoch, envelope.seq, mark, renumbered=renumbered)
        try:
            self.deliver_locally(channel, envelope.data)
        except Exception:
            log.exception("delivering a broadcast failed")

    def _lost(self, channel: str, missed: int) -> None:
        self.missed += missed
        log.error(
            "this process missed %d broadcast(s) on %r while its redis subscription was down",
            missed,
            channel,
        )
        try:
            self.report_loss(channel, missed)
        except Exception:
            log.exception("telling subscribers about missed broadcasts failed")

    async def _heartbeat(self) -> None:
        """Report this process's client count, and forget processes long gone."""
        assert self._publisher is not None
        assert self._beat_now is not None
        while True:
            self._beat_now.clear()
            try:
                self.tally.flush()
                count = sum(counter() for counter in self.counters)
                if not self.subscribed:
                    # Whether Redis answers at all: if it does, this process alone cannot
                    # hear broadcasts, and /-/health says so.
                    async with asyncio.timeout(self.timeout):
                        await self._publisher.ping()
                    self._redis_answered = time.monotonic()
                    raise ConnectionError("not subscribed: not counted as reachable")
                async with asyncio.timeout(self.timeout):
                    await self._publisher.hset(
                        self.nodes_key, self.node, f"{count} {time.time():.3f}"
                    )
                    self._redis_answered = time.monotonic()
                    if random.random() < 0.05:
                        await self._forget_stale_nodes()
            except (RedisError, OSError, TimeoutError):
                pass  # the listener logs connection trouble; reports resume when it is back
            except Exception:
                self.tally.add("heartbeat", "reporting the client count failed", exc_info=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), HEARTBEAT)

    async def _forget_stale_nodes(self) -> None:
        assert self._publisher is not None
        nodes = await self._publisher.hgetall(self.nodes_key)
        now = time.time()
        stale = []
        for node, value in nodes.items():
            try:
                seen = float(value.split()[1])
            except (ValueError, IndexError):
                seen = 0.0
            if now - seen > NODE_TTL * 12:
                stale.append(node)
        if stale:
            await self._publisher.hdel(self.nodes_key, *stale)


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
