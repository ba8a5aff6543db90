"""What a broker is: the bus between publishers and every process's subscribers.

``broadcast()`` publishes to the broker; every process subscribed to the channel hands
the publication to its own clients. All deliveries come back through the broker, the
publishing process's included, so every client sees the broker's one order.

Subscriptions are per channel and may come and go at any time on the loop: a
distributed broker listens to a channel only while this process has a subscriber for
it, so a process receives only what its own clients want.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from realtime.telemetry import NOOP, Instrument

# Re-exported: they were defined here first.
from .errors import BrokerUnavailable as BrokerUnavailable
from .errors import HistoryUnavailable as HistoryUnavailable
from .errors import PresenceUnavailable
from .errors import UnrecoverablePosition as UnrecoverablePosition
from .meta import check_meta, has_meta
from .presence import (
    Member,
    PresenceEvent,
    PresenceHandler,
    PresenceManager,
    PresenceMode,
    PresencePolicy,
    PresenceStats,
)
from .results import PublishResult
from .tracking import TRACKED, Tracker, is_tracked

# Defined in .errors; importable from here as before.

log = logging.getLogger("realtime.broker")


@dataclass(frozen=True, slots=True)
class Publication:
    """One message on one channel, made once and shared by every subscriber.

    ``data`` is text (``str``) or binary (``bytes``). ``json`` says that ``data`` is
    the text of a JSON document, so JSON protocols embed it as a value rather than a
    string; raw WebSocket clients get it as a text frame all the same. ``info`` is
    the publisher (a Centrifuge ClientInfo as JSON text), or ``None``.

    ``epoch`` and ``offset`` are filled by the broker on delivery: where the
    publication stands in the channel's numbering (Redis's epoch and sequence number;
    ``""`` and 0 with ``memory://``). What a publisher sets there is ignored.

    The rest is for protocols that name or address messages (:mod:`.meta`): ``event``
    (Pusher's event name, Mercure's ``type``), ``id`` (a publisher's id for it, as
    Mercure's updates have), ``skip`` (the name of the one connection it is not
    delivered to, as Pusher's ``socket_id`` exclusion) and ``attrs`` (a few more
    strings, such as Mercure's ``private``). Protocols that have no such notion ignore
    them; every broker carries them.
    """

    data: str | bytes
    json: bool = False
    info: str | None = None
    epoch: str = ""
    offset: int = 0
    event: str | None = None
    id: str | None = None
    skip: str | None = None
    attrs: Mapping[str, str] | None = None


#: Called with a publication on the subscribing process's loop; returns how many
#: clients it was queued for there.
Deliver = Callable[[Publication], int]
#: How many clients a subscriber holds in this process, for counts across processes.
Counter = Callable[[], int]
#: This process's subscribers per channel (channels with none may be left out), for
#: the cluster-wide view of the server API's ``channels`` and ``info``.
ChannelCounter = Callable[[], Mapping[str, int]]
#: Told that this process missed ``missed`` publications on ``channel`` (a distributed
#: broker's subscription was down while others published on it).
LossHandler = Callable[[str, int], None]
#: The channel ``broadcast()`` publishes on and ``/ws`` clients listen to.
DEFAULT_CHANNEL = "default"
#: How long a script's thread waits for the loop to take its broadcast, seconds.
HANDOFF_TIMEOUT = 10.0
#: The largest publisher ``info``, bytes of UTF-8: it travels in every copy of a
#: publication, and a distributed broker bounds what it accepts from the wire.
MAX_INFO_SIZE = 16 * 1024
#: The largest control message, bytes (see :meth:`Broker.publish_control`).
MAX_CONTROL_SIZE = 64 * 1024
#: Told of each control message, on the loop, in the order they came.
ControlHandler = Callable[[bytes], object]
#: The epoch of a stream nothing was published in (or that was forgotten), and where
#: a process stands before it knows one: offset 0 there is followed by offset 1 of
#: whichever epoch the first publication starts. A read creates nothing; an SDK sends
#: the position back as is, and a recovery from it is checked by offset alone.
EMPTY_EPOCH = ""


#: (history_size, history_ttl seconds) for a channel that keeps history, else None.
HistoryPolicy = Callable[[str], tuple[int, float] | None]


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a stream stands: the last offset given, within its epoch."""

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """Publications (each with its offset), and the stream's position when read."""

    publications: tuple[Publication, ...]
    position: StreamPosition


def over_info_size(info: str | None) -> bool:
    """Whether a publisher's or member's info is over :data:`MAX_INFO_SIZE` bytes."""
    # At most 4 bytes a character: most infos need no encoding just to be measured.
    return info is not None and len(info) * 4 > MAX_INFO_SIZE and len(info.encode()) > MAX_INFO_SIZE


def as_publication(data: str | bytes | Publication) -> Publication:
    """What a publisher passed, as the publication subscribers get (before numbering).

    Refuses what no broker could carry the same way: JSON that is not text, an
    ``info`` over :data:`MAX_INFO_SIZE`. Checked by every broker alike, so what works
    with ``memory://`` works with ``redis://``.
    """
    if not isinstance(data, Publication):
        return Publication(data)
    if data.json and not isinstance(data.data, str):
        raise TypeError("a JSON publication's data is the document's text (str), not bytes")
    if over_info_size(data.info):
        raise ValueError(f"the publisher info is over {MAX_INFO_SIZE} bytes; not sent")
    if has_meta(data):
        check_meta(data)
    if data.epoch or data.offset:
        data = dataclasses.replace(data, epoch="", offset=0)  # the broker numbers it
    return data


class Broker(ABC):
    """One per process. Subclasses are found by URL scheme under ``realtime.brokers``.

    Subscriptions are reference-counted per channel: the first :meth:`subscribe` to a
    channel calls :meth:`_listen_to`, the last :meth:`unsubscribe` :meth:`_stop_listening`
    (a distributed broker SUBSCRIBEs and UNSUBSCRIBEs there).

    Presence is a separate interface (:class:`.presence.PresenceManager`): a broker
    offers it by setting :attr:`presence_manager`, and its presence methods here then
    check the channel's mode and hand over to it; without one, no channel tracks
    presence. Control messages (:meth:`publish_control`) are a path of their own,
    beside the channels: never numbered, never kept.
    """

    #: False for brokers that only reach their own process (refused with --workers > 1).
    distributed: ClassVar[bool] = True
    #: True where :meth:`history` works: publications in channels that keep history
    #: then carry their stream's epoch and offset.
    history_supported: ClassVar[bool] = False
    #: True where a subscriber that joins a channel and then reads its history gets
    #: every publication once with no wait between (one process, one loop). Where
    #: not, a recovering subscriber holds what arrives during the read aside and
    #: merges it (the hub's ``hold`` and ``release``).
    recovers_atomically: ClassVar[bool] = False

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        self.url = url
        self.settings = settings
        #: Each channel this process listens to, with its delivers in subscription order.
        self.subscribers: dict[str, list[Deliver]] = {}
        self.counters: list[Counter] = []
        self.channel_counters: list[ChannelCounter] = []
        self._counted: list[tuple[str, Deliver, Counter]] = []
        self.loss_handlers: list[LossHandler] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: Seconds a script's thread waits for the loop to take its broadcast.
        self.handoff_timeout = HANDOFF_TIMEOUT
        #: Which channels keep history, and how much (set by the hub from its rules).
        self.history_policy: HistoryPolicy | None = None
        #: Which channels track presence, and how (set by the hub from its rules).
        self.presence_policy: PresencePolicy | None = None
        self.presence_handlers: list[PresenceHandler] = []
        #: Who is in each channel, where this broker offers presence (set by subclasses).
        self.presence_manager: PresenceManager | None = None
        #: Cluster-wide first holds and last releases (users online, channels occupied),
        #: kept in the presence store; needs a broker that offers presence.
        self.tracker = Tracker(self)
        self.control_handlers: list[ControlHandler] = []
        #: Publications this process found it missed (a distributed broker counts the
        #: gaps in its numbering), and reads of channels' streams: running counts,
        #: which ``/metrics`` samples (:mod:`.metrics`).
        self.missed = 0
        self.history_reads = 0
        #: Observes each publish's duration (the broker plugin's startup sets it).
        self.publish_seconds: Instrument = NOOP
        # Here, not at the top: the plugin module, which declares the settings, imports
        # this one.
        from .plugin import PRESENCE_TTL, PRESENCE_UPDATE_INTERVAL

        #: Seconds a member lasts unless renewed, and between two renewals.
        self.presence_ttl = float(PRESENCE_TTL.get(settings))
        self.presence_update_interval = float(PRESENCE_UPDATE_INTERVAL.get(settings))
        if not 0 < self.presence_update_interval < self.presence_ttl:
            raise ValueError(
                "--presence-update-interval must be above 0 and below --presence-ttl "
                f"({self.presence_update_interval} and {self.presence_ttl} given), or "
                "members would expire between two renewals"
            )
        self._new_identity()

    def _new_identity(self) -> None:
        """Who this process is in :meth:`cluster_nodes`: made again by :meth:`start`,
        since workers are forked after the broker is made (each needs its own)."""
        #: A random id per process start (Centrifugo's NodeResult ``uid``).
        self.uid = str(uuid.uuid4())
        #: A readable name: host and process id.
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        #: Wall-clock start, so other processes can tell this one's uptime.
        self.started = time.time()

    def subscribe(self, channel: str, deliver: Deliver, count: Counter | None = None) -> None:
        """Deliver ``channel``'s publications to ``deliver``, on the loop, from now on.

        Callable before :meth:`start` (plugins subscribe in their ``startup`` hook, and
        the broker plugin's own ``startup`` runs last) or at any time on the loop. A
        distributed broker needs a moment to listen to a new channel: await
        :meth:`ready` before relying on it. ``count`` reports how many clients
        ``deliver`` serves here, for :meth:`publish`'s count.

        Subscribe once per channel and fan out yourself, as the hub does:
        adding or removing one deliver costs as many as the channel already has here.
        """
        channel.encode()  # a name Redis cannot carry fails here, not in the background
        delivers = self.subscribers.get(channel)
        if delivers is None:
            self.subscribers[channel] = [deliver]
            self._listen_to(channel)
        else:
            # A new list, not an append: a delivery running now keeps its own.
            self.subscribers[channel] = [*delivers, deliver]
        if count is not None:
            self._counted.append((channel, deliver, count))
            self.counters.append(count)

    def add_counter(self, count: Counter) -> None:
        """Count ``count()`` clients of this process in :meth:`publish`'s answer.

        For a plugin that serves many channels (the hub), rather than ``count=`` on
        each subscription.
        """
        self.counters.append(count)

    def add_channel_counter(self, count: ChannelCounter) -> None:
        """Report ``count()`` (subscribers per channel, in this process) cluster-wide.

        For :meth:`cluster_channels` and :meth:`cluster_nodes`; a distributed broker
        calls it about once a second, so it should be a cheap view (the hub's).
        """
        self.channel_counters.append(count)

    def local_channels(self) -> dict[str, int]:
        """Subscribers per channel in this process, summed over the channel counters.

        Unlike :meth:`channels` (delivers, one per plugin), these are clients; only
        channels with at least one are listed.
        """
        counters = self.channel_counters
        if len(counters) == 1:
            return {channel: n for channel, n in counters[0]().items() if n > 0}
        merged: dict[str, int] = {}
        for counter in counters:
            for channel, n in counter().items():
                if n > 0:
                    merged[channel] = merged.get(channel, 0) + n
        return merged

    def local_node(self, channels: Mapping[str, int] | None = None) -> dict[str, Any]:
        """This process as a Centrifugo NodeResult (``channels``: its map, if at hand)."""
        if channels is None:
            channels = self.local_channels()
        return {
            "uid": self.uid,
            "name": self.name,
            "num_clients": sum(counter() for counter in self.counters),
            "num_channels": len(channels),
            "num_subs": sum(channels.values()),
            "uptime": max(0, int(time.time() - self.started)),
        }

    async def cluster_channels(self) -> dict[str, int]:
        """Every channel with subscribers anywhere, with their number across processes.

        This process's own with a broker that reaches only it; a distributed broker
        raises :class:`BrokerUnavailable` within its timeout when it cannot tell.
        """
        return self.local_channels()

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        """One :meth:`local_node` entry per live process (just this one here)."""
        return [self.local_node()]

    def unsubscribe(self, channel: str, deliver: Deliver) -> None:
        """Stop delivering to ``deliver`` (compared with ``==``, as ``list.remove`` does).

        Like ``set.discard``: what is not subscribed is ignored. Once a channel has no
        deliver left, this process stops listening to it and forgets where it stood in
        its numbering: publications made until the next subscription are nobody's
        loss here.
        """
        delivers = self.subscribers.get(channel)
        if delivers is None or deliver not in delivers:
            return
        remaining = list(delivers)
        remaining.remove(deliver)
        for i, (name, counted, count) in enumerate(self._counted):
            if name == channel and counted == deliver:
                del self._counted[i]
                self.counters.remove(count)
                break
        if remaining:
            self.subscribers[channel] = remaining
        else:
            del self.subscribers[channel]
            self._stop_listening(channel)

    def channels(self) -> dict[str, int]:
        """The channels this process listens to, each with its number of local delivers."""
        return {channel: len(delivers) for channel, delivers in self.subscribers.items()}

    async def ready(self, channel: str) -> None:
        """Wait until publications made on ``channel`` from now on reach this process.

        Returns at once with a broker that reaches only its own process. A distributed
        broker returns once its server confirmed the subscription, and raises
        :class:`BrokerUnavailable` if that takes longer than its timeout. Raises
        ``ValueError`` if this process has no subscriber for ``channel``.
        """
        if channel not in self.subscribers:
            raise ValueError(f"this process is not subscribed to channel {channel!r}")

    def _listen_to(self, channel: str) -> None:  # noqa: B027 (optional: not abstract)
        """The first subscriber for ``channel`` arrived (a hook for distributed brokers)."""

    def _stop_listening(self, channel: str) -> None:  # noqa: B027 (optional: not abstract)
        """The last subscriber for ``channel`` left (a hook for distributed brokers)."""

    def on_loss(self, handler: LossHandler) -> None:
        """Be told when this process missed publications, so its clients can be told too."""
        self.loss_handlers.append(handler)

    def report_loss(self, channel: str, missed: int) -> None:
        for handler in self.loss_handlers:
            handler(channel, missed)

    def deliver_locally(self, channel: str, publication: Publication) -> int:
        delivers = self.subscribers.get(channel)
        if not delivers:
            return 0
        if len(delivers) == 1:
            return delivers[0](publication)
        # The list is never changed in place (see subscribe): unsubscribing during a
        # delivery neither skips nor repeats anyone.
        return sum(deliver(publication) for deliver in delivers)

    async def start(self) -> None:
        """Connect and subscribe, on the serving loop. Subclasses call this first."""
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._new_identity()

    async def close(self) -> None:
        """Disconnect; must work even if :meth:`start` failed."""
        self.loop = None

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def publish_sync(self, channel: str, data: str | bytes | Publication) -> int:
        """:meth:`publish` for a script's worker thread: waits for the result."""
        result: int = self._from_thread(
            lambda: self.publish(channel, data),
            "publish",
            "the server did not take the message in time",
        )
        return result

    def _from_thread(
        self, coroutine: Callable[[], Coroutine[Any, Any, Any]], method: str, late: str
    ) -> Any:
        """Run ``coroutine()`` on the loop from a worker thread, waiting at most the
        hand-off timeout (then :class:`BrokerUnavailable` with ``late``)."""
        loop = self.loop
        if loop is None:
            raise BrokerUnavailable("the broker is not running")
        if self.on_loop_thread():
            raise RuntimeError(f"on the event loop, use 'await broker.{method}(...)'")
        future = asyncio.run_coroutine_threadsafe(coroutine(), loop)
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerUnavailable(late) from None

    @abstractmethod
    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        """Send ``data`` to every subscriber of ``channel``, as one :class:`Publication`.

        ``str`` and ``bytes`` are shorthand for ``Publication(data)``. Returns how many
        clients it was queued for (for distributed brokers, as last reported by each
        process: the sum of the ``count`` callbacks given to :meth:`subscribe`, whatever
        their channel). Raises :class:`BrokerUnavailable` within the broker's timeout
        when the message could not be handed over, and ``TypeError`` or ``ValueError``
        for a publication no broker can carry (see :func:`as_publication`).
        """

    async def publish_result(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        """:meth:`publish`, answering where the publication stands (its offset and epoch
        where the channel keeps history), published once per ``idempotency_key``.

        The same non-empty key on the same channel within
        :data:`~.results.IDEMPOTENCY_TTL` publishes nothing and answers the first
        result again (``suppressed``), across every process sharing the broker. Keys
        over :data:`~.results.MAX_IDEMPOTENCY_KEY` bytes raise ``ValueError``. This
        default keeps no positions and no keys: the brokers here override it.
        """
        if idempotency_key:
            raise ValueError(f"the {self.describe()} broker does not keep idempotency keys")
        return PublishResult(await self.publish(channel, data))

    def publish_result_sync(
        self, channel: str, data: str | bytes | Publication, *, idempotency_key: str = ""
    ) -> PublishResult:
        """:meth:`publish_result` for a script's worker thread: waits for the result."""
        result: PublishResult = self._from_thread(
            lambda: self.publish_result(channel, data, idempotency_key=idempotency_key),
            "publish_result",
            "the server did not take the message in time",
        )
        return result

    def keeps_history(self, channel: str) -> tuple[int, float] | None:
        """(history_size, history_ttl) if ``channel`` keeps history, else None."""
        policy = self.history_policy
        return None if policy is None else policy(channel)

    async def history(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """The channel's stream: up to ``limit`` publications (-1: all kept, 0: only
        the position), after ``since`` if given (before it with ``reverse``).

        Raises :class:`HistoryUnavailable` where the channel (or this broker) keeps
        none, :class:`UnrecoverablePosition` when ``since`` is not in the stream.
        """
        self._check_history(channel)
        self.history_reads += 1
        return await self._read_history(channel, limit, since, reverse)

    def history_sync(
        self,
        channel: str,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """:meth:`history` for a script's worker thread: waits for the result."""
        result: HistoryResult = self._from_thread(
            lambda: self.history(channel, limit=limit, since=since, reverse=reverse),
            "history",
            "the server did not read the history in time",
        )
        return result

    async def caught_up(self, channel: str, position: StreamPosition) -> None:  # noqa: B027
        """Wait until this process has delivered ``channel``'s publications up to
        ``position`` (read from its history): then, with the hub holding a subscriber
        aside, none of them can still arrive after it goes live.

        At once here (delivery happens on publishing); a distributed broker waits for
        its subscription to bring them, and raises :class:`BrokerUnavailable` after
        its timeout.
        """

    async def remove_history(self, channel: str) -> None:
        """Drop the channel's publications; its position stays (``history_remove``)."""
        self._check_history(channel)
        await self._remove_history(channel)

    def _check_history(self, channel: str) -> None:
        if not self.history_supported:
            raise HistoryUnavailable(f"the {self.describe()} broker keeps no history")
        if self.keeps_history(channel) is None:
            raise HistoryUnavailable(f"channel {channel!r} keeps no history")

    async def _read_history(
        self, channel: str, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        """:meth:`history` where the channel keeps one (``history_supported`` brokers)."""
        raise NotImplementedError

    async def _remove_history(self, channel: str) -> None:
        """:meth:`remove_history` where the channel keeps one."""
        raise NotImplementedError

    # Control messages ----------------------------------------------------------

    def on_control(self, handler: ControlHandler) -> Callable[[], None]:
        """Be told of every control message, from every process; returns the undo.

        Every handler gets every message: a plugin tells its own apart (the
        Centrifuge node's are JSON objects with an ``op``).
        """
        self.control_handlers.append(handler)

        def remove() -> None:
            if handler in self.control_handlers:
                self.control_handlers.remove(handler)

        return remove

    def report_control(self, data: bytes) -> None:
        """Hand a control message to every handler; one that fails is logged, not fatal."""
        for handler in list(self.control_handlers):
            try:
                handler(data)
            except Exception:
                log.exception("handling a control message failed")

    @abstractmethod
    async def publish_control(self, data: bytes) -> None:
        """Send ``data`` to every process's control handlers (this one's included).

        For what one process asks of another's connections (the server API's
        per-user commands): not a channel, so never numbered, never kept as history,
        never seen by a client. At most :data:`MAX_CONTROL_SIZE` bytes (else
        ``ValueError``); raises :class:`BrokerUnavailable` within the broker's timeout
        when it could not be handed over. A process whose connection to the broker
        was down meanwhile does not get it (nor is told): a command is not a stream.
        """

    # Presence --------------------------------------------------------------------

    @property
    def presence_supported(self) -> bool:
        """Whether this broker offers presence (has a :attr:`presence_manager`)."""
        return self.presence_manager is not None

    def presence_mode(self, channel: str) -> PresenceMode | None:
        """How ``channel`` tracks presence; None where it does not (or cannot here)."""
        if self.presence_manager is None:
            return None
        if is_tracked(channel):
            return TRACKED
        policy = self.presence_policy
        return None if policy is None else policy(channel)

    def on_presence(self, handler: PresenceHandler) -> None:
        """Be told of joins and leaves on the channels this process listens to."""
        self.presence_handlers.append(handler)

    def report_presence(self, channel: str, event: PresenceEvent) -> None:
        for handler in self.presence_handlers:
            try:
                handler(channel, event)
            except Exception:
                log.exception("handling a presence event failed")

    async def join_presence(self, channel: str, member: Member) -> None:
        """Add ``member`` to ``channel``'s presence (and announce it where the channel
        announces joins); nothing where the channel tracks no presence.

        This process renews the member until :meth:`leave_presence`. Never raises for
        the store being out of reach: the renewal adds it once the store is back.
        """
        if over_info_size(member.info):
            raise ValueError(f"the member's info is over {MAX_INFO_SIZE} bytes")
        mode = self.presence_mode(channel)
        if mode is not None and self.presence_manager is not None:
            await self.presence_manager.join(channel, member, mode.announced)

    async def leave_presence(self, channel: str, client: str) -> None:
        """Take ``client`` out of ``channel``'s presence (announcing the leave where the
        channel announces them); nothing if it is not there.

        Never raises for the store being out of reach: the member then expires within
        ``presence_ttl``, and its leave is announced then.
        """
        mode = self.presence_mode(channel)
        if mode is not None and self.presence_manager is not None:
            await self.presence_manager.leave(channel, client, mode.announced)

    async def presence(self, channel: str) -> dict[str, Member]:
        """Every client in ``channel``, by client id, across processes.

        Raises :class:`PresenceUnavailable` where the channel lists no presence.
        """
        return await self._check_presence(channel).members(channel)

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many clients, and distinct users, are in ``channel`` across processes."""
        return await self._check_presence(channel).stats(channel)

    def presence_sync(self, channel: str) -> dict[str, Member]:
        """:meth:`presence` for a script's worker thread: waits for the result."""
        result: dict[str, Member] = self._from_thread(
            lambda: self.presence(channel), "presence", "the server did not read presence in time"
        )
        return result

    def presence_stats_sync(self, channel: str) -> PresenceStats:
        """:meth:`presence_stats` for a script's worker thread."""
        result: PresenceStats = self._from_thread(
            lambda: self.presence_stats(channel),
            "presence_stats",
            "the server did not read presence in time",
        )
        return result

    def _check_presence(self, channel: str) -> PresenceManager:
        manager = self.presence_manager
        if manager is None:
            raise PresenceUnavailable(f"the {self.describe()} broker keeps no presence")
        mode = self.presence_mode(channel)
        if mode is None or not mode.listed:
            raise PresenceUnavailable(f"channel {channel!r} keeps no presence")
        return manager

    @property
    def up(self) -> bool:
        """Whether it reaches the other processes now (``realtime_broker_up``): from
        :meth:`start` to :meth:`close` here; a distributed broker says more."""
        return self.loop is not None

    def problem(self) -> str | None:
        """Why this process should get no new clients (for ``/-/health``); ``None`` if none.

        A broker that reaches only its own process has nothing that can fail apart from it.
        """
        return None

    def describe(self) -> str:
        """The URL without credentials, for logs and errors."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
