"""prometheus-client's process metrics where its collectors cannot run.

In multiprocess mode a scrape reads only the workers' value files, so a collector
(``ProcessCollector``) would report the scraping worker alone. Instead each worker
copies its own process collector's samples, once a second, into instruments: gauges
aggregated ``liveall`` (one series per worker, with a ``pid`` label, dropped when the
worker exits) and ``process_cpu_seconds_total`` as a counter, summed over workers
(the CPU the server has spent, the workers that exited included).
"""

from __future__ import annotations

from realtime import Instrument, Telemetry

CPU = "process_cpu_seconds_total"


class ProcessMirror:
    """One worker's process collector, copied into ``telemetry`` by :meth:`sample`."""

    def __init__(self, telemetry: Telemetry) -> None:
        from prometheus_client import ProcessCollector

        self._collector = ProcessCollector(registry=None)
        self._gauges: dict[str, Instrument] = {}
        self._cpu: Instrument | None = None
        self._cpu_seen = 0.0
        for family in self._collector.collect():
            for sample in family.samples:
                if sample.name == CPU:
                    self._cpu = telemetry.counter(CPU, family.documentation)
                else:
                    self._gauges[sample.name] = telemetry.gauge(
                        sample.name, family.documentation, aggregate="liveall"
                    )
        self.sample()

    def sample(self) -> None:
        """Copy the process's current CPU time, memory, open files and start time."""
        for family in self._collector.collect():
            for sample in family.samples:
                gauge = self._gauges.get(sample.name)
                if gauge is not None:
                    gauge.set(sample.value)
                elif sample.name == CPU and self._cpu is not None and sample.value > self._cpu_seen:
                    self._cpu.inc(sample.value - self._cpu_seen)
                    self._cpu_seen = sample.value
