"""Brokers: choosing one by URL, the memory broker's thread hand-off, the Redis envelope."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from realtime import PluginError, create_app, get_host
from realtime_broker import DEFAULT_CHANNEL, MemoryBroker, get_broker
from realtime_broker.redis import MAGIC, Envelope, RedisBroker, Sequence, decode, encode


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
    # Redis stamps magic, epoch and sequence in front of what the publisher sends.
    envelope = decode(MAGIC + b"ab12cd34 7 " + encode(data))
    assert envelope == Envelope(b"ab12cd34", 7, data)
    assert envelope is not None
    assert type(envelope.data) is type(data)


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b"",
        b'{"event": "x"}',
        b"realtime/1 ",
        b"realtime/1 ep 12",
        b"realtime/1 ep x t123",
        b"realtime/1 ep 3 x123",
        b"realtime/1 ep 3 t\xff",
    ],
)
def test_payloads_realtime_did_not_publish_are_recognised(raw: bytes) -> None:
    assert decode(raw) is None


def test_a_gap_in_the_sequence_is_counted_as_missed() -> None:
    sequence = Sequence()
    assert sequence.advance("c", b"e1", 5) == (0, True)  # where this process came in
    assert sequence.advance("c", b"e1", 6) == (0, True)
    assert sequence.advance("c", b"e1", 9) == (2, True)  # 7 and 8 never arrived
    assert sequence.advance("c", b"e2", 3) == (2, True)  # Redis restarted: 1 and 2 missed
    assert sequence.advance("c", b"e2", 4) == (0, True)


def test_after_resubscribing_what_redis_numbered_but_never_arrived_is_missed() -> None:
    sequence = Sequence()
    sequence.advance("c", b"e1", 10)
    assert sequence.check("c", b"e1", 10) == 0  # nothing published meanwhile
    assert sequence.check("c", b"e1", 13) == 3
    # Those three were counted; if they show up late they are not delivered.
    assert sequence.advance("c", b"e1", 12) == (0, False)
    assert sequence.advance("c", b"e1", 14) == (0, True)
    assert sequence.check("c", b"e9", 2) == 2  # a new epoch with two messages in it
    assert sequence.check("c", None, None) == 0  # a fresh Redis with nothing published
