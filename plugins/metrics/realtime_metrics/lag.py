"""The event loop measuring itself, and the once-a-second sample of live state.

Every ``INTERVAL`` the probe sleeps ``INTERVAL`` and records how late it woke: the
time callbacks ahead of it held the loop (a slow sampler, a big fan-out, a blocking
call). It is one timer per process, ten wake-ups a second, whatever the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from realtime import Instrument, Telemetry

#: Seconds between two probes.
INTERVAL = 0.1
#: Seconds between two samples of every plugin's live state.
SAMPLE_EVERY = 1.0
#: From half a millisecond (an idle loop) to 5 s (a loop stuck in a blocking call).
LAG_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
)  # fmt: skip

LAG_NAME = "realtime_event_loop_lag_seconds"


def lag_histogram(telemetry: Telemetry) -> Instrument:
    """The probe's histogram, declared on ``telemetry``."""
    return telemetry.histogram(
        LAG_NAME,
        "How late the event loop ran a timer due every 100 ms (time others held it)",
        buckets=LAG_BUCKETS,
    )


async def run_probe(
    lag: Instrument,
    sample: Callable[[], None],
    *,
    interval: float = INTERVAL,
    sample_every: float = SAMPLE_EVERY,
) -> None:
    """Observe the loop's lag every ``interval`` and call ``sample`` every ``sample_every``.

    Sampling here too, not only at a scrape, is what keeps another worker's scrape
    (``--workers`` above 1) at most a second behind this worker's live state.
    """
    loop = asyncio.get_running_loop()
    next_sample = loop.time()
    while True:
        start = loop.time()
        await asyncio.sleep(interval)
        now = loop.time()
        lag.observe(max(0.0, now - start - interval))
        if now >= next_sample:
            next_sample = now + sample_every
            sample()
