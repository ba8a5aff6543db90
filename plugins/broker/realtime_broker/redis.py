"""Redis pub/sub as the bus between processes and machines (redis-py's asyncio client).

Every process subscribes to the channel and delivers what it receives to its own
clients, the publishing process included, so all clients see Redis's one order.

Pub/sub forgets what a disconnected subscriber missed, so each message carries a
sequence number, stamped by Redis itself (a Lua script: INCR then PUBLISH, atomic)
under an epoch that changes when Redis loses its data. A process that finds a gap
in the numbers, or sees that the count moved on while its subscription was down,
tells its subscribers (the WebSocket pool then closes its clients with 1012, so
they reconnect knowing they missed something): nothing is lost silently.

Each process also reports its client count to a hash every second while it is
subscribed, which is how ``broadcast()`` answers "how many clients" cluster-wide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .base import Broker, BrokerUnavailable

log = logging.getLogger("realtime.broker")

#: What every payload starts with; anything else on the channel is not ours.
MAGIC = b"realtime/1 "
TEXT, BINARY = b"t", b"b"
#: A process that has not reported for this long is left out of client counts.
NODE_TTL = 5.0
HEARTBEAT = 1.0
#: Reconnect backoff bounds, seconds (full jitter in between).
BACKOFF_MIN, BACKOFF_MAX = 0.1, 5.0
#: How often an idle subscription is pinged, so a dead connection is noticed.
IDLE_PING = 5.0
#: After resubscribing, how long messages already in flight get to arrive before
#: the sequence is compared with Redis's.
SETTLE = 0.5

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
    """The message, or ``None`` when the payload was not published by realtime."""
    if not raw.startswith(MAGIC):
        return None
    parts = raw[len(MAGIC) :].split(b" ", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
        return None
    epoch, seq, rest = parts
    kind, body = rest[:1], rest[1:]
    if kind == TEXT:
        try:
            return Envelope(epoch, int(seq), body.decode())
        except UnicodeDecodeError:
            return None
    return Envelope(epoch, int(seq), body) if kind == BINARY else None


class Sequence:
    """Where one process is in each channel's numbering, and how many it missed."""

    def __init__(self) -> None:
        self.position: dict[str, tuple[bytes, int]] = {}

    def advance(self, channel: str, epoch: bytes, seq: int) -> tuple[int, bool]:
        """On a message: ``(missed, deliver)``. Stale numbers are not delivered."""
        known = self.position.get(channel)
        self.position[channel] = (epoch, seq)
        if known is None:
            return 0, True
        known_epoch, last = known
        if epoch == known_epoch:
            if seq <= last:
                self.position[channel] = known
                return 0, False  # already counted as missed
            return seq - last - 1, True
        return seq - 1, True  # a new epoch: everything before this one in it was missed

    def check(self, channel: str, epoch: bytes | None, current: int | None) -> int:
        """After resubscribing: how many messages Redis numbered that never arrived."""
        if epoch is None or current is None:
            return 0
        known = self.position.get(channel)
        self.position[channel] = (epoch, current)
        if known is None:
            return 0
        known_epoch, last = known
        if epoch == known_epoch:
            if current <= last:
                self.position[channel] = known
                return 0
            return current - last
        return current


