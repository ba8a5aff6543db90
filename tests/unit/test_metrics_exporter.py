"""The metrics plugin's exporter, with a fresh registry per test (single-process mode).

The multiprocess mode is settled when prometheus_client is first imported, so what
depends on it runs in a subprocess here (and with real workers in
tests/integration/test_metrics_server.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from realtime import PluginError, Telemetry, create_app
from realtime.telemetry import DURATION_BUCKETS
from realtime_metrics import plugin
from realtime_metrics.exporter import PrometheusExporter
from realtime_metrics.lag import LAG_BUCKETS, lag_histogram


def scrape(exporter: PrometheusExporter) -> dict[str, list[Sample]]:
    body, content_type = exporter.render()
    assert content_type.startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(body.decode())}


def value(samples: list[Sample], name: str, **labels: str) -> float:
    found = [s.value for s in samples if s.name == name and s.labels == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


@pytest.fixture
def telemetry() -> tuple[Telemetry, PrometheusExporter]:
    exporter = PrometheusExporter(multiprocess=False)
    telemetry = Telemetry()
    telemetry.install(exporter)
    return telemetry, exporter


def test_counter_with_labels_keeps_its_total_name(
    telemetry: tuple[Telemetry, PrometheusExporter],
) -> None:
    tel, exporter = telemetry
    handshakes = tel.counter("realtime_handshakes_total", "Handshakes", ("result",))
    handshakes.labels("accepted").inc()
    handshakes.labels("accepted").inc(2)
    handshakes.labels("origin").inc()
    families = scrape(exporter)
    samples = families["realtime_handshakes"]
    assert value(samples, "realtime_handshakes_total", result="accepted") == 3
    assert value(samples, "realtime_handshakes_total", result="origin") == 1
    assert b"# TYPE realtime_handshakes_total counter" in exporter.render()[0]


def test_gauge_sets_and_moves(telemetry: tuple[Telemetry, PrometheusExporter]) -> None:
    tel, exporter = telemetry
    connections = tel.gauge("realtime_connections", "Connections", ("protocol",))
    channels = tel.gauge("realtime_channels", "Channels")
    connections.labels("raw").set(5)
    connections.labels("raw").dec()
    connections.labels("centrifuge").inc(2)
    channels.set(7)
    families = scrape(exporter)
    assert value(families["realtime_connections"], "realtime_connections", protocol="raw") == 4
    conns = families["realtime_connections"]
    assert value(conns, "realtime_connections", protocol="centrifuge") == 2
    assert value(families["realtime_channels"], "realtime_channels") == 7


def test_histogram_buckets_default_to_duration_buckets(
    telemetry: tuple[Telemetry, PrometheusExporter],
) -> None:
    tel, exporter = telemetry
    scripts = tel.histogram("realtime_script_duration_seconds", "Scripts", ("status",))
    scripts.labels("200").observe(0.003)
    scripts.labels("200").observe(0.2)
    scripts.labels("504").observe(2.0)
    samples = scrape(exporter)["realtime_script_duration_seconds"]
    bounds = {
        s.labels["le"]
        for s in samples
        if s.name.endswith("_bucket") and s.labels["status"] == "200"
    }
    assert bounds == {*(str(float(b)) for b in DURATION_BUCKETS), "+Inf"}
    count = "realtime_script_duration_seconds_count"
    assert value(samples, count, status="200") == 2
    assert value(samples, count, status="504") == 1
    bucket = "realtime_script_duration_seconds_bucket"
    assert value(samples, bucket, status="200", le="0.005") == 1
    assert value(samples, bucket, status="200", le="0.25") == 2


def test_histogram_with_its_own_buckets(telemetry: tuple[Telemetry, PrometheusExporter]) -> None:
    tel, exporter = telemetry
    lag = lag_histogram(tel)
    lag.observe(0.0004)
    lag.observe(3.0)
    samples = scrape(exporter)["realtime_event_loop_lag_seconds"]
    bounds = [s.labels["le"] for s in samples if s.name.endswith("_bucket")]
    assert bounds == [*(str(float(b)) for b in LAG_BUCKETS), "+Inf"]
    assert LAG_BUCKETS[0] == 0.0005 and LAG_BUCKETS[-1] == 5.0
    assert value(samples, "realtime_event_loop_lag_seconds_bucket", le="0.0005") == 1
    assert value(samples, "realtime_event_loop_lag_seconds_bucket", le="2.5") == 1
    assert value(samples, "realtime_event_loop_lag_seconds_count") == 2


def test_same_spec_twice_is_one_instrument(
    telemetry: tuple[Telemetry, PrometheusExporter],
) -> None:
    """Two plugins counting handshakes with different results share one counter."""
    tel, exporter = telemetry
    host_side = tel.counter("realtime_handshakes_total", "Handshakes", ("result",))
    hub_side = tel.counter("realtime_handshakes_total", "Handshakes", ("result",))
    assert host_side is hub_side
    host_side.labels("per_ip").inc()
    hub_side.labels("accepted").inc()
    body = exporter.render()[0].decode()
    assert body.count("# TYPE realtime_handshakes_total counter") == 1
    samples = scrape(exporter)["realtime_handshakes"]
    assert value(samples, "realtime_handshakes_total", result="per_ip") == 1
    assert value(samples, "realtime_handshakes_total", result="accepted") == 1
    with pytest.raises(ValueError, match="declared twice"):
        tel.gauge("realtime_handshakes_total", "Handshakes", ("result",))


def test_two_hosts_share_nothing() -> None:
    first, second = PrometheusExporter(multiprocess=False), PrometheusExporter(multiprocess=False)
    for exporter, amount in ((first, 1), (second, 5)):
        tel = Telemetry()
        tel.install(exporter)
        tel.counter("realtime_deliveries_total", "Deliveries").inc(amount)
    assert value(scrape(first)["realtime_deliveries"], "realtime_deliveries_total") == 1
    assert value(scrape(second)["realtime_deliveries"], "realtime_deliveries_total") == 5


def test_process_collector_in_single_process_mode(
    telemetry: tuple[Telemetry, PrometheusExporter],
) -> None:
    families = scrape(telemetry[1])
    assert value(families["process_resident_memory_bytes"], "process_resident_memory_bytes") > 0
    assert "process_cpu_seconds" in families and "python_info" in families


def test_openmetrics_when_the_scraper_asks(
    telemetry: tuple[Telemetry, PrometheusExporter],
) -> None:
    tel, exporter = telemetry
    tel.counter("realtime_deliveries_total", "Deliveries").inc(3)
    accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
    body, content_type = exporter.render(accept)
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    assert "realtime_deliveries_total 3.0" in text


def run_python(code: str, **env: str) -> str:
    """``code`` in a fresh interpreter (the client's mode is chosen at its first import)."""
    environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env={**environ, **env},
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_plugin_does_not_import_prometheus_client() -> None:
    """Imported in the supervisor before the fork, it would fix single-process mode."""
    out = run_python("""
        import sys
        import realtime_metrics, realtime_metrics.plugin, realtime_metrics.exporter
        import realtime_metrics.lag, realtime_metrics.process, realtime_metrics.multiproc
        print(sorted(m for m in sys.modules if m.startswith("prometheus_client")))
    """)
    assert out.strip() == "[]"


def test_multiprocess_mode_sums_processes_and_mirrors_process_metrics(tmp_path: Path) -> None:
    """Two processes' files, one scrape: counters summed, gauges per pid or summed."""
    out = run_python(
        """
        import os, sys
        from realtime import Telemetry
        from realtime_metrics.exporter import PrometheusExporter
        from realtime_metrics.process import ProcessMirror

        def instruments():
            tel = Telemetry()
            exporter = PrometheusExporter(multiprocess=True)
            tel.install(exporter)
            mirror = ProcessMirror(tel)
            return tel, exporter, mirror

        pid = os.fork()
        if pid == 0:
            tel, _, _ = instruments()
            tel.counter("realtime_deliveries_total", "d").inc(2)
            tel.gauge("realtime_connections", "c", ("protocol",)).labels("raw").set(3)
            os._exit(0)
        os.waitpid(pid, 0)
        tel, exporter, _ = instruments()
        tel.counter("realtime_deliveries_total", "d").inc(5)
        tel.gauge("realtime_connections", "c", ("protocol",)).labels("raw").set(4)
        print(pid, os.getpid())
        sys.stdout.write(exporter.render()[0].decode())
        """,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path),
    )
    child, parent = out.splitlines()[0].split()
    families = {f.name: f.samples for f in text_string_to_metric_families(out.split("\n", 1)[1])}
    assert value(families["realtime_deliveries"], "realtime_deliveries_total") == 7
    conns = families["realtime_connections"]
    assert value(conns, "realtime_connections", protocol="raw") == 7
    memory = families["process_resident_memory_bytes"]
    assert {s.labels["pid"] for s in memory} == {child, parent}
    assert all(s.value > 0 for s in memory)
    assert value(families["process_cpu_seconds"], "process_cpu_seconds_total") > 0


