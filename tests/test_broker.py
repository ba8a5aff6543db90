"""Brokers: choosing one by URL, the memory broker's thread hand-off, the Redis envelope."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from realtime import PluginError, create_app, get_host
from realtime_broker import DEFAULT_CHANNEL, MemoryBroker, get_broker
from realtime_broker.redis import RedisBroker, decode, encode


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
    with pytest.raises(PluginError, match=r"no broker for 'nats'.*memory://.*redis://"):
        create_app(tmp_path, settings={"broker": "nats://127.0.0.1"})


def test_several_workers_refuse_the_memory_broker(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match=r"--workers 2 .* pass --broker redis://"):
        create_app(tmp_path, settings={"workers": 2})
    create_app(tmp_path, settings={"workers": 2, "broker": "redis://127.0.0.1:1/0"})


async def test_memory_broker_hands_broadcasts_from_threads_to_the_loop_in_order() -> None:
    broker = MemoryBroker("memory://", {})
    received: list[str | bytes] = []

    def deliver(data: str | bytes) -> int:
        assert broker.on_loop_thread()  # delivered on the loop, never in the script's thread
        received.append(data)
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


@pytest.mark.parametrize("data", ["héllo", "", b"\x00\xff", b""])
def test_the_redis_envelope_round_trips(data: str | bytes) -> None:
    decoded = decode(encode(data))
    assert decoded == data
    assert type(decoded) is type(data)


@pytest.mark.parametrize(
    "raw",
    [b"hello", b"", b'{"event": "x"}', b"realtime/1 ", b"realtime/1 x123", b"realtime/1 t\xff"],
)
def test_payloads_realtime_did_not_publish_are_recognised(raw: bytes) -> None:
    assert decode(raw) is None
