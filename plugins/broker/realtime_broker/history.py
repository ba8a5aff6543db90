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
from collections import deque

from .base import HistoryResult, Publication, StreamPosition, UnrecoverablePosition

#: How long a stream's position (epoch and last offset) outlives its publications,
#: seconds: a client back within it is told exactly what it missed, or that it cannot
#: be told (Centrifugo's ``history_meta_ttl``; its default is 30 days).
META_TTL = 24 * 3600.0
#: The most publications one history call returns (and one recovery replays).
MAX_HISTORY_LIMIT = 10_000


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
    ``history_ttl`` after the last one, and is forgotten :data:`META_TTL` after that
    (:meth:`prune`, which the broker calls every few seconds).
    """

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def _stream(self, channel: str, now: float) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None or (stream.meta_expires and now >= stream.meta_expires):
            stream = self._streams[channel] = _Stream(new_epoch())
            stream.meta_expires = now + META_TTL
        elif stream.items and now >= stream.expires:
            stream.items.clear()
        return stream

    def add(
        self, channel: str, publication: Publication, size: int, ttl: float, now: float
    ) -> Publication:
        """Number ``publication`` and keep it; returns it with its epoch and offset."""
        stream = self._stream(channel, now)
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
        the first offset must follow ``since`` and the last be the top.
        """
        stream = self._stream(channel, now)
        position = StreamPosition(stream.top, stream.epoch)
        if since is not None and since.epoch and since.epoch != stream.epoch:
            raise UnrecoverablePosition("that position is in another epoch of the stream")
        if limit == 0:
            return HistoryResult((), position)
        if limit < 0 or limit > MAX_HISTORY_LIMIT:
            limit = MAX_HISTORY_LIMIT
        items = stream.items
        first = items[0].offset if items else stream.top + 1  # oldest retained offset
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
            stream.items.clear()

    def prune(self, now: float) -> None:
        """Let publications past their TTL go, and positions past theirs."""
        for channel, stream in list(self._streams.items()):
            if now >= stream.meta_expires:
                del self._streams[channel]
            elif stream.items and now >= stream.expires:
                stream.items.clear()
