"""Joins and leaves heard on a distributed broker, believed once its store agrees.

Anyone allowed to PUBLISH on the broker's channels can send what looks like a join or
a leave. The presence scripts change the store and announce the change in one step,
so a genuine join's member is in the store when its announcement arrives, and a
genuine leave's is not: each announcement is checked against the store (one
pipelined read for a batch of them, :mod:`.checks`) before anyone is told.

A join whose member left again before the check is told if its leave is among the
announcements waiting (it was overtaken, not forged). A forged leave of someone
absent, or a forged join repeating a member present, still passes: neither shows
anyone who is not there, or hides anyone who is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from .checks import Dropped, StoreCheck
from .presence import PresenceEvent

#: Reads the store: for each (channel, client id), what it holds, None if absent.
Lookup = Callable[[Sequence[tuple[str, str]]], Awaitable[Sequence[object]]]
#: Whether the store's value is the announced member (and so the member is present).
Matches = Callable[[PresenceEvent, object], bool]
#: Told what was confirmed, in the order it arrived.
Report = Callable[[str, PresenceEvent], None]


class PresenceCheck(StoreCheck[tuple[str, PresenceEvent], tuple[str, str]]):
    """One per broker: announcements ``(channel, event)`` checked in order."""

    kind = "presence"

    def __init__(self, lookup: Lookup, matches: Matches, report: Report, dropped: Dropped) -> None:
        super().__init__(lookup, dropped)
        self._matches = matches
        self._report = report

    def key(self, item: tuple[str, PresenceEvent]) -> tuple[str, str]:
        channel, event = item
        return channel, event.member.client

    def judge(self, batch: list[tuple[str, PresenceEvent]], values: Sequence[object]) -> None:
        for index, ((channel, event), value) in enumerate(zip(batch, values, strict=True)):
            confirmed = self._matches(event, value) == event.joined
            if confirmed or (event.joined and self._left_since(channel, event, batch, index)):
                self._report(channel, event)
            else:
                self._dropped("presence unconfirmed", "that the presence store denies")

    def _left_since(
        self, channel: str, join: PresenceEvent, batch: list[tuple[str, PresenceEvent]], at: int
    ) -> bool:
        """Whether the member of ``join`` (absent from the store) left after it: then the
        join was real, only overtaken, and is told before its leave."""
        for later in (batch[at + 1 :], self._pending):
            for name, event in later:
                if name == channel and not event.joined and event.member == join.member:
                    return True
        return False
