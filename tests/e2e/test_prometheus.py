"""Debian's Prometheus scraping a real server's internal listener, queried over its API.

Prometheus runs on loopback with a generated configuration (a scrape a second, its
database in the test's directory); the test opens raw /ws clients, broadcasts with
/send.py, and asks Prometheus (``/api/v1/query``) what it scraped: the connections
it opened, the deliveries it caused, and with ``--workers 2`` both workers' counts in
one sum.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..conftest import RedisServer, Server, eventually, reserve_port, wait_until

PROMETHEUS = "/usr/bin/prometheus"
#: A drop-in script: which worker answered and how many clients its hub holds.
WHOAMI = """\
import os
from realtime import current_host
from realtime_hub import get_hub
print(os.getpid(), len(get_hub(current_host())))
"""
CLIENTS = 12
MESSAGES = 5


class Prometheus:
    """``prometheus`` scraping ``target`` every second, on a port reserved for the test."""

    def __init__(self, workdir: Path, target: str) -> None:
        if not Path(PROMETHEUS).exists():
            raise RuntimeError("prometheus is not installed: run scripts/test (apt: prometheus)")
        self.workdir = workdir
        self.port = reserve_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  scrape_timeout: 1s\n"
            "scrape_configs:\n"
            "  - job_name: realtime\n"
            "    static_configs:\n"
            f"      - targets: ['{target}']\n"
        )
        self.log_path = workdir / "prometheus.log"
        command = [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            try:
                return httpx.get(self.url + "/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, timeout=30, message="prometheus ready")

    def query(self, promql: str) -> float | None:
        """The single value of an instant query; ``None`` while it has no result."""
        response = httpx.get(self.url + "/api/v1/query", params={"query": promql}, timeout=5)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        result = body["data"]["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)


@pytest.fixture
def prometheus_dir(tmp_path: Path) -> Iterator[Path]:
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    yield workdir
    shutil.rmtree(workdir / "data", ignore_errors=True)


@pytest.fixture(params=[1, 2], ids=["one-worker", "two-workers"])
def served(
    request: pytest.FixtureRequest, app_dir: Path, prometheus_dir: Path, tmp_path: Path
) -> Iterator[tuple[Server, Prometheus]]:
    workers: int = request.param
    (app_dir / "whoami.py").write_text(WHOAMI)
    internal = reserve_port()
    args = ["--internal-bind", f"127.0.0.1:{internal}"]
    redis: RedisServer | None = None
    if workers > 1:
        workdir = tmp_path / "redis"
        workdir.mkdir()
        redis = RedisServer(workdir).start()
        args += ["--workers", str(workers), "--broker", redis.url]
    server = Server(app_dir, *args).start()
    prometheus: Prometheus | None = None
    try:
        prometheus = Prometheus(prometheus_dir, f"127.0.0.1:{internal}")
        yield server, prometheus
    finally:
        if prometheus is not None:
            prometheus.stop()
        server.stop()
        if redis is not None:
            redis.stop()


@pytest.fixture
async def raw_clients(served: tuple[Server, Prometheus]) -> AsyncIterator[list[ClientConnection]]:
    server, _ = served
    opened = [await connect(server.ws_url) for _ in range(CLIENTS)]
    try:
        yield opened
    finally:
        for client in opened:
            await client.close()


async def local_counts(server: Server, workers: int) -> dict[int, int]:
    """Each worker's own client count, asked on fresh connections until all answered."""
    counts: dict[int, int] = {}
    async with httpx.AsyncClient() as http:
        for _ in range(80):
            response = await http.get(server.url + "/whoami.py", headers={"Connection": "close"})
            pid, count = map(int, response.text.split())
            counts[pid] = count
            if len(counts) == workers:
                break
    assert len(counts) == workers, counts
    return counts


async def test_prometheus_scrapes_connections_and_deliveries(
    served: tuple[Server, Prometheus], raw_clients: list[ClientConnection]
) -> None:
    server, prometheus = served
    await eventually(lambda: prometheus.query('up{job="realtime"}') == 1, timeout=20)
    # What each worker holds, as its own hub says: the scrape must add them all up.
    counts = await local_counts(server, server.workers)
    assert sum(counts.values()) == CLIENTS
    if server.workers > 1:
        assert all(counts.values()), f"every client went to one worker: {counts}"
    await eventually(
        lambda: prometheus.query("sum(realtime_connections)") == CLIENTS,
        timeout=20,
        message="realtime_connections in Prometheus",
    )
    raw = prometheus.query('sum(realtime_connections{protocol="raw"})')
    assert raw == CLIENTS
    # The loop-lag histogram and the process metrics came in the same scrapes.
    lag = prometheus.query("sum(realtime_event_loop_lag_seconds_count)")
    assert lag is not None and lag > 0
    memory = prometheus.query("count(process_resident_memory_bytes)")
    assert memory == server.workers, "one series per worker process"

    before = prometheus.query("sum(realtime_deliveries_total)") or 0.0
    for index in range(MESSAGES):
        response = httpx.get(server.url + "/send.py", params={"message": f"m{index}"}, timeout=5)
        assert response.status_code == 200, response.text
    for client in raw_clients:
        for index in range(MESSAGES):
            assert await client.recv() == f"m{index}"
    expected = before + CLIENTS * MESSAGES
    await eventually(
        lambda: prometheus.query("sum(realtime_deliveries_total)") == expected,
        timeout=20,
        message=f"realtime_deliveries_total grown by {CLIENTS * MESSAGES}",
    )
    published = prometheus.query('sum(realtime_publications_total{source="script"})')
    assert published == MESSAGES
