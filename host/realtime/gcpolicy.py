"""The garbage-collector policy of a serving process (issue 18, item 9).

A server holds its connections for hours, so most of what the cyclic collector
would look at is long-lived: the modules and plugins loaded at start-up, and the
objects of every held connection. A full collection walks all of it on the event
loop, a stall of tens to hundreds of milliseconds at 15,000 clients. The policy:

- :func:`tune`: the youngest generation collected every ``threshold`` allocations
  (``--gc-threshold``), and the older ones far more rarely than Python's (10, 10),
  since what survives a young collection here is a connection that stays;
- :func:`freeze`: once start-up is done (in each worker, after the fork), what it
  made goes to the permanent generation, which no collection walks again;
- per-connection and per-publication objects hold no reference cycles, so
  reference counting frees them and the collector finds next to nothing
  (``tests/integration/test_gc.py`` keeps it so).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

log = logging.getLogger("realtime")

#: Collections of the youngest generation between two of the middle one (Python: 10).
MIDDLE = 20
#: Collections of the middle generation between two full ones (Python: 10). Python
#: also waits until what is new in the oldest generation is a quarter of it.
OLDEST = 100

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]


def tune(threshold: int) -> tuple[int, int, int]:
    """Set the thresholds (``threshold`` 0: Python's own, left alone); the ones in force."""
    if threshold > 0:
        gc.set_threshold(threshold, MIDDLE, OLDEST)
    thresholds: tuple[int, int, int] = gc.get_threshold()
    return thresholds


def freeze() -> int:
    """Collect start-up's garbage, then move every object left to the permanent
    generation (it is still freed by reference counting); how many are frozen."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info(
        "garbage collector: thresholds %s, %d start-up objects frozen", gc.get_threshold(), count
    )
    return count


def frozen_after_startup(app: Any) -> Any:
    """``app``, calling :func:`freeze` as its lifespan start-up completes (plugins
    started, so their long-lived objects are frozen too)."""

    async def wrapped(scope: Message, receive: Any, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_and_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                freeze()
            await send(message)

        await app(scope, receive, send_and_freeze)

    return wrapped
