"""The internal listener on real servers: its routes only there, the public site only on
the public listener, one per worker, stopped with the server; and ``worker_exited``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ..conftest import (
    RedisServer,
    Server,
    eventually,
    listening_socket,
    reserve_port,
    wait_until,
)
from .test_discovery import env_with, make_distribution

PLUGIN_SOURCE = '''
"""Internal routes of each kind, and a worker_exited that records, then fails."""
import asyncio
import logging
import os

from quart import Response
from realtime import ASGIRoute, Route, current_host, get_host, hookimpl
from quart import current_app


async def probe():
    host = current_host()
    assert get_host(current_app) is host and host.internal_app is current_app._get_current_object()
    return f"internal {os.getpid()}\\n"


async def events():
    async def stream():
        n = 0
        while True:
            yield f"data: {n}\\n\\n".encode()
            n += 1
            await asyncio.sleep(0.05)

    return Response(stream(), content_type="text/event-stream")


async def raw(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"raw\\n"})


@hookimpl
def register_internal_routes():
    return [
        Route("/-/probe", probe),
        Route("/events", events),
        ASGIRoute("/raw", raw, scope_types=("http",)),
    ]


@hookimpl
def worker_exited(host, pid):
    with open(os.environ["REALTIME_TEST_EXITED"], "a") as record:
        record.write(f"{pid}\\n")
    logging.getLogger("realtime").info("probe: worker_exited %d", pid)
    raise RuntimeError("worker_exited fails on purpose")
'''

#: Plugins of issue 20 with internal routes of their own, tested beside their own code:
#: these tests are about the listener, with the probe plugin above.
OTHERS = "metrics,admin,events"


class InternalServer(Server):
    """``Server`` with ``--internal-bind`` and the probe plugin's site, the other
    bundled plugins off; the pids ``worker_exited`` heard go to a file."""

    def __init__(self, app_dir: Path, site: Path, *args: str) -> None:
        self.exited_path = app_dir.parent / "exited.txt"
        env = {
            **env_with(site),
            "REALTIME_TEST_EXITED": str(self.exited_path),
            "REALTIME_DISABLE_PLUGINS": OTHERS,
        }
        super().__init__(app_dir, *args, env=env, internal=True)

    def exited(self) -> list[int]:
        if not self.exited_path.exists():
            return []
        return [int(line) for line in self.exited_path.read_text().split()]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    make_distribution(site=path, name="probe", module="realtime_probe", source=PLUGIN_SOURCE)
    return path


def _get(url: str) -> httpx.Response:
    """A fresh connection each time, so SO_REUSEPORT may pick another worker."""
    with httpx.Client(timeout=5) as client:
        return client.get(url)


async def test_each_listener_serves_its_own_routes_only(app_dir: Path, site: Path) -> None:
    server = InternalServer(app_dir, site).start()
    try:
        inside, public = server.internal_url, server.url
        for url in (inside, public):
            health = _get(url + "/-/health")
            assert (health.status_code, health.text) == (200, "ok\n"), url
        probe = _get(inside + "/-/probe")
        assert probe.status_code == 200 and probe.text.startswith("internal ")
        assert _get(inside + "/raw").text == "raw\n"
        for path in ("/-/probe", "/events", "/raw"):
            assert _get(public + path).status_code == 404, path
        for path in ("/", "/index.html", "/send.py", "/send.py?message=leak", "/ws"):
            response = _get(inside + path)
            assert (response.status_code, response.text) == (404, "Not Found\n"), path
        with pytest.raises(InvalidStatus):
            await connect(f"ws://127.0.0.1:{server.internal_port}/ws", open_timeout=5)
        async with connect(server.ws_url, open_timeout=5) as client:  # the public one works
            assert _get(public + "/send.py?message=hi").status_code == 200
            assert await asyncio.wait_for(client.recv(), 5) == "hi"
        assert f"internal listener on 127.0.0.1:{server.internal_port}" in server.log

        # A stream that never ends by itself: served as it goes, and it does not hold
        # the server up when it stops.
        async with (
            httpx.AsyncClient(timeout=5) as client,
            client.stream("GET", inside + "/events") as stream,
        ):
            assert stream.headers["content-type"].startswith("text/event-stream")
            lines = []
            async for line in stream.aiter_lines():
                if line.startswith("data:"):
                    lines.append(line)
                if len(lines) == 3:
                    break
            assert lines == ["data: 0", "data: 1", "data: 2"]
            process = server.process
            assert process is not None
            started = time.monotonic()
            process.send_signal(signal.SIGINT)
            assert await asyncio.to_thread(process.wait, 10) == 0
            assert time.monotonic() - started < 5
        with pytest.raises(httpx.ConnectError):
            _get(inside + "/-/health")
    finally:
        server.stop()


async def test_it_answers_draining_until_the_public_listener_has_drained(
    app_dir: Path, site: Path
) -> None:
    marker = app_dir.parent / "slow-started"
    (app_dir / "slow.py").write_text(
        f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\n"
        "time.sleep(1.5)\nprint('done')\n"
    )
    server = InternalServer(app_dir, site, "--shutdown-timeout", "5").start()
    try:
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.get(server.url + "/slow.py"))
            await eventually(marker.exists, message="the slow script running")
            process = server.process
            assert process is not None
            process.send_signal(signal.SIGINT)
            await eventually(lambda: "stopping: draining" in server.log)
            health = await client.get(server.internal_url + "/-/health")
            assert (health.status_code, health.text) == (503, "draining\n")
            assert (await slow).text == "done\n"  # the drain waited for it
            assert await asyncio.to_thread(process.wait, 10) == 0
    finally:
        server.stop()


def test_every_worker_serves_it_and_worker_exited_runs_before_the_replacement(
    app_dir: Path, site: Path, redis_server: RedisServer
) -> None:
    server = InternalServer(
        app_dir, site, "--workers", "2", "--broker", redis_server.url
    ).start()  # fmt: skip
    try:
        seen: set[int] = set()

        def pids(count: int) -> set[int]:
            seen.add(int(_get(server.internal_url + "/-/probe").text.split()[1]))
            return seen if len(seen) >= count else set()

        workers = wait_until(lambda: pids(2), timeout=20, message="both workers' probes")
        assert isinstance(workers, set) and len(workers) == 2
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: server.exited() == [victim], timeout=10, message="worker_exited")
        survivor = (workers - {victim}).pop()
        seen.clear()
        seen.add(survivor)
        wait_until(lambda: pids(2), timeout=20, message="the replacement's probe")
        assert victim not in seen
        (replacement,) = seen - {survivor}
        log = server.log
        # Called, its failure logged (not fatal), and only then the replacement forked.
        called = log.index(f"probe: worker_exited {victim}")
        failed = log.index(f"plugin 'probe' failed in worker_exited (pid {victim})")
        assert called < failed < log.index(f"started (pid {replacement})")
        server.stop()
        # Stopping reaps the other two: each reported once.
        assert sorted(server.exited()) == sorted([victim, survivor, replacement])
    finally:
        server.stop()


def test_an_internal_address_in_use_stops_start_up_naming_it(app_dir: Path) -> None:
    taken = listening_socket()
    port = taken.getsockname()[1]
    result = subprocess.run(
        [
            sys.executable, "-m", "realtime", "run", "--app", str(app_dir),
            "--bind", f"127.0.0.1:{reserve_port()}", "--internal-bind", f"127.0.0.1:{port}",
        ],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 1
    assert f"realtime: --internal-bind 127.0.0.1:{port}:" in result.stderr
    assert "Address already in use" in result.stderr
