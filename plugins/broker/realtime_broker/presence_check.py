"""Joins and leaves heard on a distributed broker, believed once its store agrees.

Anyone allowed to PUBLISH on the broker's channels can send what looks like a join or
a leave. The presence scripts change the store and announce the change in one step,
so a genuine join's member is in the store when its announcement arrives, and a
genuine leave's is not: each announcement is checked against the store (one
pipelined read for up to :data:`CHECK_BATCH` of them) before anyone is told.

A join whose member left again before the check is told if its leave is among the
announcements waiting (it was overtaken, not forged). A forged leave of someone
absent, or a forged join repeating a member present, still passes: neither shows
anyone who is not there, or hides anyone who is.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from .presence import PresenceEvent

log = logging.getLogger("realtime.broker")

#: Announcements one read of the store checks at most...
CHECK_BATCH = 256
#: ...and most waiting for a check (more are dropped, counted: a flood).
MAX_PENDING = 16 * CHECK_BATCH

#: Reads the store: for each (channel, client id), what it holds, None if absent.
Lookup = Callable[[Sequence[tuple[str, str]]], Awaitable[Sequence[object]]]
#: Whether the store's value is the announced member (and so the member is present).
Matches = Callable[[PresenceEvent, object], bool]
#: Told what was confirmed, in the order it arrived.
Report = Callable[[str, PresenceEvent], None]
#: Told of each announcement dropped: (kind, why).
Dropped = Callable[[str, str], None]


class PresenceCheck:
    """One per broker: a queue of announcements and one task checking them in order."""

    def __init__(self, lookup: Lookup, matches: Matches, report: Report, dropped: Dropped) -> None:
        self._lookup = lookup
        self._matches = matches
        self._report = report
        self._dropped = dropped
        self._pending: deque[tuple[str, PresenceEvent]] = deque()
        self._task: asyncio.Task[None] | None = None

    def add(self, channel: str, event: PresenceEvent) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._dropped("presence flood", "over the announcements waiting for a check")
            return
        self._pending.append((channel, event))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="presence check")

    async def _run(self) -> None:
        while self._pending:
            count = min(CHECK_BATCH, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                values = await self._lookup([(c, e.member.client) for c, e in batch])
            except Exception as exc:  # the store out of reach: nobody is told wrongly
                self._dropped("presence unchecked", f"not checked ({type(exc).__name__})")
                continue
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

    async def close(self) -> None:
        task, self._task = self._task, None
        self._pending.clear()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
