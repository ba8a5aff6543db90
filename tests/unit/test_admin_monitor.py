"""What the admin page shows (realtime_admin.monitor): rates, lag, disconnects, bounds."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
from quart import Quart

from realtime import create_app, get_host
from realtime_admin import Monitor, top_channels
from realtime_admin.monitor import HISTORY, MAX_DISCONNECTS, MAX_QUERY
from realtime_hub import Disconnect, get_hub

from ..conftest import eventually


@pytest.fixture
async def app() -> AsyncIterator[Quart]:
    app = create_app(settings={"internal_bind": "127.0.0.1:9", "admin_password": "p" * 12})
    async with app.test_app():
        yield app


async def test_deliveries_per_second_come_from_successive_samples(app: Quart) -> None:
    host = get_host(app)
    monitor = Monitor(host)
    stats = get_hub(host).stats
    base = stats.deliveries
    assert monitor.sample(now=1000.0).deliveries_per_second == 0.0
    stats.deliveries = base + 500
    assert monitor.sample(now=1002.0).deliveries_per_second == 250.0
    assert monitor.sample(now=1003.0).deliveries_per_second == 0.0
    for second in range(HISTORY + 50):
        monitor.sample(now=2000.0 + second)
    assert len(monitor.samples) == HISTORY


async def test_the_probe_sees_a_blocked_loop(app: Quart) -> None:
    monitor = Monitor(get_host(app), interval=0.3, probe=0.05)
    monitor.start()
    try:
        await eventually(lambda: monitor.samples, message="a first sample")
        time.sleep(0.25)  # blocks the loop: the probe's sleep wakes that much late
        await eventually(
            lambda: any(s.lag_seconds >= 0.2 for s in monitor.samples),
            message="a sample with the lag",
        )
    finally:
        await monitor.stop()
    assert all(s.lag_seconds < 5 for s in monitor.samples)


async def test_the_snapshot_has_the_newest_disconnects_first_and_bounded(app: Quart) -> None:
    host = get_host(app)
    hub = get_hub(host)
    for i in range(100):
        hub.recent_disconnects.append(Disconnect(1000.0 + i, 1000 + i % 10, f"why {i}", "raw"))
    snapshot = Monitor(host).snapshot()
    disconnects = snapshot["disconnects"]
    assert len(disconnects) == MAX_DISCONNECTS
    assert disconnects[0] == {"time": 1099.0, "code": 1009, "reason": "why 99", "protocol": "raw"}
    assert snapshot["nodes"][0]["name"] == snapshot["node"]
    assert "protocols" in snapshot and "disconnect_codes" in snapshot


def test_top_channels_is_bounded_and_filters() -> None:
    counts = {f"c{i}": i for i in range(5000)}
    top = top_channels(counts)
    assert len(top) == 1000 and top[0] == ("c4999", 4999) and top[-1] == ("c4000", 4000)
    assert top_channels(counts, "C12", limit=3) == [
        ("c1299", 1299),
        ("c1298", 1298),
        ("c1297", 1297),
    ]
    # A longer query is cut to the bound (the route refuses it before).
    assert top_channels({"x" * 200: 1}, "x" * 500) == [("x" * 200, 1)]
    assert MAX_QUERY == 128


async def test_the_broker_is_asked_for_channels_once_a_second_at_most(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_broker import get_broker

    host = get_host(app)
    asked: list[float] = []

    async def cluster_channels() -> dict[str, int]:
        asked.append(time.monotonic())
        return {"news": 3, "chat:lobby": 2}

    monkeypatch.setattr(get_broker(host), "cluster_channels", cluster_channels)
    monitor = Monitor(host)
    first = await monitor.channels("")
    searched = await monitor.channels("LOBBY")
    assert first["channels"] == [["news", 3], ["chat:lobby", 2]] and first["where"] == "cluster"
    assert searched["channels"] == [["chat:lobby", 2]] and searched["total"] == 2
    assert len(asked) == 1
    assert monitor._channels is not None
    monitor._channels = (monitor._channels[0] - 2, *monitor._channels[1:])  # a second on
    await monitor.channels("")
    assert len(asked) == 2
