"""/metrics on a real server's internal listener: one worker, then two summed.

A drop-in script counts its runs on ``host.telemetry`` (a counter any plugin could
declare) and prints its worker's pid, so a test knows how the kernel spread the
requests and what the scrape must add up to.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from ..conftest import RedisServer, Server, reserve_port, wait_until

COUNT_SCRIPT = """\
import os
from realtime import current_host

current_host().telemetry.counter("test_script_runs_total", "Runs of count.py").inc()
print(os.getpid())
"""

Families = dict[str, list[Sample]]


def scrape(url: str, accept: str | None = None) -> Families:
    headers = {"Accept": accept} if accept else {}
    response = httpx.get(url + "/metrics", headers=headers, timeout=5)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {f.name: f.samples for f in text_string_to_metric_families(response.text)}


def total(families: Families, family: str, sample: str | None = None) -> float:
    """The sum of a family's samples named ``sample`` (``family`` itself by default)."""
    return sum(s.value for s in families.get(family, []) if s.name == (sample or family))


def start(app_dir: Path, *args: str, env: dict[str, str] | None = None) -> tuple[Server, str]:
    (app_dir / "count.py").write_text(COUNT_SCRIPT)
    server = Server(app_dir, *args, env=env, internal=True).start()
    return server, server.internal_url


def run_scripts(server: Server, count: int) -> set[str]:
    """``count`` runs of count.py, each on a connection of its own; the pids that ran them."""
    pids = set()
    for _ in range(count):
        response = httpx.get(server.url + "/count.py", timeout=5)
        assert response.status_code == 200, response.text
        pids.add(response.text.strip())
    return pids


def test_metrics_one_worker(app_dir: Path) -> None:
    server, internal = start(app_dir)
    try:
        assert len(run_scripts(server, 7)) == 1
        families = scrape(internal)
        assert total(families, "test_script_runs", "test_script_runs_total") == 7
        count = "realtime_script_duration_seconds_count"
        assert total(families, "realtime_script_duration_seconds", count) == 7
        assert total(families, "process_resident_memory_bytes") > 0
        assert total(families, "process_cpu_seconds", "process_cpu_seconds_total") > 0
        assert "python_info" in families
        # The probe runs ten times a second from start-up.
        lag_count = "realtime_event_loop_lag_seconds_count"
        wait_until(
            lambda: total(scrape(internal), "realtime_event_loop_lag_seconds", lag_count) >= 5,
            message="loop lag observed",
        )
        # OpenMetrics when the scraper asks for it (as Prometheus does).
        accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
        response = httpx.get(internal + "/metrics", headers={"Accept": accept}, timeout=5)
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")
        # Never on the public site.
        assert httpx.get(server.url + "/metrics", timeout=5).status_code == 404
    finally:
        server.stop()


def test_no_metrics_keeps_the_listener_and_serves_none(app_dir: Path) -> None:
    server, internal = start(app_dir, "--no-metrics")
    try:
        run_scripts(server, 2)  # its counter is a no-op, and the script still runs
        assert httpx.get(internal + "/metrics", timeout=5).status_code == 404
    finally:
        server.stop()


def test_metrics_two_workers_summed(
    app_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    temp = tmp_path / "temp"  # where the supervisor makes PROMETHEUS_MULTIPROC_DIR
    temp.mkdir()
    env = {"TMPDIR": str(temp)}
    server, internal = start(app_dir, "--workers", "2", "--broker", redis_server.url, env=env)
    try:
        (shared,) = temp.glob("realtime-metrics-*")
        assert shared.stat().st_mode & 0o777 == 0o700
        runs = 40
        pids = run_scripts(server, runs)
        assert len(pids) == 2, f"the kernel sent every request to one worker: {pids}"
        count = "realtime_script_duration_seconds_count"
        # Every scrape, whichever worker answers it, has both workers' counts.
        for _ in range(6):
            families = scrape(internal)
            assert total(families, "test_script_runs", "test_script_runs_total") == runs
            assert total(families, "realtime_script_duration_seconds", count) == runs
        memory = "process_resident_memory_bytes"

        def worker_pids() -> set[str]:
            return {s.labels["pid"] for s in scrape(internal).get(memory, [])}

        wait_until(lambda: worker_pids() == pids, message="process metrics of both workers")
        # A worker killed: its live series go with it (worker_exited), its counts stay.
        killed = sorted(pids)[0]
        os.kill(int(killed), signal.SIGKILL)

        def replaced() -> bool:
            now = worker_pids()
            return killed not in now and len(now) == 2

        wait_until(replaced, timeout=15, message="the dead worker's gauges dropped")
        families = scrape(internal)
        assert total(families, "test_script_runs", "test_script_runs_total") == runs
        assert total(families, "realtime_script_duration_seconds", count) == runs
        assert not list(shared.glob(f"gauge_live*_{killed}.db"))
    finally:
        server.stop()
    assert list(temp.iterdir()) == [], "the supervisor removes the directory at exit"


def test_workers_refused_once_prometheus_client_is_imported(
    app_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Imported before the supervisor sets PROMETHEUS_MULTIPROC_DIR, the client would
    count each worker alone: start-up stops, saying why, rather than under-report."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import prometheus_client\n")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "realtime", "run", "--app", str(app_dir),
        "--bind", f"127.0.0.1:{reserve_port()}",
        "--internal-bind", f"127.0.0.1:{reserve_port()}",
        "--workers", "2", "--broker", redis_server.url,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "imported in single-process mode" in done.stderr
    assert "(plugin 'metrics')" in done.stderr
