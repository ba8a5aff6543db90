"""Control messages over Redis: their own Pub/Sub channel, checked before they are told.

``publish_control`` runs ``control.lua``: it stores a proof of the message (the SHA-1
of its body, field ``p`` of the hash ``realtime:control:ID``) for :data:`PROOF_TTL`
seconds, with only commands the recommended ACL grants, then
PUBLISHes ``realtime/2c ID BODY`` on ``realtime:control``. Nothing is numbered and
nothing is kept past the proof: not a channel, no history, no offset.

Anyone allowed to PUBLISH can send what looks like a control message; only a writer
of keys can leave a proof. So each one heard is checked against its proof (one
pipelined read for up to :data:`CHECK_BATCH` of them) before the handlers are told,
and an id already told is not told again (a replay). What fails is counted and
logged, throttled, and dropped.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

from .envelope import proof

#: Seconds a control message's proof lasts: a check happens within the broker's
#: timeout of its arrival, and a replay later than this finds no proof.
PROOF_TTL = 60.0
#: Messages one read of the proofs checks at most...
CHECK_BATCH = 256
#: ...and most waiting for a check (more are dropped, counted: a flood).
MAX_PENDING = 16 * CHECK_BATCH
#: Ids told recently, so that a replay within PROOF_TTL is not told twice.
RECENT_IDS = 16 * 1024

#: Reads the proofs of these ids: what each key holds, None if absent.
Lookup = Callable[[Sequence[bytes]], Awaitable[Sequence[object]]]
#: Told each genuine message's body, in the order they came.
Report = Callable[[bytes], None]
#: Told of each message dropped: (kind, why).
Dropped = Callable[[str, str], None]


class ControlCheck:
    """One per broker: a queue of control messages heard and one task checking them."""

    def __init__(self, lookup: Lookup, report: Report, dropped: Dropped) -> None:
        self._lookup = lookup
        self._report = report
        self._dropped = dropped
        self._pending: deque[tuple[bytes, bytes]] = deque()
        self._told: OrderedDict[bytes, None] = OrderedDict()
        self._task: asyncio.Task[None] | None = None

    def add(self, ident: bytes, body: bytes) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._dropped("control flood", "over the control messages waiting for a check")
            return
        self._pending.append((ident, body))
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="control check")

    async def _run(self) -> None:
        while self._pending:
            count = min(CHECK_BATCH, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                values = await self._lookup([ident for ident, _ in batch])
            except Exception as exc:  # Redis out of reach: nothing unproven is told
                self._dropped("control unchecked", f"not checked ({type(exc).__name__})")
                continue
            for (ident, body), value in zip(batch, values, strict=True):
                if value != proof(body):
                    self._dropped("control forged", "with no proof in Redis (not sent by realtime)")
                elif ident in self._told:
                    self._dropped("control replayed", "repeating one already told")
                else:
                    self._told[ident] = None
                    if len(self._told) > RECENT_IDS:
                        self._told.popitem(last=False)
                    self._report(body)

    async def close(self) -> None:
        task, self._task = self._task, None
        self._pending.clear()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
