"""Prometheus metrics for realtime: the exporter of ``host.telemetry``, and /metrics.

Plugins never import this package: they declare instruments on ``host.telemetry``,
which this plugin backs with prometheus-client (docs/metrics.md).
"""

from .exporter import PrometheusExporter
from .plugin import METRICS

__all__ = ["METRICS", "PrometheusExporter"]
