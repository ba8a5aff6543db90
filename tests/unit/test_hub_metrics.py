"""The hub's metrics: its running counts, sampled into instruments by their deltas."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime import Telemetry
from realtime.telemetry import Instrument, Spec
from realtime_broker import Publication
from realtime_hub import CloseCode, ConnectionGone, Hub
from realtime_hub.backlog import OverflowPolicy
from realtime_hub.census import MAX_CODES, MAX_REASON, OTHER
from realtime_hub.keepalive import Keepalive
from realtime_hub.metrics import HubMetrics
from realtime_websocket import RawFormat

RAW = RawFormat()


class Recorder:
    """One instrument (or one labelled child) writing what it is told into its exporter."""

    def __init__(self, exporter: RecordingExporter, name: str, values: tuple[str, ...] = ()):
        self.exporter = exporter
        self.name = name
        self.values = values

    def labels(self, *values: str) -> Instrument:
        return Recorder(self.exporter, self.name, values)

    def inc(self, amount: float = 1) -> None:
        self.exporter.calls.append((self.name, self.values, "inc", amount))
        key = (self.name, self.values)
        self.exporter.values[key] = self.exporter.values.get(key, 0) + amount

    def dec(self, amount: float = 1) -> None:
        self.inc(-amount)

    def set(self, value: float) -> None:
        self.exporter.calls.append((self.name, self.values, "set", value))
        self.exporter.values[(self.name, self.values)] = value

    def observe(self, amount: float) -> None:
        self.exporter.calls.append((self.name, self.values, "observe", amount))


class RecordingExporter:
    """An exporter whose instruments record every call, and the value each ends at."""

    def __init__(self) -> None:
        self.specs: list[Spec] = []
        self.calls: list[tuple[str, tuple[str, ...], str, float]] = []
        self.values: dict[tuple[str, tuple[str, ...]], float] = {}

    def make(self, spec: Spec) -> Instrument:
        self.specs.append(spec)
        return Recorder(self, spec.name)

    def value(self, name: str, *labels: str) -> float | None:
        return self.values.get((name, labels))

    def incs(self) -> list[tuple[str, tuple[str, ...], float]]:
        return [(name, labels, amount) for name, labels, op, amount in self.calls if op == "inc"]


class FakeConnection:
    """An ASGI connection; ``reading=False`` stalls sends like a peer that stopped reading."""

    def __init__(self, reading: bool = True) -> None:
        self.received: list[str | bytes] = []
        self.reading = asyncio.Event()
        if reading:
            self.reading.set()
        self.gone = asyncio.Event()
        self.closed: tuple[int, str] | None = None
        #: What an ASGI connection records of the client's leaving (read by the census).
        self.ended: tuple[int, str] | None = None

    async def accept(self) -> None:
        pass

    async def receive(self) -> Any:
        await self.gone.wait()
        raise ConnectionGone

    async def send(self, data: Any) -> None:
        await self.reading.wait()
        self.received.append(data)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed = (code, reason)
        await self.reading.wait()
        self.gone.set()

    def leave(self, code: int, reason: str = "") -> None:
        """The client closes the connection with ``code``."""
        self.ended = (code, reason)
        self.gone.set()


async def settle(condition: Any, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


class Served:
    """Clients served as a protocol plugin serves them: connect, join, serve until gone."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.tasks: list[asyncio.Task[None]] = []

    async def add(
        self, connection: FakeConnection, *channels: str, protocol: str = "raw"
    ) -> FakeConnection:
        before = self.hub.stats.accepted
        self.tasks.append(asyncio.create_task(self._serve(connection, channels, protocol)))
        await settle(lambda: self.hub.stats.accepted == before + 1)
        return connection

    async def _serve(
        self, connection: FakeConnection, channels: tuple[str, ...], protocol: str
    ) -> None:
        client = await self.hub.connect(connection, protocol=protocol)
        assert client is not None
        for channel in channels or ("default",):
            self.hub.join(channel, client, RAW)
        await self.hub.serve(client)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def instrumented(hub: Hub) -> tuple[Telemetry, RecordingExporter]:
    telemetry = Telemetry()
    exporter = RecordingExporter()
    telemetry.install(exporter)
    telemetry.sampler(HubMetrics(hub, telemetry).sample)
    return telemetry, exporter


