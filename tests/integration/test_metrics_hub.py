"""The hub's metrics on a real server: raw /ws clients and broadcast(), read from /metrics.

The server runs as a user starts it, with the internal listener on; the test opens
raw WebSocket clients, broadcasts through the drop-in ``send.py``, closes clients with
codes of their own, and checks that one scrape of ``/metrics`` says what it did: the
connections and memberships that are, and the deliveries, bytes, publications and
disconnects that counters grew by. Both fan-out paths (taken-over sockets and plain
ASGI) count the same.
"""

from __future__ import annotations

import os
import signal
from contextlib import AsyncExitStack
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.protocol import State

from ..conftest import FAN_OUT_MODES, RedisServer, Server, eventually, reserve_port

Values = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(internal: str) -> Values:
    """Every sample of one scrape, by name and labels."""
    async with httpx.AsyncClient() as http:
        response = await http.get(internal + "/metrics", timeout=5)
    assert response.status_code == 200, response.text
    values: Values = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: Values, name: str, **labels: str) -> float:
    return values.get((name, tuple(sorted(labels.items()))), 0.0)


def start(app_dir: Path, *args: str) -> tuple[Server, str]:
    server = Server(app_dir, *args, internal=True).start()
    return server, server.internal_url


def frame_size(text: str) -> int:
    """A server's WebSocket text frame of ``text`` (ASCII, under 126 bytes): 2 + payload."""
    return 2 + len(text)


@pytest.mark.parametrize("mode", list(FAN_OUT_MODES))
async def test_connections_deliveries_and_disconnects_reach_metrics(
    app_dir: Path, mode: str
) -> None:
    server, internal = start(app_dir, *FAN_OUT_MODES[mode])
    try:
        async with AsyncExitStack() as stack:
            defaults: list[ClientConnection] = [
                await stack.enter_async_context(connect(server.ws_url)) for _ in range(3)
            ]
            news = await stack.enter_async_context(connect(server.ws_url + "?channel=news"))

            async def connected() -> Values | None:
                values = await scrape(internal)
                return (
                    values if value(values, "realtime_connections", protocol="raw") == 4 else None
                )

            before = await eventually(connected, message="four raw connections")
            assert isinstance(before, dict)
            assert value(before, "realtime_handshakes_total", result="accepted") == 4
            assert value(before, "realtime_subscriptions") == 4
            assert value(before, "realtime_channels") == 2

            async with httpx.AsyncClient() as http:
                for i in range(5):
                    response = await http.get(f"{server.url}/send.py?message=hello{i}", timeout=5)
                    assert response.text.strip() == "Sent to 3 clients.", response.text
            for ws in defaults:
                assert [await ws.recv() for _ in range(5)] == [f"hello{i}" for i in range(5)]

            after = await scrape(internal)
            grown = {
                name: value(after, name, **labels) - value(before, name, **labels)
                for name, labels in (
                    ("realtime_deliveries_total", {}),
                    ("realtime_sent_bytes_total", {}),
                    ("realtime_publications_total", {"source": "script"}),
                )
            }
            assert grown == {
                "realtime_deliveries_total": 15,
                "realtime_sent_bytes_total": 15 * frame_size("hello0"),
                "realtime_publications_total": 5,
            }

            await defaults[0].close(code=1000, reason="done")
            await defaults[1].close(code=4321, reason="a code of its own")  # no label of its own

            async def two_left() -> Values | None:
                values = await scrape(internal)
                return (
                    values if value(values, "realtime_connections", protocol="raw") == 2 else None
                )

            gone = await eventually(two_left, message="two clients gone")
            assert isinstance(gone, dict)
            assert value(gone, "realtime_disconnects_total", code="1000") == 1
            assert value(gone, "realtime_disconnects_total", code="other") == 1
            assert not any(
                name == "realtime_disconnects_total" and ("code", "4321") in labels
                for name, labels in gone
            )
            assert value(gone, "realtime_subscriptions") == 2
            assert value(gone, "realtime_channels") == 2
            await news.close()
            await eventually(
                lambda: _count(internal, "realtime_channels", 1), message="news vacated"
            )
    finally:
        server.stop()


async def _count(internal: str, name: str, expected: float) -> bool:
    return value(await scrape(internal), name) == expected


async def test_two_workers_sum_their_connections_and_a_killed_one_leaves_the_gauge(
    app_dir: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    temp = tmp_path / "temp"  # where the supervisor makes PROMETHEUS_MULTIPROC_DIR
    temp.mkdir()
    port = reserve_port()
    server = Server(
        app_dir,
        "--internal-bind", f"127.0.0.1:{port}",
        "--workers", "2", "--broker", redis_server.url,
        env={"TMPDIR": str(temp)},
    ).start()  # fmt: skip
    internal = f"http://127.0.0.1:{port}"
    try:
        async with AsyncExitStack() as stack:
            # Sixteen connections: the kernel leaves one worker without any 1 time in 2^15.
            clients = [await stack.enter_async_context(connect(server.ws_url)) for _ in range(16)]

            async def connections(expected: int) -> Values | None:
                values = await scrape(internal)  # each worker's latest sample, summed
                found = value(values, "realtime_connections", protocol="raw")
                return values if found == expected else None

            await eventually(lambda: connections(16), message="both workers' clients summed")
            async with httpx.AsyncClient() as http:
                for i in range(3):
                    response = await http.get(f"{server.url}/send.py?message=m{i}", timeout=5)
                    assert response.status_code == 200, response.text
            for ws in clients:
                assert [await ws.recv() for _ in range(3)] == ["m0", "m1", "m2"]

            async def delivered() -> bool:
                values = await scrape(internal)
                return (
                    value(values, "realtime_deliveries_total") == 48
                    and value(values, "realtime_publications_total", source="script") == 3
                )

            await eventually(delivered, message="both workers' deliveries summed")

            memory = "process_resident_memory_bytes"
            pids = {labels for name, labels in await scrape(internal) if name == memory}
            assert len(pids) == 2, pids
            os.kill(int(dict(sorted(pids)[0])["pid"]), signal.SIGKILL)

            async def dropped() -> bool:
                open_ = sum(ws.state is State.OPEN for ws in clients)
                values = await scrape(internal)
                found = value(values, "realtime_connections", protocol="raw")
                # The dead worker's gauge goes with it; its counts stay in the totals.
                return (
                    0 < open_ < 16
                    and found == open_
                    and value(values, "realtime_deliveries_total") == 48
                )

            await eventually(dropped, timeout=15, message="the dead worker's connections gone")
    finally:
        server.stop()
