"""No reference cycles in per-connection and per-publication objects (issue 18, item 9).

The serving process keeps the cyclic collector rare (``realtime.gcpolicy``): that only
holds if what a connection and a publication make is freed by reference counting.
A real server runs in a thread of this process, real clients (raw ``/ws`` and
Centrifuge) connect, receive publications and leave, with the collector off; then
``gc.collect()`` under ``DEBUG_SAVEALL`` lists what only it could free.
"""

from __future__ import annotations

import asyncio
import collections
import gc
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config
from hypercorn.utils import wrap_app
from websockets.asyncio.client import ClientConnection, connect

from realtime import create_app, gcpolicy, tcp
from realtime.cli import server_config

from ..conftest import APP_DIR, Server, free_port, wait_for_http

SECRET = "gc-secret-" * 4
API_KEY = "gc-api-key"
#: Modules whose objects only the server side makes (the clients' are httpx's, httpcore's,
#: h11's, anyio's, websockets'). asyncio's own transports keep a cycle each (a bound
#: method of theirs), which only the collector frees: not counted.
OURS = ("realtime", "quart", "hypercorn", "wsproto", "werkzeug", "asyncio.streams")
ROUNDS = 3
CLIENTS = 20


class ServerThread:
    """``realtime``'s app on Hypercorn in a thread of the test process (its own loop)."""

    def __init__(self, app_dir: Path, *, fast_path: bool) -> None:
        self.port = free_port()
        settings: dict[str, Any] = {
            "bind": f"127.0.0.1:{self.port}",
            "token_hmac_secret": SECRET,
            "api_key": API_KEY,
            "client_ping_interval": 0,
            "fast_path": fast_path,
        }
        self.app = create_app(app_dir, settings=settings)
        self.config: Config = server_config(self.app)
        self.loop = asyncio.new_event_loop()
        self.stopped = asyncio.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        async def serve() -> None:
            tcp.install()
            wrapped = wrap_app(gcpolicy.frozen_after_startup(self.app), None, mode="asgi")
            await worker_serve(wrapped, self.config, shutdown_trigger=self.stopped.wait)

        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(serve())

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_for_http(f"http://127.0.0.1:{self.port}/-/health", timeout=15.0)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stopped.set)
        self.thread.join(10)


async def centrifuge(port: int, n: int) -> ClientConnection:
    """A Centrifuge client connected as user ``u<n>``, in ``u<n>`` and ``group``."""
    ws = await connect(f"ws://127.0.0.1:{port}/connection/websocket", max_size=2**20)
    token = jwt.encode({"sub": f"u{n}"}, SECRET, algorithm="HS256")
    commands = [
        {"id": 1, "connect": {"token": token}},
        {"id": 2, "subscribe": {"channel": f"u{n}"}},
        {"id": 3, "subscribe": {"channel": "group"}},
    ]
    await ws.send("\n".join(json.dumps(c) for c in commands))
    replies = 0
    while replies < 3:
        replies += str(await ws.recv()).count('"id"')
    return ws


async def round_trip(port: int) -> None:
    """Clients of both kinds connect, get publications, some leave abruptly."""
    raws = [await connect(f"ws://127.0.0.1:{port}/ws?channel=group") for _ in range(CLIENTS)]
    subs = [await centrifuge(port, n) for n in range(CLIENTS)]
    headers = {"Authorization": f"apikey {API_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        for k in range(5):
            answer = await http.post("/api/publish", json={"channel": "group", "data": {"k": k}})
            assert answer.status_code == 200, answer.text
            for n in range(CLIENTS):
                answer = await http.post("/api/publish", json={"channel": f"u{n}", "data": k})
                assert answer.status_code == 200, answer.text
    for ws in raws:
        assert [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(5)] == [
            {"k": k} for k in range(5)
        ]
    for ws in subs:
        got = ""
        while got.count('"push"') < 10:
            got += str(await asyncio.wait_for(ws.recv(), 5))
    for i, ws in enumerate(raws + subs):
        if i % 2:
            await ws.close()
        else:
            ws.transport.abort()  # gone without a close frame
    await asyncio.sleep(0.5)  # let the server notice (nothing to await from outside)


def garbage_by_type() -> collections.Counter[str]:
    gc.collect()
    found = collections.Counter(
        f"{type(o).__module__}.{type(o).__qualname__}"
        for o in gc.garbage
        if type(o).__module__.startswith(OURS)
    )
    gc.garbage.clear()
    return found


@pytest.fixture
def collector_off() -> Iterator[None]:
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
        gc.collect()


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "plain"])
def test_connections_and_publications_leave_no_cycles(collector_off: None, fast_path: bool) -> None:
    with ServerThread(APP_DIR, fast_path=fast_path) as server:
        asyncio.run(round_trip(server.port))  # warm-up: caches, first-use objects
        garbage_by_type()
        for _ in range(ROUNDS):
            asyncio.run(round_trip(server.port))
        found = garbage_by_type()
    assert not found, found.most_common()


def test_the_policy_sets_all_three_thresholds_and_zero_keeps_pythons() -> None:
    before = gc.get_threshold()
    try:
        assert gcpolicy.tune(0) == before
        assert gcpolicy.tune(50_000) == (50_000, gcpolicy.MIDDLE, gcpolicy.OLDEST)
        assert gcpolicy.MIDDLE > 10 and gcpolicy.OLDEST > 10  # rarer than Python's
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize("workers", [1, 2])
def test_realtime_run_freezes_start_up_in_every_worker(
    app_dir: Path, workers: int, request: pytest.FixtureRequest
) -> None:
    """Each serving process (each worker, after its fork) applies the policy once its
    start-up is done, and says so in the log."""
    flags = ["--workers", str(workers), "--gc-threshold", "30000"]
    if workers > 1:  # workers share a broker
        flags += ["--broker", request.getfixturevalue("redis_server").url]
    server = Server(app_dir, *flags).start()
    try:
        wanted = f"garbage collector: thresholds {(30_000, gcpolicy.MIDDLE, gcpolicy.OLDEST)}"
        deadline = time.monotonic() + 10
        while server.log.count(wanted) < workers and time.monotonic() < deadline:
            time.sleep(0.05)  # a worker may log it just after another one answered
        lines = [line for line in server.log.splitlines() if wanted in line]
        assert len(lines) == workers, server.log
        frozen = [int(line.split(", ")[-1].split()[0]) for line in lines]
        assert all(count > 10_000 for count in frozen), lines  # modules, plugins, app
    finally:
        server.stop()