def frame_size(text: str) -> int:
    """An unmasked server text frame of ``text`` (ASCII, under 126 bytes)."""
    return 2 + len(text)


async def test_gauges_follow_connections_memberships_and_channels() -> None:
    hub = Hub()
    hub.start()
    telemetry, exporter = instrumented(hub)
    served = Served(hub)
    first = await served.add(FakeConnection(), "default", "news")
    await served.add(FakeConnection(), "default")
    await served.add(FakeConnection(), "news", protocol="centrifuge")
    telemetry.sample()
    assert exporter.value("realtime_connections", "raw") == 2
    assert exporter.value("realtime_connections", "centrifuge") == 1
    assert exporter.value("realtime_subscriptions") == 4
    assert exporter.value("realtime_channels") == 2
    assert exporter.value("realtime_handshakes_total", "accepted") == 3

    first.leave(CloseCode.NORMAL, "bye")
    await settle(lambda: len(hub) == 2)
    telemetry.sample()
    assert exporter.value("realtime_connections", "raw") == 1
    assert exporter.value("realtime_subscriptions") == 2
    assert exporter.value("realtime_channels") == 2
    assert exporter.value("realtime_disconnects_total", "1000") == 1
    await served.stop()
    telemetry.sample()
    assert exporter.value("realtime_connections", "raw") == 0  # a protocol seen stays, at 0
    assert exporter.value("realtime_connections", "centrifuge") == 0
    assert exporter.value("realtime_subscriptions") == 0
    assert exporter.value("realtime_channels") == 0


async def test_counters_grow_by_what_the_hub_counted_since_the_last_sample() -> None:
    hub = Hub()
    hub.start()
    telemetry, exporter = instrumented(hub)
    served = Served(hub)
    for _ in range(3):
        await served.add(FakeConnection())
    assert hub.publish("default", Publication("x" * 100)) == 3
    assert hub.publish("nobody", Publication("y")) == 0
    telemetry.sample()
    assert exporter.value("realtime_deliveries_total") == 3
    assert exporter.value("realtime_sent_bytes_total") == 3 * frame_size("x" * 100)
    calls = len(exporter.incs())
    telemetry.sample()  # nothing happened: no counter moves
    assert len(exporter.incs()) == calls
    hub.publish("default", Publication("z" * 10))
    client = next(iter(hub))
    assert hub.send(client, "reply")  # replies are bytes sent too, not deliveries
    telemetry.sample()
    new = exporter.incs()[calls:]
    assert ("realtime_deliveries_total", (), 3) in new
    size = 3 * frame_size("z" * 10) + frame_size("reply")
    assert ("realtime_sent_bytes_total", (), size) in new
    assert exporter.value("realtime_deliveries_total") == 6
    await served.stop()


@pytest.mark.parametrize(("policy", "closes"), [("close", True), ("drop-oldest", False)])
async def test_overflows_count_by_policy_and_the_close_by_its_code(
    policy: OverflowPolicy, closes: bool
) -> None:
    hub = Hub(max_buffer=1000, overflow=policy)
    hub.start()
    telemetry, exporter = instrumented(hub)
    served = Served(hub)
    await served.add(FakeConnection())
    stalled = await served.add(FakeConnection(reading=False))
    for _ in range(30):  # 3,000 bytes, over the 1,000-byte buffer
        hub.publish("default", Publication("x" * 100))
        await asyncio.sleep(0)
    if closes:
        await settle(lambda: len(hub) == 1)
    telemetry.sample()
    overflows = exporter.value("realtime_overflows_total", policy)
    assert overflows is not None and overflows >= 1, policy
    assert overflows == hub.stats.overflows
    if closes:
        assert exporter.value("realtime_disconnects_total", "1008") == 1
        (record,) = hub.recent_disconnects
        assert record.code == CloseCode.POLICY_VIOLATION
        assert "overflow" in record.reason and record.protocol == "raw"
    else:
        assert exporter.value("realtime_disconnects_total", "1008") is None
        assert not hub.recent_disconnects
    stalled.reading.set()
    await served.stop()


