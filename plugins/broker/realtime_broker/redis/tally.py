"""Counting dropped messages and failures by kind, logged through the host's throttle.

The Redis broker meets the same trouble many times a second when someone floods a
channel: each kind is counted (``counts``, for tests and later metrics) and logged
through :class:`realtime.LogThrottle`, the project's one throttle, with how many there
were since the last line. An adapter only: the throttle decides when a line goes out.
"""

from __future__ import annotations

import logging
from collections import Counter

from realtime import LogThrottle

#: Seconds between two log lines about the same kind of trouble.
REPORT_EVERY = 10.0


class Tally:
    """Counts events by kind; logs the first at once, then at most one line per kind
    every ``every`` seconds, saying how many there were (:meth:`flush` says it for
    kinds that went quiet)."""

    def __init__(self, logger: logging.Logger, every: float = REPORT_EVERY) -> None:
        self.log = logger
        self.throttle = LogThrottle(every)
        self.counts: Counter[str] = Counter()
        #: How many of each kind the last line had counted, and its text.
        self._reported: dict[str, int] = {}
        self._text: dict[str, str] = {}

    def add(self, kind: str, text: str, *, exc_info: bool = False) -> None:
        self.counts[kind] += 1
        self._text[kind] = text
        if self.throttle.allow(kind) is not None:
            self._report(kind, exc_info)

    def flush(self) -> None:
        """Report counts held back, once their kind's quiet time is over."""
        for kind, count in list(self._reported.items()):
            if self.counts[kind] > count and self.throttle.allow(kind) is not None:
                self._report(kind, False)

    def _report(self, kind: str, exc_info: bool) -> None:
        count = self.counts[kind]
        before = self._reported.get(kind, 0)
        self.log.warning(
            "%s: %d since the last report, %d in all", self._text[kind], count - before, count,
            exc_info=exc_info,
        )  # fmt: skip
        self._reported[kind] = count
