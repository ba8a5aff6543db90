"""The hub's metrics, read from its running counts by one sampler, off every hot path.

The hub counts per fan-out, per connect and per disconnect into its
:class:`.HubStats` (:mod:`.census`); :class:`HubMetrics` turns those counts into the
host's instruments (:mod:`realtime.telemetry`) before every scrape and about once a
second: gauges are set to what is, counters grow by what the counts grew by since
the last sample. No work is added to a delivery, and none at all without an exporter
beyond this sampler's few lookups.
"""

from __future__ import annotations

from realtime import Instrument, Telemetry

from .engine import Hub

#: The counts telemetry reads as counters: (HubStats field, instrument attribute).
_TOTALS = (("deliveries", "deliveries"), ("sent_bytes", "sent_bytes"), ("accepted", "accepted"))


class HubMetrics:
    """One hub's instruments, and the counts they were last brought up to."""

    def __init__(self, hub: Hub, telemetry: Telemetry) -> None:
        self.hub = hub
        self.connections = telemetry.gauge(
            "realtime_connections", "Clients connected, by wire protocol.", ("protocol",)
        )
        self.subscriptions = telemetry.gauge(
            "realtime_subscriptions", "Channel memberships of the connected clients."
        )
        self.channels = telemetry.gauge(
            "realtime_channels", "Channels with at least one subscriber in this process."
        )
        self.deliveries = telemetry.counter(
            "realtime_deliveries_total", "Publications sent or queued to a client."
        )
        self.sent_bytes = telemetry.counter(
            "realtime_sent_bytes_total", "Bytes of publications and replies handed to clients."
        )
        #: One policy per hub: its series exists from the start, at 0, for rate().
        self.overflows = telemetry.counter(
            "realtime_overflows_total",
            "Client buffers that overflowed, by the overflow policy applied.",
            ("policy",),
        ).labels(hub.overflow)
        self.disconnects = telemetry.counter(
            "realtime_disconnects_total", "Ended connections, by close code.", ("code",)
        )
        self.accepted = telemetry.counter(
            "realtime_handshakes_total", "Connection attempts, by result.", ("result",)
        ).labels("accepted")
        self._by_protocol: dict[str, Instrument] = {}
        self._by_code: dict[str, Instrument] = {}
        #: What each counter was brought up to (HubStats field or close code: count).
        self._seen: dict[str, int] = {}
        self._seen_codes: dict[str, int] = {}

    def sample(self) -> None:
        """Bring the instruments up to the hub's counts (a ``Telemetry.sampler``)."""
        stats = self.hub.stats
        for protocol, count in stats.protocols.items():
            gauge = self._by_protocol.get(protocol)
            if gauge is None:
                gauge = self._by_protocol[protocol] = self.connections.labels(protocol)
            gauge.set(count)
        self.subscriptions.set(stats.subscriptions)
        self.channels.set(len(self.hub.channels))
        seen = self._seen
        for field, attribute in _TOTALS:
            grown = getattr(stats, field) - seen.get(field, 0)
            if grown > 0:
                getattr(self, attribute).inc(grown)
                seen[field] = seen.get(field, 0) + grown
        grown = stats.overflows - seen.get("overflows", 0)
        if grown > 0:
            self.overflows.inc(grown)
            seen["overflows"] = stats.overflows
        seen_codes = self._seen_codes
        for code, count in stats.disconnects.items():
            grown = count - seen_codes.get(code, 0)
            if grown > 0:
                counter = self._by_code.get(code)
                if counter is None:
                    counter = self._by_code[code] = self.disconnects.labels(code)
                counter.inc(grown)
                seen_codes[code] = count
