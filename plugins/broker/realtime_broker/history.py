"""Channel history: numbered streams of publications, for recovery and the history API.

A channel keeps history when its namespace says so (``history_size`` and
``history_ttl``, Centrifugo's options, both above zero): the broker asks the
:data:`HistoryPolicy` it was given. Each publication in such a channel gets an
``offset``, contiguous from 1, within an ``epoch`` that changes whenever the stream
was lost, so a position is never silently reused. :class:`MemoryStreams` is the
in-process store the ``memory://`` broker uses; the numbering and the retention
rules are the same for every broker.
"""

from __future__ import annotations

import dataclasses
import secrets
from collections import OrderedDict, deque

from .base import EMPTY_EPOCH as EMPTY_EPOCH  # re-exported: it was defined here first
from .base import HistoryResult, Publication, StreamPosition, UnrecoverablePosition

#: How long a stream's position (epoch and last offset) outlives its publications,
#: seconds: a client back within it is told exactly what it missed, or that it cannot
#: be told (Centrifugo's ``history_meta_ttl``; its default is 30 days).
META_TTL = 24 * 3600.0
#: The most publications one history call returns (and one recovery replays).
MAX_HISTORY_LIMIT = 10_000
#: Most streams one process keeps: past it, the least recently published is forgotten
#: (its clients then get ``recovered: false``, as after a restart).
MAX_STREAMS = 100_000
#: Most streams one :meth:`MemoryStreams.prune` call looks at: never a pass over all.
PRUNE_BATCH = 1000


def new_epoch() -> str:
    """A stream's epoch: random, short, never reused in practice (32 bits)."""
    return secrets.token_hex(4)


class _Stream:
    __slots__ = ("epoch", "expires", "items", "meta_expires", "top")

    def __init__(self, epoch: str) -> None:
        self.epoch = epoch
        self.top = 0
        self.items: deque[Publication] = deque()
        self.expires = 0.0  # when the publications go (history_ttl after the last one)
        self.meta_expires = 0.0  # when the position goes too


class MemoryStreams:
    """Every history-keeping channel's stream in this process. Time is passed in.

    Bounded: a stream holds at most its ``history_size`` publications, drops them all
    ``history_ttl`` after the last one, and is forgotten :data:`META_TTL` after that;
    at most ``max_streams`` are kept. Only a publication creates a stream: a read of
    one that does not exist answers offset 0 in :data:`EMPTY_EPOCH` and keeps nothing.
    Streams are kept least recently published first, so :meth:`prune` (called every
    second by the memory broker) looks at the oldest :data:`PRUNE_BATCH` and stops at the first that
    is not due; a stream with a shorter ``history_ttl`` behind it is emptied when
    read, or once it reaches the front.
    """

    def __init__(self, max_streams: int = MAX_STREAMS) -> None:
        if max_streams < 1:
            raise ValueError("max_streams must be at least 1")
        self.max_streams = max_streams
        #: Least recently published first. Ordered dicts: a plain dict's first key
        #: costs a scan past every entry deleted before it, so pruning from the front
        #: would be quadratic.
        self._streams: OrderedDict[str, _Stream] = OrderedDict()
        #: Those holding publications, least recently published first.
        self._holding: OrderedDict[str, None] = OrderedDict()
        #: Streams forgotten to stay within ``max_streams``.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._streams)

    def _live(self, channel: str, now: float) -> _Stream | None:
        """The stream, once what is past its time is let go; None if there is none."""
        stream = self._streams.get(channel)
        if stream is None:
            return None
        if now >= stream.meta_expires:
            self._forget(channel)
            return None
        if stream.items and now >= stream.expires:
            self._empty(channel, stream)
        return stream

    def _empty(self, channel: str, stream: _Stream) -> None:
        """Drop the stream's publications; its position stays."""
        stream.items.clear()
        self._holding.pop(channel, None)

    def _forget(self, channel: str) -> None:
        del self._streams[channel]
        self._holding.pop(channel, None)

    def add(
        self, channel: str, publication: Publication, size: int, ttl: float, now: float
    ) -> Publication:
        """Number ``publication`` and keep it; returns it with its epoch and offset."""
        stream = self._live(channel, now)
        if stream is None:
            while len(self._streams) >= self.max_streams:
                self._forget(next(iter(self._streams)))
                self.evicted += 1
            stream = self._streams[channel] = _Stream(new_epoch())
        else:
            self._streams.move_to_end(channel)  # the most recently published
        self._holding[channel] = None
        self._holding.move_to_end(channel)
        stream.top += 1
        numbered = dataclasses.replace(publication, epoch=stream.epoch, offset=stream.top)
        items = stream.items
        items.append(numbered)
        while len(items) > size:
            items.popleft()
        stream.expires = now + ttl
        stream.meta_expires = stream.expires + META_TTL
        return numbered

    def read(
        self,
        channel: str,
        now: float,
        *,
        limit: int = 0,
        since: StreamPosition | None = None,
        reverse: bool = False,
    ) -> HistoryResult:
        """Up to ``limit`` publications (-1: all retained, 0: none, only the position).

        As Centrifuge's memory engine: with ``since``, those after its offset, oldest
        first, starting at the oldest retained when it is below the window and none
        when it is at or past the top; with ``reverse``, those before it, newest first.
        A ``since`` in another epoch raises :class:`UnrecoverablePosition` (an empty
        epoch is not checked). Whether that recovers a client is the caller's call:
        the first offset must follow ``since`` and the last be the top. Creates nothing.
        """
        stream = self._live(channel, now)
        if stream is None:
            position = StreamPosition(0, EMPTY_EPOCH)
            items: deque[Publication] = deque()
        else:
            position = StreamPosition(stream.top, stream.epoch)
            items = stream.items
        if since is not None and since.epoch and since.epoch != position.epoch:
            raise UnrecoverablePosition("that position is in another epoch of the stream")
        if limit == 0:
            return HistoryResult((), position)
        if limit < 0 or limit > MAX_HISTORY_LIMIT:
            limit = MAX_HISTORY_LIMIT
        first = items[0].offset if items else position.offset + 1  # oldest retained offset
        if not reverse:
            start = 0 if since is None else max(since.offset - first + 1, 0)
            selected = [items[i] for i in range(start, min(start + limit, len(items)))]
        else:
            end = len(items) if since is None else min(since.offset - first, len(items))
            selected = [items[i] for i in range(end - 1, max(end - 1 - limit, -1), -1)]
        return HistoryResult(tuple(selected), position)

    def remove(self, channel: str) -> None:
        """Drop the publications (``history_remove``); the position stays."""
        stream = self._streams.get(channel)
        if stream is not None:
            self._empty(channel, stream)

    def prune(self, now: float, budget: int = PRUNE_BATCH) -> int:
        """Let go of publications past their TTL and positions past theirs, looking at
        ``budget`` streams at most from the least recently published; returns how
        many it looked at."""
        looked = 0
        for order, drop in ((self._holding, self._clear_due), (self._streams, self._forget_due)):
            while order and looked < budget:
                looked += 1
                if not drop(next(iter(order)), now):
                    break
        return looked

    def _clear_due(self, channel: str, now: float) -> bool:
        stream = self._streams[channel]
        if now < stream.expires:
            return False
        self._empty(channel, stream)
        return True

    def _forget_due(self, channel: str, now: float) -> bool:
        if now < self._streams[channel].meta_expires:
            return False
        self._forget(channel)
        return True