async def test_disconnects_by_code_recent_records_and_bounded_labels() -> None:
    hub = Hub()
    hub.start()
    telemetry, exporter = instrumented(hub)
    served = Served(hub)
    kicked = [await served.add(FakeConnection(), protocol="centrifuge") for _ in range(2)]
    for client in list(hub):
        hub.disconnect(client, 3005, "é" * 200)  # a protocol's own code, a long reason
    await settle(lambda: len(hub) == 0)
    assert all(c.closed is not None and c.closed[0] == 3005 for c in kicked)
    telemetry.sample()
    assert exporter.value("realtime_disconnects_total", "3005") == 2
    assert exporter.value("realtime_connections", "centrifuge") == 0
    for record in hub.recent_disconnects:
        assert (record.code, record.protocol) == (3005, "centrifuge")
        assert 0 < len(record.reason.encode()) <= MAX_REASON
        assert set(record.reason) == {"é"}  # cut between characters, not inside one

    # Codes a client makes up count as one label; registered ones it sends, as themselves.
    leaving = [await served.add(FakeConnection()) for _ in range(4 * MAX_CODES)]
    for i, connection in enumerate(leaving):
        connection.leave(4100 + i)
    going = await served.add(FakeConnection())
    going.leave(CloseCode.GOING_AWAY)
    await settle(lambda: len(hub) == 0)
    telemetry.sample()
    assert exporter.value("realtime_disconnects_total", OTHER) == 4 * MAX_CODES
    assert exporter.value("realtime_disconnects_total", "1001") == 1
    assert len(hub.stats.disconnects) <= MAX_CODES
    assert len(hub.recent_disconnects) == 100  # bounded, newest last
    assert hub.recent_disconnects[-1].code == CloseCode.GOING_AWAY
    assert hub.recent_disconnects[-2].code == 4100 + 4 * MAX_CODES - 1

    # The server's own codes fill the labels up to the bound, then are "other" too.
    for i in range(2 * MAX_CODES):
        await served.add(FakeConnection())
        hub.disconnect(next(iter(hub)), 3100 + i, "")
        await settle(lambda: len(hub) == 0)
    telemetry.sample()
    labels = {labels for name, labels, _ in exporter.incs() if name == "realtime_disconnects_total"}
    assert len(labels) <= MAX_CODES
    total = sum(amount for name, _, amount in exporter.incs() if "disconnects" in name)
    assert total == 2 + 4 * MAX_CODES + 1 + 2 * MAX_CODES  # every one counted, once
    await served.stop()


async def test_without_an_exporter_sampling_costs_nothing_and_fails_nothing() -> None:
    hub = Hub()
    hub.start()
    telemetry = Telemetry()
    telemetry.sampler(HubMetrics(hub, telemetry).sample)
    served = Served(hub)
    await served.add(FakeConnection())
    hub.publish("default", Publication("x"))
    telemetry.sample()
    assert not telemetry.enabled
    assert hub.stats.deliveries == 1 and hub.stats.accepted == 1
    await served.stop()


class SilentSocket:
    """What the keepalive needs of a taken-over socket whose peer stopped answering."""

    client = 7

    def __init__(self) -> None:
        self.pinged_at: float | None = 0.0  # pinged long ago, nothing heard since
        self.ended: tuple[int, str] | None = None
        self.aborted = False

    def abort(self) -> None:
        self.aborted = True

    def open(self) -> bool:
        return True


async def test_a_silent_peer_dropped_by_the_keepalive_is_recorded_as_such() -> None:
    keepalive = Keepalive(interval=10.0, timeout=0.01)
    silent = SilentSocket()
    keepalive.sockets.add(silent)  # type: ignore[arg-type]
    keepalive.start()
    try:
        await settle(lambda: silent.aborted)
    finally:
        keepalive.stop()
    assert silent.ended == (CloseCode.ABNORMAL, "no answer to a ping")
    assert keepalive.dropped == 1
