"""Brokers: choosing one by URL, the memory broker's thread hand-off, the Redis envelope."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from realtime import PluginError, create_app, get_host
from realtime_broker import (
    DEFAULT_CHANNEL,
    MAX_INFO_SIZE,
    BrokerUnavailable,
    MemoryBroker,
    Publication,
    get_broker,
)
from realtime_broker.redis import (
    RedisBroker,
    Tally,
)

from ..conftest import RedisServer


def test_the_default_broker_is_memory(tmp_path: Path) -> None:
    broker = get_broker(get_host(create_app(tmp_path)))
    assert isinstance(broker, MemoryBroker)


def test_brokers_are_chosen_by_url_scheme(tmp_path: Path) -> None:
    app = create_app(tmp_path, settings={"broker": "redis://127.0.0.1:1/0"})
    broker = get_broker(get_host(app))
    assert isinstance(broker, RedisBroker)
    assert broker.describe() == "redis://127.0.0.1:1/0"


def test_credentials_never_reach_logs_or_errors(tmp_path: Path) -> None:
    app = create_app(tmp_path, settings={"broker": "redis://user:s3cret@127.0.0.1:1/0"})
    assert get_broker(get_host(app)).describe() == "redis://127.0.0.1:1/0"


def test_an_unknown_scheme_names_the_installed_ones(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"no broker for 'kafka'.*memory://.*nats://.*redis://"):
        create_app(tmp_path, settings={"broker": "kafka://127.0.0.1"})


def test_several_workers_refuse_the_memory_broker(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"--workers 2 .* pass --broker redis://"):
        create_app(tmp_path, settings={"workers": 2})
    create_app(tmp_path, settings={"workers": 2, "broker": "redis://127.0.0.1:1/0"})


async def test_memory_broker_hands_broadcasts_from_threads_to_the_loop_in_order() -> None:
    broker = MemoryBroker("memory://", {})
    received: list[str | bytes] = []

    def deliver(publication: Publication) -> int:
        assert broker.on_loop_thread()  # delivered on the loop, never in the script's thread
        received.append(publication.data)
        return 1

    broker.subscribe(DEFAULT_CHANNEL, deliver)
    await broker.start()
    results: list[int] = []

    def script(n: int) -> None:
        for i in range(25):
            results.append(broker.publish_sync(DEFAULT_CHANNEL, f"t{n}-{i}"))

    threads = [threading.Thread(target=script, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    await asyncio.to_thread(lambda: [t.join() for t in threads])
    assert results == [1] * 100
    for n in range(4):
        mine = [m for m in received if str(m).startswith(f"t{n}-")]
        assert mine == [f"t{n}-{i}" for i in range(25)]  # each script's order kept
    await broker.close()


async def test_publications_are_checked_the_same_by_every_broker(redis_server: RedisServer) -> None:
    settings = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 65536}
    for broker in (MemoryBroker("memory://", {}), RedisBroker(redis_server.url, settings)):
        broker.subscribe("c", lambda publication: 1, count=lambda: 1)
        await broker.start()
        try:
            with pytest.raises(TypeError, match="JSON publication's data is the document's text"):
                await broker.publish("c", Publication(b"{}", json=True))
            with pytest.raises(ValueError, match="info is over"):
                await broker.publish("c", Publication("x", info="é" * MAX_INFO_SIZE))
            assert await broker.publish("c", Publication("x", info="é" * (MAX_INFO_SIZE // 2)))
        finally:
            await broker.close()


async def test_a_loop_that_does_not_take_a_broadcast_in_time_is_a_503_and_sends_nothing() -> None:
    broker = MemoryBroker("memory://", {})
    received: list[str | bytes] = []
    broker.subscribe(DEFAULT_CHANNEL, lambda publication: received.append(publication.data) or 1)
    await broker.start()
    broker.handoff_timeout = 0.2

    def script() -> BaseException | int:
        try:
            return broker.publish_sync(DEFAULT_CHANNEL, "late")
        except Exception as exc:
            return exc

    thread = asyncio.get_running_loop().run_in_executor(None, script)
    time.sleep(0.6)  # the loop is busy (blocked) for longer than the hand-off allows
    outcome = await thread
    assert isinstance(outcome, BrokerUnavailable), outcome
    assert outcome.status == 503
    await asyncio.sleep(0.05)  # the withdrawn hand-off has run by now: it delivered nothing
    assert received == []
    await broker.close()


def test_dropped_messages_are_counted_and_logged_without_flooding(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("test.tally")
    tally = Tally(logger, every=0.2)
    with caplog.at_level(logging.WARNING, logger="test.tally"):
        for _ in range(1000):
            tally.add("bad", "ignored message(s) that were bad")
        assert len(caplog.records) == 1  # the first, at once
        tally.flush()
        assert len(caplog.records) == 1
        time.sleep(0.25)
        tally.flush()
    assert tally.counts["bad"] == 1000
    assert [r.getMessage() for r in caplog.records] == [
        "ignored message(s) that were bad: 1 since the last report, 1 in all",
        "ignored message(s) that were bad: 999 since the last report, 1000 in all",
    ]