def test_workers_refused_when_the_client_is_already_in_single_process_mode(
    tmp_path: Path,
) -> None:
    """This process imported prometheus_client without PROMETHEUS_MULTIPROC_DIR."""
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    settings = {"internal_bind": "127.0.0.1:9000", "workers": 2}
    with pytest.raises(PluginError, match=r"single-process mode.*--no-metrics"):
        create_app(tmp_path, settings=settings, plugins=[plugin], load_entrypoints=False)
    # One worker: fine, and the exporter is installed; --no-metrics: nothing installed.
    app = create_app(tmp_path, settings={**settings, "workers": 1}, plugins=[plugin],
                     load_entrypoints=False)  # fmt: skip
    assert isinstance(app.extensions[plugin.EXTENSION_KEY], plugin.MetricsState)
    off = create_app(tmp_path, settings={**settings, "metrics": False}, plugins=[plugin],
                     load_entrypoints=False)  # fmt: skip
    assert plugin.EXTENSION_KEY not in off.extensions


def test_no_internal_listener_no_exporter(tmp_path: Path) -> None:
    app = create_app(tmp_path, plugins=[plugin], load_entrypoints=False)
    assert plugin.EXTENSION_KEY not in app.extensions


def test_multiprocess_exporter_refuses_a_single_process_client() -> None:
    """Workers without PROMETHEUS_MULTIPROC_DIR (configure_server never ran) fail at
    their first instrument rather than each export only its own counts."""
    out = run_python("""
        from realtime import Telemetry
        from realtime_metrics.exporter import PrometheusExporter

        tel = Telemetry()
        tel.install(PrometheusExporter(multiprocess=True))
        try:
            tel.counter("realtime_deliveries_total", "d")
        except RuntimeError as exc:
            print(exc)
    """)
    assert "imported in single-process mode" in out
