"""The exporter behind ``host.telemetry``: instruments backed by prometheus-client.

prometheus-client picks its single- or multi-process value store when it is first
imported (``PROMETHEUS_MULTIPROC_DIR`` set or not), so nothing here imports it at
module level: the supervisor sets the directory before it forks (``multiproc``), and
each worker imports the client on its first instrument, after the fork.

One host, one :class:`PrometheusExporter`, one registry: two hosts in a process
never share metrics (nothing touches the client's global ``REGISTRY``). With several
workers each scrape reads every worker's files through a fresh registry holding a
``MultiProcessCollector``, the client's documented way.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

from realtime import Instrument
from realtime.telemetry import DURATION_BUCKETS, Spec

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

#: What to say when the client was imported too early for ``--workers`` above 1.
IMPORTED_TOO_EARLY = (
    "prometheus_client was imported in single-process mode before the workers were "
    "forked, so each worker would export only its own counts: with --workers above 1 "
    "nothing may import it before the server starts (or set PROMETHEUS_MULTIPROC_DIR "
    "to an empty directory yourself), or turn metrics off with --no-metrics"
)


def client_mode() -> str | None:
    """``"single"`` or ``"multi"`` if prometheus_client is imported, else ``None``."""
    values = sys.modules.get("prometheus_client.values")
    if values is None:
        return None
    return "single" if values.ValueClass is values.MutexValue else "multi"


class PrometheusExporter:
    """Makes prometheus-client metrics for one host and renders its scrapes.

    ``multiprocess``: the workers share ``PROMETHEUS_MULTIPROC_DIR`` (``--workers``
    above 1): metrics go to no registry (their values live in the directory's files)
    and each scrape merges every worker's files.
    """

    def __init__(self, *, multiprocess: bool) -> None:
        self.multiprocess = multiprocess
        self._registry: CollectorRegistry | None = None

    def check_mode(self) -> None:
        """Refuse to run where prometheus-client chose the wrong store (RuntimeError)."""
        if self.multiprocess and client_mode() == "single":
            raise RuntimeError(IMPORTED_TOO_EARLY)

    @property
    def registry(self) -> CollectorRegistry:
        """The host's registry (single-process mode), with the process collectors."""
        if self._registry is None:
            from prometheus_client import (
                CollectorRegistry,
                GCCollector,
                PlatformCollector,
                ProcessCollector,
            )

            # Imported now if not before: in a worker, after the fork, as it should be;
            # without PROMETHEUS_MULTIPROC_DIR set by then, the workers would not add up.
            self.check_mode()
            registry = CollectorRegistry()
            if not self.multiprocess:
                # Custom collectors do not work in multiprocess mode: there the plugin
                # mirrors the process collector into gauges (``process.ProcessMirror``).
                ProcessCollector(registry=registry)
                PlatformCollector(registry=registry)
                GCCollector(registry=registry)
            self._registry = registry
        return self._registry

    def make(self, spec: Spec) -> Instrument:
        """A Counter, Gauge or Histogram for ``spec`` (the Telemetry dedupes by name)."""
        registry = self.registry
        import prometheus_client as client

        target = None if self.multiprocess else registry
        metric: Any
        if spec.kind == "counter":
            # Named X_total: the client takes the suffix off and puts it back itself.
            metric = client.Counter(spec.name, spec.help, spec.labels, registry=target)
        elif spec.kind == "gauge":
            metric = client.Gauge(
                spec.name,
                spec.help,
                spec.labels,
                registry=target,
                multiprocess_mode=spec.aggregate,  # type: ignore[arg-type]
            )
        elif spec.kind == "histogram":
            buckets = DURATION_BUCKETS if spec.buckets is None else spec.buckets
            metric = client.Histogram(
                spec.name, spec.help, spec.labels, registry=target, buckets=buckets
            )
        else:  # pragma: no cover - Spec.kind is a Literal
            raise ValueError(f"unknown instrument kind {spec.kind!r}")
        return cast(Instrument, metric)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """One scrape: the body and its content type, in the format ``accept`` asks for.

        The Prometheus text format unless the scraper asks for OpenMetrics (as
        Prometheus itself does); the client's own negotiation (``choose_encoder``).
        """
        registry = self.registry
        from prometheus_client.exposition import choose_encoder

        if self.multiprocess:
            from prometheus_client import CollectorRegistry
            from prometheus_client.multiprocess import MultiProcessCollector

            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        encoder, content_type = choose_encoder(accept or "")
        return encoder(registry), content_type
