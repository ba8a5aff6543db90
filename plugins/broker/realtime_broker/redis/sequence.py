"""Where a process stands in each channel's Redis numbering, and what to make of a
message whose number looks off: pure bookkeeping, no I/O (the listener in
:mod:`.listener` asks Redis and hands the answers in)."""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Collection, Iterable, Mapping

from ..base import EMPTY_EPOCH, Publication
from ..presence import PresenceEvent

#: How many recently delivered sequence numbers each channel remembers...
RECENT = 1024
#: ...and how many different messages one number may carry before more are dropped.
COPIES = 4
#: Publications with at most this much data and info (characters or bytes) are
#: remembered as they are; larger ones by a hash, so no channel keeps RECENT copies
#: of large messages.
INLINE_MARK = 512


#: Redis's word at one moment: each channel's epoch and counter (``None``: it has none).
Truth = Mapping[str, tuple[str | None, int | None]]


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


class Mark(enum.Enum):
    """Redis confirmed a SUBSCRIBE or an UNSUBSCRIBE: queued in order with the messages,
    since what arrived before it was heard under the other state."""

    SUBSCRIBED = "subscribe"
    UNSUBSCRIBED = "unsubscribe"


#: Messages and confirmations received in order and not handled yet.
Queue = deque[tuple[str, Publication | PresenceEvent | Mark]]


def mark(publication: Publication) -> object:
    """What a delivered number is remembered to have carried (see :meth:`Sequence.again`).

    A small publication is its own mark: no hash per in-order delivery, and two are
    compared (``==``) only when a number comes again. A large one is hashed (salted per
    process: not predictable), at the cost of one pass over it.
    """
    data, info = publication.data, publication.info
    if len(data) + (len(info) if info is not None else 0) <= INLINE_MARK:
        return publication
    return hash((isinstance(data, str), publication.json, data, info))


class Sequence:
    """Where one process is in each channel's numbering, and what Redis last said of it.

    Pure bookkeeping, no I/O, so every rule can be tested on its own.

    What a number carried (its ``mark``) is anything compared with ``==``: the broker
    passes :func:`mark` of the publication.
    """

    def __init__(self) -> None:
        self.position: dict[str, tuple[str, int]] = {}
        #: Redis's counter at the last check whose barrier completed: every message it
        #: had numbered by then has been handled, so a number up to it is not new.
        self.confirmed: dict[str, tuple[str, int]] = {}
        self._recent: dict[str, dict[int, list[object]]] = {}
        self._order: dict[str, deque[int]] = {}

    def place(self, channel: str, epoch: str, seq: int) -> Place:
        known = self.position.get(channel)
        if known is None or known[0] not in (epoch, EMPTY_EPOCH):
            return Place.OFF
        if seq == known[1] + 1:
            return Place.NEXT
        if known[0] != epoch:
            return Place.OFF
        if seq <= known[1] and seq in self._recent.get(channel, ()):
            return Place.AGAIN
        return Place.OFF

    def delivered(
        self, channel: str, epoch: str, seq: int, mark: object, *, renumbered: bool = False
    ) -> None:
        """Move to ``seq`` (unless behind) and remember what it carried."""
        known = self.position.get(channel)
        if renumbered or known is None or known[0] != epoch:
            if known is not None:
                self._forget(channel)  # a new numbering: old numbers mean nothing in it
            self.position[channel] = (epoch, seq)
        elif seq > known[1]:
            self.position[channel] = (epoch, seq)
        recent = self._recent.get(channel)
        if recent is None:  # not setdefault: no empty dict and deque made per message
            recent = self._recent[channel] = {}
            self._order[channel] = deque()
        if seq in recent:
            recent[seq].append(mark)
            return
        recent[seq] = [mark]
        order = self._order[channel]
        order.append(seq)
        if len(order) > RECENT:
            recent.pop(order.popleft(), None)

    def again(self, channel: str, seq: int, mark: object) -> bool:
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
        epoch: str,
        seq: int,
        truth: Truth,
        later: Iterable[tuple[str, Publication | PresenceEvent | Mark]],
    ) -> tuple[Verdict, int]:
        """A message that looked off, received before ``truth`` was asked for and before a
        barrier proved that everything Redis had numbered by then has arrived (``later``
        holds what arrived after it): deliver it or not, and how many were missed.
        """
        current, counter = truth.get(channel, (None, None))
        if current is None or counter is None or epoch != current:
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
            base = known[1] if known[0] in (epoch, EMPTY_EPOCH) else 0
        for c, e in later:
            ahead = isinstance(e, Publication) and e.epoch == epoch and base < e.offset < seq
            if c == channel and ahead:
                # Redis delivers in order: had this been stamped by Redis, the numbers
                # before it would have come first.
                return Verdict.OUT_OF_ORDER, 0
        return verdict, seq - base - 1

    def check(self, channel: str, epoch: str | None, current: int | None) -> int:
        """Once everything Redis numbered up to ``current`` has arrived: how many never did."""
        if epoch is None:
            # Redis has no epoch for the channel (nothing heard was ever published on
            # it, or Redis lost it): the next publication starts one, numbered after
            # the counter, with nothing before it to miss.
            self.position[channel] = (EMPTY_EPOCH, current or 0)
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

    def confirm(self, truth: Truth, channels: Collection[str]) -> None:
        """Record Redis's word on ``channels`` once everything it had numbered then has
        been handled."""
        for channel in channels:
            epoch, counter = truth.get(channel, (None, None))
            if epoch is not None and counter is not None:
                self.confirmed[channel] = (epoch, counter)

    def drop(self, channel: str) -> None:
        """Forget ``channel`` altogether: this process stopped listening to it."""
        self.position.pop(channel, None)
        self.confirmed.pop(channel, None)
        self._forget(channel)

    def _checked(self, channel: str, epoch: str) -> int | None:
        confirmed = self.confirmed.get(channel)
        return confirmed[1] if confirmed is not None and confirmed[0] == epoch else None

    def _forget(self, channel: str) -> None:
        self._recent.pop(channel, None)
        self._order.pop(channel, None)
