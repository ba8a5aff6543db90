"""One rate limiter for the whole project: a token bucket kept as one virtual clock (GCRA).

What a client may send is bounded in two places: the hub counts WebSocket frames,
a protocol may count its own commands (several can ride in one frame). Both are
the same bucket: ``rate`` events a second on average, bursts of up to ``burst`` at
once. The generic cell rate algorithm keeps it as one float per holder, the
*theoretical arrival time* (``tat``): each event moves it on by ``1 / rate``; a clock
more than ``burst`` events ahead of now is over the budget. No timer, no refill.

:class:`Rate` holds the shared parameters (one per hub, not per connection) and does
the arithmetic; the per-connection state is the one float, kept in a slot of the
holder's own object, so a connection costs 8 bytes of bucket and not an object.
:class:`Bucket` pairs the two for a holder that can afford an object.
"""

from __future__ import annotations

import time


class Rate:
    """``rate`` events a second, in bursts of up to ``burst``; a rate of 0 never limits.

    ``interval`` (seconds an event moves the clock on) and ``window`` (how far ahead
    of now the clock may run) are read by hot loops that advance a clock themselves.
    """

    __slots__ = ("burst", "interval", "rate", "window")

    def __init__(self, rate: float, burst: int | None = None) -> None:
        if rate < 0:
            raise ValueError("rate must be 0 (no limit) or positive")
        if burst is not None and burst < 1:
            raise ValueError("burst must be at least 1")
        self.rate = rate
        self.burst = max(1, int(rate) if burst is None else burst)
        self.interval = 1.0 / rate if rate else 0.0
        # Half an event of slack absorbs float rounding at exactly ``burst`` events.
        self.window = (self.burst + 0.5) * self.interval

    def __bool__(self) -> bool:
        """False when it never limits (rate 0): callers skip the clock altogether."""
        return self.interval != 0.0

    def take(self, tat: float, now: float, count: int = 1) -> float:
        """The clock after ``count`` events at ``now``; -1.0 when that is over the budget.

        Over the budget, the caller keeps its old clock (the events were refused).
        """
        tat = max(tat, now) + count * self.interval
        return -1.0 if tat > now + self.window else tat

    def describe(self, what: str) -> str:
        """What going past it means, for a log line: ``"over 100 frames a second (bursts
        of 100)"`` for ``what="frames"``."""
        rate = int(self.rate) if self.rate == int(self.rate) else self.rate
        return f"over {rate} {what} a second (bursts of {self.burst})"


class Bucket:
    """A :class:`Rate` and one holder's clock."""

    __slots__ = ("rate", "tat")

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self.tat = 0.0

    def take(self, count: int = 1, now: float | None = None) -> bool:
        """Spend ``count`` events; False (nothing spent) when over the budget."""
        rate = self.rate
        if not rate.interval:
            return True
        tat = rate.take(self.tat, time.monotonic() if now is None else now, count)
        if tat < 0:
            return False
        self.tat = tat
        return True