class RedisBroker(Broker):
    """``redis://[user:password@]host:port/db`` (or ``rediss://``)."""

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self.timeout: float = settings["broker_timeout"]
        self.prefix: str = settings["broker_prefix"]
        self.node = ""  # set in start(): workers are forked after this object is made
        self.nodes_key = f"{self.prefix}:nodes"
        self.epoch_key = f"{self.prefix}:epoch"
        self.sequence = Sequence()
        self.missed = 0
        self._script: Any = None
        self.foreign = 0
        self.subscription_losses = 0
        self._publisher: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribed: asyncio.Event | None = None
        self._beat_now: asyncio.Event | None = None

    def key(self, channel: str) -> str:
        return f"{self.prefix}:channel:{channel}"

    def seq_key(self, channel: str) -> str:
        return f"{self.prefix}:seq:{channel}"

    async def start(self) -> None:
        await super().start()
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._publisher = Redis.from_url(
            self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
        )
        self._script = self._publisher.register_script(PUBLISH_SCRIPT)
        self._subscribed = asyncio.Event()
        self._beat_now = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._heartbeat())]
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
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._publisher is not None:
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await self._publisher.hdel(self.nodes_key, self.node)
            await self._publisher.aclose()
            self._publisher = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed is not None and self._subscribed.is_set()

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

    async def _listen(self) -> None:
        """Subscribe, deliver, and on any failure reconnect with backoff and jitter."""
        assert self._subscribed is not None
        keys = {self.key(channel): channel for channel in self.subscribers}
        delay = BACKOFF_MIN
        while True:
            client = Redis.from_url(self.url, socket_connect_timeout=self.timeout)
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*keys)
                if self.subscription_losses:
                    log.info("resubscribed to redis at %s", self.describe())
                    self._spawn(self._check_gap())
                self._subscribed.set()
                if self._beat_now is not None:
                    self._beat_now.set()  # a restarted Redis has no counts yet
                delay = BACKOFF_MIN
                while True:
                    message = await pubsub.get_message(timeout=IDLE_PING)
                    if message is None:
                        await pubsub.ping()
                    elif message.get("type") == "message":
                        self._dispatch(keys, message)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                if self._subscribed.is_set():
                    self.subscription_losses += 1
                    log.warning("lost the redis subscription: %s", exc)
                self._subscribed.clear()
                await asyncio.sleep(random.uniform(BACKOFF_MIN, delay))
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                with contextlib.suppress(Exception):
                    await client.aclose()

    def _dispatch(self, keys: Mapping[str, str], message: Mapping[str, Any]) -> None:
        channel = keys.get(_text(message.get("channel")))
        envelope = decode(message.get("data") or b"")
        if channel is None or envelope is None:
            self.foreign += 1
            if self.foreign == 1 or self.foreign % 1000 == 0:
                log.warning(
                    "ignored %d message(s) on redis channel %s that realtime did not publish",
                    self.foreign,
                    _text(message.get("channel")),
                )
            return
        missed, deliver = self.sequence.advance(channel, envelope.epoch, envelope.seq)
        if missed:
            self._lost(channel, missed)
        if not deliver:
            return
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
        self.report_loss(channel, missed)

    async def _check_gap(self) -> None:
        """Compare with Redis's numbering once messages in flight have arrived."""
        assert self._publisher is not None
        channels = list(self.subscribers)
        for attempt in range(5):
            try:
                async with asyncio.timeout(self.timeout):
                    epoch: bytes | None = await self._publisher.get(self.epoch_key)  # type: ignore[assignment]
                    current = await self._publisher.mget([self.seq_key(c) for c in channels])
                break
            except (RedisError, OSError, TimeoutError):
                # The publishing connection may still be the one Redis dropped.
                if attempt == 4:
                    log.error("could not compare sequences after resubscribing")
                    return
                await asyncio.sleep(0.2)
        await asyncio.sleep(SETTLE)
        for channel, value in zip(channels, current, strict=True):
            missed = self.sequence.check(channel, epoch, int(value) if value else None)
            if missed:
                self._lost(channel, missed)

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.append(task)
        task.add_done_callback(
            lambda done: self._tasks.remove(done) if done in self._tasks else None
        )

    async def _heartbeat(self) -> None:
        """Report this process's client count, and forget processes long gone."""
        assert self._publisher is not None
        assert self._beat_now is not None
        while True:
            self._beat_now.clear()
            count = sum(counter() for counter in self.counters)
            try:
                if not self.subscribed:
                    raise ConnectionError("not subscribed: not counted as reachable")
                async with asyncio.timeout(self.timeout):
                    await self._publisher.hset(
                        self.nodes_key, self.node, f"{count} {time.time():.3f}"
                    )
                    if random.random() < 0.05:
                        await self._forget_stale_nodes()
            except (RedisError, OSError, TimeoutError):
                pass  # the listener logs connection trouble; reports resume when it is back
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
    return value.decode() if isinstance(value, bytes) else str(value)
