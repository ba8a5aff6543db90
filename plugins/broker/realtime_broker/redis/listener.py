"""The Redis broker's subscription: its Pub/Sub connections, and what to believe on them.

One connection on a plain Redis; one per shard under Redis Cluster (each a *link*,
:mod:`.link` and :mod:`.subscriptions`), each read, numbered and checked on its own as
below, so a link that fails costs only its own channels.

A process SUBSCRIBEs to a channel's Redis channel while it has a local subscriber for
it, and UNSUBSCRIBEs when the last one leaves (reference-counted, never a pattern), so
it receives only what its own clients want, plus the control channel always. It
delivers what it receives to them, the publishing process included, so all clients
see Redis's one order.

Pub/sub forgets what a disconnected subscriber missed, so each publication carries a
sequence number, stamped by Redis itself (``publish.lua``: HINCRBY then PUBLISH,
atomic) under an epoch that changes when Redis loses the channel's numbering. A
process that finds numbers it never received tells its subscribers which channel it
was: nothing is lost silently. A process that stops listening to a channel forgets
where it stood in it: a later subscription starts afresh.

Anyone allowed to PUBLISH on the channel can send something that looks like an
envelope, so an envelope is believed without a question only when it carries the next
number in the epoch this process is in (the normal path: no extra round trip). Any
other number is checked against Redis's own counter before it can cost anyone a
broadcast or a 1012: see :meth:`RedisListener._settle` and :mod:`.sequence`. A message
that is malformed, too large, or not numbered by Redis is counted, logged without
flooding the log (:mod:`.tally`), and dropped; one message never stops the subscription.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from itertools import islice
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from ..background import confirmed
from ..base import EMPTY_EPOCH, MAX_INFO_SIZE, Publication, StreamPosition
from ..errors import BrokerUnavailable
from ..presence import PresenceEvent
from .envelope import (
    ENVELOPE_OVERHEAD,
    EPOCH,
    PRESENCE_MAGIC,
    Drop,
    decode,
    decode_presence,
    parse_counter,
)
from .link import Link, Regroup
from .sequence import DELIVER, Mark, Place, Queue, Sequence, Truth, Verdict, mark
from .subscriptions import Subscriptions, _close
from .tally import Tally

log = logging.getLogger("realtime.broker")

#: Reconnect backoff bounds, seconds (full jitter in between). A process holds one
#: subscription and one publishing connection, not thousands: there is no herd to
#: protect Redis from, so the cap is what bounds how late Redis's return is noticed.
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
#: How often an idle subscription is pinged (and must answer), so a dead one is noticed.
IDLE_PING = 5.0
#: Messages already received that one question to Redis covers at most.
BATCH = 1024
#: Most messages held while waiting for a barrier's PONG (the rest are dropped, counted).
BARRIER_LIMIT = 16 * BATCH
#: Seconds between two checks of the positions of channels kept here that keep history
#: against Redis (``--position-check-interval``, Centrifugo's default): a numbering Redis
#: lost with nothing published since is found then, and its subscribers told.
POSITION_CHECK_INTERVAL = 40.0


class RedisListener(Subscriptions):
    """The subscription half of :class:`.broker.RedisBroker`: listening, ordering,
    checking numbers, and telling losses. The broker adds publishing, history,
    presence, the cluster's view and control messages, and is told what the
    subscription hears for them (:meth:`_heard_presence`, :meth:`_heard_control`,
    :meth:`_resubscribed`).
    """

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        # Here, not at the top: the plugin module imports this package for its defaults.
        from ..plugin import BROKER_PREFIX, BROKER_TIMEOUT, MAX_MESSAGE_SIZE
        from ..plugin import POSITION_CHECK_INTERVAL as CHECK_INTERVAL

        self.timeout: float = BROKER_TIMEOUT.get(settings)
        self.prefix: str = BROKER_PREFIX.get(settings)
        self.names = self.NAMES(self.prefix)
        #: Every publisher's limit (the broker plugin's setting, declared once there).
        self.max_message_size: int = MAX_MESSAGE_SIZE.get(settings)
        self.sequence = Sequence()
        self.subscription_losses = 0
        #: Dropped messages and listener errors by kind, logged without flooding.
        self.tally = Tally(log)
        #: Subscribers waiting for a channel's publications up to a position.
        self._catching_up: dict[str, list[tuple[StreamPosition, asyncio.Future[None]]]] = {}
        #: The connection pool for commands (set by the broker's start).
        #: Redis, or RedisCluster (:mod:`.clustered`): typed loosely for both.
        self._publisher: Any = None
        self._listener: asyncio.Task[None] | None = None
        #: Set while every link is subscribed (the subscription as a whole is up).
        self._subscribed: asyncio.Event | None = None
        self._down_since = time.monotonic()
        #: The subscription's connections: one on a plain Redis (see :mod:`.link`).
        self._links: list[Link] = [Link(self.describe(), control=True)]
        #: Per channel subscribed here: set once Redis confirmed it and it is looked up.
        self._ready: dict[str, asyncio.Event] = {}
        self.position_check_interval = float(CHECK_INTERVAL.get(settings))
        if self.position_check_interval <= 0:
            raise ValueError("--position-check-interval must be above 0")
        #: Numberings Redis lost under this process's subscribers (epoch changes).
        self.epochs_lost = 0

    # What the subscription hears for the rest of the broker ----------------------

    def _heard_presence(self, channel: str, event: PresenceEvent) -> None:
        """A join or leave arrived on ``channel`` (not checked yet)."""

    def _heard_control(self, raw: bytes) -> None:
        """Something arrived on the control channel (not decoded, not checked yet)."""

    def _resubscribed(self) -> None:
        """The subscription is up again: Redis may have restarted meanwhile."""

    # Catching up ----------------------------------------------------------------

    async def caught_up(self, channel: str, position: StreamPosition) -> None:
        if position.offset <= 0 or channel not in self.subscribers:
            return  # nothing to wait for, or nobody here to wait for it (gone meanwhile)
        if self._delivered_up_to(channel, position):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (position, waiter)
        self._catching_up.setdefault(channel, []).append(entry)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            raise BrokerUnavailable(
                f"publications up to {position.offset} on {channel!r} did not arrive in time"
            ) from None
        finally:
            waiting = self._catching_up.get(channel)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del self._catching_up[channel]

    def _delivered_up_to(self, channel: str, position: StreamPosition) -> bool:
        known = self.sequence.position.get(channel)
        return known is not None and known[0] == position.epoch and known[1] >= position.offset

    def _wake_catching_up(self, channel: str) -> None:
        for position, waiter in self._catching_up.get(channel, ()):
            if not waiter.done() and self._delivered_up_to(channel, position):
                waiter.set_result(None)

    # Subscriptions ----------------------------------------------------------------

    async def ready(self, channel: str) -> None:
        await confirmed(self._ready, channel, self.timeout, "redis")

    def _listen_to(self, channel: str) -> None:
        self._ready[channel] = asyncio.Event()
        self._request(channel, True)

    def _stop_listening(self, channel: str) -> None:
        event = self._ready.pop(channel, None)
        if event is not None:
            event.set()  # its waiters find it gone
        # Whatever arrives for it from now on is dropped unseen (see _step), and a
        # later subscription starts afresh: nobody here missed anything meanwhile.
        self.sequence.drop(channel)
        self._link_of(channel).fresh.discard(channel)
        self._request(channel, False)

    async def _listen(self) -> None:
        """Every link's subscription, each on its own (one task per link)."""
        if len(self._links) == 1:
            await self._listen_on(self._links[0])
            return
        async with asyncio.TaskGroup() as group:
            for link in self._links:
                group.create_task(self._listen_on(link), name=f"redis listener ({link.name})")

    async def _listen_on(self, link: Link) -> None:
        """Subscribe and handle messages; on any failure, reconnect with backoff and jitter."""
        assert self._subscribed is not None
        delay = BACKOFF_MIN
        while True:
            client: Redis | None = None
            pubsub: PubSub | None = None
            queue: Queue = deque()
            try:
                client, pubsub = await self._connect(link)
                # The control channel and every channel wanted now, in one SUBSCRIBE;
                # later changes go through _flush, on this connection, after it.
                link.changes.clear()
                link.unsubscribing.clear()
                link.pubsub = pubsub
                keys = [self.key(c) for c in self.subscribers if self._link_of(c) is link]
                assert pubsub.connection is not None
                await self._send(pubsub.connection, self.SUBSCRIBE, [*self._always(link), *keys])
                await self._serve(link, pubsub, queue)
            except (asyncio.CancelledError, Regroup):
                raise
            except Exception as exc:
                self._salvage(queue)
                why = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    # Not a connection problem: a bug or a surprise, worth a traceback.
                    self.tally.add(
                        "listener", f"the redis listener failed and restarts ({why})", exc_info=True
                    )
                elif link.up:
                    log.warning("lost the redis subscription (%s): %s", link.name, why)
                else:
                    self.tally.add(
                        f"retry {type(exc).__name__}", f"cannot subscribe to redis yet ({why})"
                    )
                if link.up:
                    self._link_changed(link, False)
                    link.losses += 1
                    self.subscription_losses += 1
                    delay = BACKOFF_MIN  # it worked until now: retry soon
            finally:
                # Positions stay: the next connection compares them with Redis.
                link.pubsub = None
                link.commands = None
                link.live.clear()
                link.fresh.clear()
                for channel, event in self._ready.items():
                    if self._link_of(channel) is link:
                        event.clear()
                await _close(client, pubsub)
            # Reached only after a failure (_serve never returns normally).
            await asyncio.sleep(random.uniform(BACKOFF_MIN, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve(self, link: Link, pubsub: PubSub, queue: Queue) -> None:
        """One subscription's life: catch up with Redis, then handle messages in order."""
        # Redis answers in order: past the PONG, every channel asked for at connect is
        # confirmed, and the first _settle looks them all up.
        await self._barrier(link, pubsub, queue)
        await self._settle(link, pubsub, queue)
        if link.losses:
            log.info("resubscribed to redis at %s", link.name)
        self._link_changed(link, True)
        # A restarted Redis has no counts yet, and maybe an old channel map.
        self._resubscribed()
        link.next_check = time.monotonic() + self.position_check_interval
        while True:
            message = await self._read(pubsub, min(IDLE_PING, self.position_check_interval))
            if message is None:
                # Idle: the subscription must answer a PING, or it is dead.
                await self._barrier(link, pubsub, queue)
            else:
                self._enqueue(message, queue, link)
            while queue:
                if self._step(*queue[0]):
                    queue.popleft()
                else:
                    await self._settle(link, pubsub, queue)
            if link.fresh or self._check_due(link):
                await self._settle(link, pubsub, queue)

    def _salvage(self, queue: Queue) -> None:
        """The subscription failed with messages received but not handled: deliver those
        that need no question, in order, up to the first that does; count the rest.
        (Genuine ones among the rest are found missing when resubscribing.)
        """
        while queue and self._step(*queue[0]):
            queue.popleft()
        for channel, item in queue:
            if item is Mark.UNSUBSCRIBED:
                self.sequence.drop(channel)  # what it heard before that means nothing now
            elif isinstance(item, Publication) and channel in self.subscribers:
                self._drop("unverified", self.key(channel), "Redis could not be asked about")
        queue.clear()

    async def _read(self, pubsub: PubSub, wait: float | None) -> dict[str, Any] | None:
        """The next thing on the subscription (``None`` after ``wait`` seconds; forever if None)."""
        message: dict[str, Any] | None = await pubsub.get_message(timeout=wait)
        return message

    def _enqueue(self, message: Mapping[str, Any], queue: Queue, link: Link | None = None) -> None:
        """Queue a message or a confirmation from the subscription, or count and drop it.

        An unsubscribe nobody asked for (a cluster shard that lost the channel's slot)
        ends the link's connection: it subscribes afresh where the slot is now."""
        kind = message.get("type")
        confirmation = self.MARKS.get(kind) if isinstance(kind, str) else None
        if confirmation is Mark.UNSUBSCRIBED and link is not None:
            name = message.get("channel")
            if isinstance(name, bytes) and link.unsubscribing[name] > 0:
                link.unsubscribing[name] -= 1
            elif self.UNSUBSCRIBE != "UNSUBSCRIBE":
                raise ConnectionError(f"redis unsubscribed {_text(name)} on its own")
        try:
            if kind in self.MESSAGE_TYPES:
                self._enqueue_message(message, queue)
            elif confirmation is not None:
                channel = self.names.channel_of(message.get("channel"))
                if channel is not None:
                    queue.append((channel, confirmation))
            # Anything else is a PONG no barrier waits for.
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)

    def _enqueue_message(self, message: Mapping[str, Any], queue: Queue) -> None:
        name = message.get("channel")
        channel = self.names.channel_of(name)
        raw = message.get("data")
        if channel is None or not isinstance(raw, bytes):
            if name == self.names.control_bytes and isinstance(raw, bytes):
                self._heard_control(raw)  # not a channel: neither queued nor numbered
            else:
                self._drop("foreign", _text(name), Drop.FOREIGN.value)
        elif channel not in self.subscribers:
            return  # unsubscribed here since: nobody wants it, and its numbering is forgotten
        elif len(raw) > self.max_message_size + MAX_INFO_SIZE + ENVELOPE_OVERHEAD:
            self._oversized(channel)
        else:
            publication = decode(raw, self.max_message_size)
            if publication is Drop.FOREIGN:
                # A join or leave (checked only here: publications come first)?
                event = decode_presence(raw) if raw.startswith(PRESENCE_MAGIC) else None
                if isinstance(event, PresenceEvent):
                    queue.append((channel, event))
                else:
                    self._drop("foreign", self.key(channel), Drop.FOREIGN.value)
            elif publication is Drop.OVERSIZED:
                self._oversized(channel)
            else:
                queue.append((channel, publication))

    def _oversized(self, channel: str) -> None:
        # The body's limit, or MAX_INFO_SIZE for the info (not said: a forger's choice).
        limit = self.max_message_size
        self._drop("oversized", self.key(channel), f"over the {limit}-byte size limit")

    def _drop(self, kind: str, name: str, why: str) -> None:
        self.tally.add(kind, f"ignored message(s) on redis channel {name} {why}")

    def _step(
        self,
        channel: str,
        item: Publication | PresenceEvent | Mark,
        truth: Truth | None = None,
        later: Iterable[tuple[str, Publication | PresenceEvent | Mark]] = (),
    ) -> bool:
        """Handle one queued item; ``False`` when it needs Redis's word first.

        Whatever goes wrong with one message is counted and logged, never fatal.
        """
        if isinstance(item, Mark):
            self._confirmed(channel, item)
            return True
        if channel not in self.subscribers:
            return True  # unsubscribed here since it arrived: nobody wants it
        if isinstance(item, PresenceEvent):
            self._heard_presence(channel, item)  # told once Redis's presence agrees
            return True
        publication = item
        try:
            place = self.sequence.place(channel, publication.epoch, publication.offset)
            if place is Place.NEXT:
                self._deliver(channel, publication)
                return True
            if place is Place.AGAIN:
                # Only here are two messages under one number compared.
                if self.sequence.again(channel, publication.offset, mark(publication)):
                    self.tally.add(
                        "second",
                        f"delivered message(s) on redis channel {self.key(channel)} under a "
                        "sequence number that already carried another one: someone else "
                        "publishes on the channel",
                    )
                    self._deliver(channel, publication)
                else:
                    self._drop("replayed", self.key(channel), "repeating one already delivered")
                return True
            if truth is None:
                return False
            verdict, missed = self.sequence.judge(
                channel, publication.epoch, publication.offset, truth, later
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
            before = self.sequence.position.get(channel)
            renumbered = verdict is Verdict.RENUMBERED
            self._deliver(channel, publication, renumbered=renumbered)
            if missed:
                self._lost(channel, missed)
            elif renumbered:
                self._epoch_changed(channel, before, renumbered=True)
            else:
                self._epoch_changed(channel, before)
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)
        return True

    def _confirmed(self, channel: str, mark: Mark) -> None:
        """Redis (un)subscribed ``channel``: what arrives from here on is heard under it."""
        link = self._link_of(channel)
        if mark is Mark.UNSUBSCRIBED:
            link.live.discard(channel)
            link.fresh.discard(channel)
            self.sequence.drop(channel)  # a later SUBSCRIBE starts afresh
            event = self._ready.get(channel)
            if event is not None:
                event.clear()  # subscribed here again: its SUBSCRIBE follows
            return
        if channel in link.live:
            # Confirmed again without an UNSUBSCRIBE in between: the channel was given
            # up here and wanted again before Redis was told. Start afresh all the same.
            self.sequence.drop(channel)
        link.live.add(channel)
        if channel in self.subscribers:
            link.fresh.add(channel)

    async def _settle(self, link: Link, pubsub: PubSub, queue: Queue) -> None:
        """Ask Redis, then handle the queue (whose head looked off, or which confirmed a
        subscription) in that light; look up every channel newly subscribed.

        Each round: take what has already arrived, ask Redis for the epoch and counter of
        each channel concerned, then PING through the subscription and read up to the
        PONG. Every message taken before the question was here before Redis answered, so
        one numbered beyond the counter was not stamped by Redis. Redis delivers in
        order, so after the PONG everything it numbered up to the counter has arrived:
        numbers that did not were missed (while unsubscribed), and a message that came
        before lower numbers was not Redis's either. A channel is looked up only once
        its confirmation had arrived before the question (then every later publication
        on it reaches this process); a message that arrived after the question and
        looks off, or a later confirmation, waits for the next round. One round costs
        two round trips, covers up to BATCH messages, and happens only when something
        looks off or a channel was subscribed.
        """
        while True:
            while len(queue) < BATCH and (message := await self._read(pubsub, 0.0)) is not None:
                self._enqueue(message, queue, link)
            covered = len(queue)
            confirmed = set(link.fresh)
            checking, link.checking = link.checking, set()
            asked = set(link.fresh) | checking
            for channel, item in islice(queue, covered):
                asked.add(channel)
                if item is Mark.SUBSCRIBED:
                    confirmed.add(channel)
            truth = await self._truth(asked, link)
            await self._barrier(link, pubsub, queue)
            index = 0
            while queue:
                channel, item = queue[0]
                if index < covered:
                    self._step(channel, item, truth, islice(queue, 1, None))
                elif not self._step(channel, item):
                    break
                queue.popleft()
                index += 1
            else:
                settled = [
                    channel
                    for channel in asked
                    if channel in link.live
                    and channel in self.subscribers
                    and (channel not in link.fresh or channel in confirmed)
                ]
                for channel in settled:
                    before = self.sequence.position.get(channel)
                    missed = self.sequence.check(channel, *truth.get(channel, (None, None)))
                    if missed:
                        self._lost(channel, missed)
                    else:
                        self._epoch_changed(channel, before)
                # Only now has everything Redis had numbered been handled (not before a
                # round that stopped early: what it left queued is judged by the next).
                self.sequence.confirm(truth, settled)
                for channel in settled:
                    link.fresh.discard(channel)
                    event = self._ready.get(channel)
                    if event is not None:
                        event.set()
                if not link.fresh:
                    return

    def _check_due(self, link: Link) -> bool:
        """Whether the positions of this process's channels keeping history are due to be
        checked against Redis (one counter read each, not one per client); if so, which."""
        now = time.monotonic()
        if now < link.next_check:
            return False
        link.next_check = now + self.position_check_interval
        known = self.sequence.position
        link.checking = {
            channel
            for channel in link.live
            if channel in known
            and channel in self.subscribers
            and self.keeps_history(channel) is not None
        }
        return bool(link.checking)

    def _epoch_changed(
        self, channel: str, before: tuple[str, int] | None, *, renumbered: bool = False
    ) -> None:
        """Tell ``channel``'s subscribers if the numbering they stood in is gone (Redis
        restarted without persistence, was flushed, or evicted the key) though no
        publication was missed: their positions mean nothing now. Only where the
        channel keeps history: elsewhere nobody holds a position."""
        if before is None or before[0] == EMPTY_EPOCH or self.keeps_history(channel) is None:
            return
        after = self.sequence.position.get(channel)
        if not renumbered and after is not None and after[0] == before[0]:
            return
        self.epochs_lost += 1
        log.warning(
            "redis lost the numbering of %r (epoch %s at %d): telling its subscribers",
            channel,
            before[0],
            before[1],
        )
        try:
            self.report_loss(channel, 1)
        except Exception:
            log.exception("telling subscribers about a lost numbering failed")

    async def _truth(self, channels: Collection[str], link: Link | None = None) -> Truth:
        """Redis's epoch and counter for each of ``channels`` (one pipelined round trip),
        asked where ``link`` is subscribed."""
        client = link.commands if link is not None and link.commands is not None else None
        client = client or self._publisher
        assert client is not None
        if not channels:
            return {}
        names = list(channels)
        async with asyncio.timeout(self.timeout):
            pipe = client.pipeline(transaction=False)
            for channel in names:
                pipe.hmget(self.names.meta_key(channel), ["epoch", "seq"])
            replies = await pipe.execute()
        truth: dict[str, tuple[str | None, int | None]] = {}
        for channel, (epoch, seq) in zip(names, replies, strict=True):
            valid = isinstance(epoch, bytes) and EPOCH.fullmatch(epoch)
            truth[channel] = (epoch.decode() if valid else None, parse_counter(seq))
        return truth

    async def _barrier(self, link: Link, pubsub: PubSub, queue: Queue) -> None:
        """PING through the subscription and queue what arrives until its PONG.

        Redis answers in order, so everything it published, and every subscription it
        confirmed, before the PING has then arrived. No PONG within the time allowed
        means the connection is dead.
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
                if len(queue) >= BARRIER_LIMIT and message.get("type") in self.MESSAGE_TYPES:
                    # A flood while Redis is asked: bounded here; genuine ones among
                    # what is dropped show as a gap, a loss told to their channel.
                    self._drop("unverified", _text(message.get("channel")), "in a flood")
                    continue
                self._enqueue(message, queue, link)

    def _deliver(self, channel: str, publication: Publication, *, renumbered: bool = False) -> None:
        self.sequence.delivered(
            channel, publication.epoch, publication.offset, mark(publication), renumbered=renumbered
        )
        if self._catching_up:
            self._wake_catching_up(channel)
        try:
            self.deliver_locally(channel, publication)
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


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
