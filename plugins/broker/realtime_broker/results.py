"""What a publish did, and the idempotent publishes each broker remembers.

A publisher that retries (a server API call whose answer was lost) passes an
``idempotency_key``: the broker publishes the first time it sees the key on that
channel within :data:`IDEMPOTENCY_TTL` and answers the first result again afterwards,
publishing nothing (Centrifugo's five-minute window). The memory broker keeps the
results here (:class:`ResultCache`, bounded in count); the Redis broker keeps them in
Redis beside the channel's numbering, set by the script that publishes, so every
process sharing it agrees.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # base imports this module
    from .base import StreamPosition

#: Seconds a publish result is remembered for its idempotency key (Centrifugo's).
IDEMPOTENCY_TTL = 300.0
#: Longest idempotency key, bytes of UTF-8 (a UUID is 36): it is kept per channel.
MAX_IDEMPOTENCY_KEY = 128
#: Most results the memory broker remembers: past it the oldest is forgotten first (a
#: retry of that one would publish again). About 40 MB at the longest channel and key.
MAX_RESULTS = 100_000


@dataclass(frozen=True, slots=True)
class PublishResult:
    """One publish: how many clients it was queued for, and where it stands.

    ``position`` is the publication's offset and epoch where the channel keeps
    history, else None. ``suppressed``: the idempotency key was seen within
    :data:`IDEMPOTENCY_TTL`, nothing was published, and ``position`` is the first
    publish's (``receivers`` is then 0).
    """

    receivers: int
    position: StreamPosition | None = None
    suppressed: bool = False


def check_idempotency_key(key: str) -> None:
    """ValueError for a key no broker keeps (over :data:`MAX_IDEMPOTENCY_KEY` bytes)."""
    if not isinstance(key, str):
        raise TypeError("an idempotency key is a str")
    if len(key) > MAX_IDEMPOTENCY_KEY or len(key.encode("utf-8", "surrogatepass")) > (
        MAX_IDEMPOTENCY_KEY
    ):
        raise ValueError(f"the idempotency key is over {MAX_IDEMPOTENCY_KEY} bytes")


class ResultCache:
    """Results by (channel, key), in one process; time is passed in. Sans-IO.

    Entries live :data:`IDEMPOTENCY_TTL` each, so the oldest expires first: pruning
    pops from the front and stops at the first live one (never a pass over all).
    """

    def __init__(self, max_results: int = MAX_RESULTS, ttl: float = IDEMPOTENCY_TTL) -> None:
        if max_results < 1 or ttl <= 0:
            raise ValueError("max_results >= 1 and ttl > 0")
        self.max_results = max_results
        self.ttl = ttl
        self._results: OrderedDict[tuple[str, str], tuple[float, StreamPosition | None]] = (
            OrderedDict()
        )
        #: Results forgotten before their time, to stay within ``max_results``.
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._results)

    def get(self, channel: str, key: str, now: float) -> PublishResult | None:
        """The remembered result, suppressed; None if the key is new (or expired)."""
        self.prune(now)
        entry = self._results.get((channel, key))
        if entry is None:
            return None
        return PublishResult(0, entry[1], suppressed=True)

    def put(self, channel: str, key: str, position: StreamPosition | None, now: float) -> None:
        self.prune(now)
        self._results[(channel, key)] = (now + self.ttl, position)
        while len(self._results) > self.max_results:
            self._results.popitem(last=False)
            self.evicted += 1

    def prune(self, now: float) -> None:
        results = self._results
        while results:
            key = next(iter(results))
            if results[key][0] > now:
                return
            del results[key]
