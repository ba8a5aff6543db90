"""Several workers and several hosts over real Redis, and what happens when parts fail."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..conftest import RedisServer, Server, start_caddy

#: A drop-in script reporting which process answered and how many clients it holds.
WHOAMI = """\
import os
from realtime_hub import get_hub
from realtime import current_host
print(os.getpid(), len(get_hub(current_host())))
"""


@pytest.fixture
def cluster_app(app_dir: Path) -> Path:
    (app_dir / "whoami.py").write_text(WHOAMI)
    return app_dir


def worker_server(app_dir: Path, redis: RedisServer, workers: int = 2) -> Server:
    return Server(app_dir, "--workers", str(workers), "--broker", redis.url)


async def clients(url: str, n: int) -> list[ClientConnection]:
    return [await connect(url) for _ in range(n)]


async def local_counts(base_url: str, attempts: int = 60) -> dict[int, int]:
    """Ask whoami.py often enough to hear from every worker behind one port."""
    counts: dict[int, int] = {}
    async with httpx.AsyncClient() as http:
        for _ in range(attempts):
            # A fresh connection each time, so the kernel can pick another worker.
            response = await http.get(f"{base_url}/whoami.py", headers={"Connection": "close"})
            pid, count = map(int, response.text.split())
            counts[pid] = count
    return counts


@pytest.fixture
async def workers(cluster_app: Path, redis_server: RedisServer) -> AsyncIterator[Server]:
    server = worker_server(cluster_app, redis_server).start()
    yield server
    server.stop()


async def test_every_client_of_every_worker_gets_every_broadcast_in_one_order(
    workers: Server,
) -> None:
    connected = await clients(workers.ws_url, 12)
    try:
        counts = await local_counts(workers.url)
        assert len(counts) == 2, counts  # two workers answered...
        assert sum(counts.values()) == 12  # ...and hold the clients between them
        assert all(counts.values()), counts  # SO_REUSEPORT spread them
        async with httpx.AsyncClient() as http:
            # Concurrent scripts, on whichever worker each request lands.
            responses = await asyncio.gather(
                *(
                    http.get(f"{workers.url}/send.py", params={"message": f"m{i}"})
                    for i in range(30)
                )
            )
        assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
        seen = [[await asyncio.wait_for(ws.recv(), 5) for _ in range(30)] for ws in connected]
        assert sorted(seen[0]) == sorted(f"m{i}" for i in range(30))
        assert all(order == seen[0] for order in seen)  # one order for everyone
        await asyncio.sleep(1.2)  # a heartbeat: every worker has reported its clients
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{workers.url}/send.py", params={"message": "count"})
        assert response.text.strip() == "Sent to 12 clients."
    finally:
        for ws in connected:
            await ws.close()


def test_several_workers_with_the_memory_broker_refuse_to_start(cluster_app: Path) -> None:
    server = Server(cluster_app, "--workers", "2")
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert "--workers 2 needs a broker shared by every worker" in server.log
    assert "--broker redis://" in server.log


async def test_redis_down_gives_503_quickly_clients_stay_and_it_recovers_alone(
    workers: Server, redis_server: RedisServer
) -> None:
    connected = await clients(workers.ws_url, 4)
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            assert (await http.get(f"{workers.url}/send.py?message=before")).status_code == 200
            redis_server.stop()
            started = time.monotonic()
            response = await http.get(f"{workers.url}/send.py?message=lost")
            assert response.status_code == 503
            assert "unavailable" in response.text
            assert time.monotonic() - started < 1.5  # --broker-timeout is 1 s
            for ws in connected:  # still connected
                assert ws.state.name == "OPEN"
            await asyncio.sleep(1.0)
            redis_server.start()
            deadline = time.monotonic() + 15
            while (await http.get(f"{workers.url}/send.py?message=probe")).status_code != 200:
                assert time.monotonic() < deadline, "broadcasts never came back"
                await asyncio.sleep(0.2)
            assert (await http.get(f"{workers.url}/send.py?message=after")).status_code == 200
        # A worker that resubscribed after another one may have missed probes sent in
        # between: its clients are then closed with 1012, never left believing they saw
        # everything. The others get every broadcast that was accepted.
        for ws in connected:
            received: list[str | bytes] = []
            try:
                while not received or received[-1] != "after":
                    received.append(await asyncio.wait_for(ws.recv(), 5))
            except ConnectionClosed:
                assert ws.close_code == 1012, (ws.close_code, received)
                continue
            assert received[0] == "before"
            assert "lost" not in received  # the failed broadcast reached nobody
            assert set(received[1:-1]) <= {"probe"}
    finally:
        for ws in connected:
            await ws.close()


async def test_a_killed_worker_is_replaced_and_the_other_workers_clients_notice_nothing(
    workers: Server,
) -> None:
    connected = await clients(workers.ws_url, 12)
    try:
        counts = await local_counts(workers.url)
        assert len(counts) == 2
        victim = min(counts)
        os.kill(victim, signal.SIGKILL)
        await asyncio.sleep(0.5)
        async with httpx.AsyncClient() as http:
            response = await http.get(f"{workers.url}/send.py?message=survivors")
        assert response.status_code == 200
        survivors, dropped = 0, 0
        for ws in connected:
            try:
                assert await asyncio.wait_for(ws.recv(), 5) == "survivors"
                survivors += 1
            except ConnectionClosed:
                dropped += 1
        assert dropped == counts[victim]
        assert survivors == 12 - counts[victim]
        # The dropped clients reconnect (as the page does) and are served again.
        await clients(workers.ws_url, dropped)
        counts_after = await local_counts(workers.url)
        assert victim not in counts_after
        assert len(counts_after) == 2  # the supervisor started a replacement
    finally:
        for ws in connected:
            await ws.close()
    assert "died" in workers.log


async def test_a_message_that_is_not_ours_is_ignored_and_logged(
    workers: Server, redis_server: RedisServer
) -> None:
    async with connect(workers.ws_url) as ws, httpx.AsyncClient() as http:
        redis_server.cli("PUBLISH", "realtime:channel:default", "hello from another tool")
        response = await http.get(f"{workers.url}/send.py?message=ours")
        assert response.status_code == 200
        assert await asyncio.wait_for(ws.recv(), 5) == "ours"
    assert "that realtime did not publish" in workers.log


async def test_sigterm_closes_every_workers_clients_with_1001_and_exits_0(
    cluster_app: Path, redis_server: RedisServer
) -> None:
    server = worker_server(cluster_app, redis_server).start()
    connected = await clients(server.ws_url, 6)
    assert server.process is not None
    process = server.process
    process.send_signal(signal.SIGTERM)
    for ws in connected:
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1001
    assert await asyncio.to_thread(process.wait, 15) == 0


async def test_two_hosts_behind_caddy_share_one_redis(
    cluster_app: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    hosts = [Server(cluster_app, "--broker", redis_server.url).start() for _ in range(2)]
    caddy, caddy_port = start_caddy(
        hosts[0].port,
        tmp_path / "caddy-cluster.log",
        config="deploy/Caddyfile.cluster",
        extra_env={"REALTIME_UPSTREAM_2": f"127.0.0.1:{hosts[1].port}"},
    )
    try:
        behind = await clients(f"ws://127.0.0.1:{caddy_port}/ws", 8)
        direct = [await connect(host.ws_url) for host in hosts]
        counts = [next(iter((await local_counts(h.url, 1)).values())) for h in hosts]
        assert sum(counts) == 10
        assert all(c >= 2 for c in counts), counts  # Caddy spread the clients over both
        await asyncio.sleep(1.2)
        async with httpx.AsyncClient() as http:
            for host in hosts:  # a broadcast through either host reaches all of them
                response = await http.get(f"{host.url}/send.py", params={"message": host.url})
                assert response.text.strip() == "Sent to 10 clients."
            response = await http.get(f"http://127.0.0.1:{caddy_port}/send.py?message=caddy")
            assert response.status_code == 200
        for ws in behind + direct:
            got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
            assert got == [hosts[0].url, hosts[1].url, "caddy"]
            await ws.close()
    finally:
        caddy.terminate()
        caddy.wait(10)
        for host in hosts:
            host.stop()
