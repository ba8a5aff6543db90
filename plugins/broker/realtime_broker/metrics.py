"""What the broker reports for ``/metrics``: its publishes' durations, whether it is
up, what this process missed, its presence members, and history reads.

Only the publish is timed where it happens (one histogram observation per publish,
not per subscriber); the rest are counts the broker keeps anyway
(:attr:`.base.Broker.missed`, :attr:`.base.Broker.history_reads`, the presence
manager's own members), read by one sampler before each scrape and about once a
second, so none of it costs anything on the delivery path.
"""

from __future__ import annotations

from realtime import Telemetry

from .base import Broker


class BrokerMetrics:
    """One broker's instruments, and the sampler that fills them (one per host)."""

    def __init__(self, telemetry: Telemetry, broker: Broker) -> None:
        self.broker = broker
        broker.publish_seconds = telemetry.histogram(
            "realtime_broker_publish_duration_seconds",
            "Publishes handed to the broker, until it took them (memory://: delivered here)",
        )
        # With several workers, 1 only while every live worker's broker is up.
        self.up = telemetry.gauge(
            "realtime_broker_up",
            "1 while the broker reaches the other processes (redis://: subscribed), else 0",
            aggregate="livemin",
        )
        self.missed = telemetry.counter(
            "realtime_broker_missed_total",
            "Publications this process found it missed (gaps in a channel's numbering)",
        )
        self.members = telemetry.gauge(
            "realtime_presence_members",
            "Presence members this process put in channels and keeps there (its clients, "
            "once per channel)",
        )
        self.history_reads = telemetry.counter(
            "realtime_history_reads_total",
            "Reads of channels' streams: history calls, recoveries, positions, scripts",
        )
        #: What the running counts were at the last sample.
        self._missed = broker.missed
        self._reads = broker.history_reads
        telemetry.sampler(self.sample)

    def sample(self) -> None:
        """Set the gauges, and add to the counters what the broker's counts grew by."""
        broker = self.broker
        self.up.set(1 if broker.up else 0)
        manager = broker.presence_manager
        self.members.set(manager.local_members() if manager is not None else 0)
        missed, reads = broker.missed, broker.history_reads
        if missed > self._missed:
            self.missed.inc(missed - self._missed)
        if reads > self._reads:
            self.history_reads.inc(reads - self._reads)
        self._missed, self._reads = missed, reads
