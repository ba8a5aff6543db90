"""Control messages over Redis: their own Pub/Sub channel, checked before they are told.

``publish_control`` runs ``control.lua``: it stores a proof of the message (the SHA-1
of its body, field ``p`` of the hash ``realtime:control:ID``) for :data:`PROOF_TTL`
seconds, with only commands the recommended ACL grants, then
PUBLISHes ``realtime/2c ID BODY`` on ``realtime:control``. Nothing is numbered and
nothing is kept past the proof: not a channel, no history, no offset.

Anyone allowed to PUBLISH can send what looks like a control message; only a writer
of keys can leave a proof. So each one heard is checked against its proof (one
pipelined read for a batch of them, :mod:`..checks`) before the handlers are told,
and an id already told is not told again (a replay). What fails is counted and
logged, throttled, and dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence

from ..checks import Dropped, StoreCheck
from .envelope import proof

#: Seconds a control message's proof lasts: a check happens within the broker's
#: timeout of its arrival, and a replay later than this finds no proof.
PROOF_TTL = 60.0
#: Ids told recently, so that a replay within PROOF_TTL is not told twice.
RECENT_IDS = 16 * 1024

#: Reads the proofs of these ids: what each key holds, None if absent.
Lookup = Callable[[Sequence[bytes]], Awaitable[Sequence[object]]]
#: Told each genuine message's body, in the order they came.
Report = Callable[[bytes], None]


class ControlCheck(StoreCheck[tuple[bytes, bytes], bytes]):
    """One per broker: control messages ``(id, body)`` checked against their proofs."""

    kind = "control"

    def __init__(self, lookup: Lookup, report: Report, dropped: Dropped) -> None:
        super().__init__(lookup, dropped)
        self._report = report
        self._told: OrderedDict[bytes, None] = OrderedDict()

    def key(self, item: tuple[bytes, bytes]) -> bytes:
        return item[0]

    def judge(self, batch: list[tuple[bytes, bytes]], values: Sequence[object]) -> None:
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
