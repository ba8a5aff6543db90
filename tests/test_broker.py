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
    EMPTY_EPOCH,
    MAX_INFO_SIZE,
    BrokerUnavailable,
    MemoryBroker,
    Publication,
    get_broker,
)
from realtime_broker.redis import (
    MAGIC,
    Drop,
    Place,
    RedisBroker,
    Sequence,
    Tally,
    Verdict,
    decode,
    encode,
)

from .conftest import RedisServer


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


@pytest.mark.parametrize(
    "publication",
    [
        Publication("héllo"),
        Publication(""),
        Publication(b"\x00\xff"),
        Publication(b""),
        Publication('{"a": [1, "é"]}', json=True),
        Publication("null", json=True, info='{"user":"42","client":"c1"}'),
        Publication(b"\x00 12 x", info="é" * 100),
        Publication("t5 hello", info=""),
    ],
)
def test_the_redis_envelope_round_trips(publication: Publication) -> None:
    # Redis stamps magic, epoch and sequence in front of what the publisher sends.
    got = decode(MAGIC + b"ab12cd34 7 " + encode(publication))
    assert got == Publication(
        publication.data, publication.json, publication.info, epoch="ab12cd34", offset=7
    )
    assert isinstance(got, Publication)
    assert type(got.data) is type(publication.data)


@pytest.mark.parametrize(
    "raw",
    [
        b"hello",
        b"",
        b'{"event": "x"}',
        b"realtime/2 ",
        b"realtime/2 ep 12",
        b"realtime/2 ep x t123",
        b"realtime/2 ep 3 x123",
        b"realtime/2 ep 3 t\xff",
        b"realtime/2 ep 3 j\xff",
        b"realtime/1 ab12cd34 3 thello",  # the envelope before JSON and info
        # Bounded before anything is converted: int() of 4,301 digits raises in Python.
        b"realtime/2 ab12cd34 " + b"9" * 5000 + b" thello",
        b"realtime/2 ab12cd34 " + b"1" * 20 + b" thello",  # beyond Redis's 64-bit counter
        b"realtime/2 ab12cd34 -3 thello",
        b"realtime/2 ab12cd34 +3 thello",
        b"realtime/2 " + b"e" * 33 + b" 3 thello",  # not an epoch realtime makes
        b"realtime/2 ab.cd 3 thello",
        b"realtime/2 ab12cd34 \xd9\xa3 thello",  # a digit, but not an ASCII one
        # The publisher's info: its length is a few ASCII digits, and it must be there.
        b"realtime/2 ab12cd34 3 T",
        b"realtime/2 ab12cd34 3 T5",
        b"realtime/2 ab12cd34 3 Tx hello",
        b"realtime/2 ab12cd34 3 T-1 hello",
        b"realtime/2 ab12cd34 3 T" + b"9" * 5000 + b" hello",
        b"realtime/2 ab12cd34 3 T9 hello",  # shorter than it says
        b"realtime/2 ab12cd34 3 T2 \xff\xfehello",
        b"realtime/2 ab12cd34 3 X2 {}hello",
    ],
)
def test_payloads_realtime_did_not_publish_are_recognised(raw: bytes) -> None:
    assert decode(raw) is Drop.FOREIGN


def test_the_size_limits_apply_to_the_body_and_to_the_info_on_receipt() -> None:
    head = MAGIC + b"ab12cd34 7 "
    assert isinstance(decode(head + encode(Publication("x" * 100)), 100), Publication)
    assert decode(head + encode(Publication("x" * 101)), 100) is Drop.OVERSIZED
    assert decode(head + encode(Publication("é" * 51)), 100) is Drop.OVERSIZED  # bytes, not chars
    # The info does not count against the body's limit, but has its own.
    big_info = Publication("x" * 100, info="i" * MAX_INFO_SIZE)
    assert isinstance(decode(head + encode(big_info), 100), Publication)
    forged = head + b"T%d " % (MAX_INFO_SIZE + 1) + b"i" * (MAX_INFO_SIZE + 1) + b"x"
    assert decode(forged, 100) is Drop.OVERSIZED
    # The publisher is refused first, so nobody drops what it was told went out.
    with pytest.raises(ValueError, match="over the 100-byte limit"):
        encode(Publication("x" * 101), 100)


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


E1, E2 = "e1e1e1e1", "e2e2e2e2"


def delivered(sequence: Sequence, epoch: str, *numbers: int) -> None:
    for n in numbers:
        sequence.delivered("c", epoch, n, hash(f"message {n}"))


def test_only_the_next_number_is_delivered_without_asking_redis() -> None:
    sequence = Sequence()
    assert sequence.place("c", E1, 1) is Place.OFF  # nothing known yet
    delivered(sequence, E1, 5)
    assert sequence.place("c", E1, 6) is Place.NEXT
    assert sequence.place("c", E1, 9) is Place.OFF  # a gap, or a forged jump
    assert sequence.place("c", E1, 10**12) is Place.OFF
    assert sequence.place("c", E2, 6) is Place.OFF  # another epoch
    assert sequence.place("c", E1, 5) is Place.AGAIN  # delivered a moment ago
    assert sequence.place("c", E1, 2) is Place.OFF  # never seen here


def test_when_redis_has_no_epoch_the_first_number_of_any_new_one_is_next() -> None:
    sequence = Sequence()
    assert sequence.check("c", None, None) == 0  # a fresh Redis with nothing published
    assert sequence.position["c"] == (EMPTY_EPOCH, 0)
    assert sequence.place("c", E1, 1) is Place.NEXT
    assert sequence.place("c", E1, 2) is Place.OFF
    delivered(sequence, E1, 1)
    assert sequence.place("c", E1, 2) is Place.NEXT


def test_a_number_beyond_redis_counter_is_not_believed() -> None:
    sequence = Sequence()
    delivered(sequence, E1, 5)
    truth = {"c": (E1, 6)}
    assert sequence.judge("c", E1, 10**12, truth, []) == (Verdict.BEYOND, 0)
    assert sequence.judge("c", E1, 7, truth, []) == (Verdict.BEYOND, 0)
    assert sequence.judge("c", E2, 1, truth, []) == (Verdict.FOREIGN_EPOCH, 0)
    assert sequence.judge("c", E1, 3, {"c": (None, None)}, []) == (Verdict.FOREIGN_EPOCH, 0)
    assert sequence.position["c"] == (E1, 5)  # none of it moved this process


def test_a_gap_redis_vouches_for_is_missed_unless_the_numbers_before_it_come_after() -> None:
    sequence = Sequence()
    delivered(sequence, E1, 5)
    truth = {"c": (E1, 9)}
    assert sequence.judge("c", E1, 8, truth, []) == (Verdict.ACCEPT, 2)  # 6 and 7 missed
    # Redis delivers in order: an 8 ahead of 6 was not stamped by Redis.
    later = [
        ("c", Publication("x", epoch=E1, offset=6)),
        ("c", Publication("y", epoch=E1, offset=7)),
    ]
    assert sequence.judge("c", E1, 8, truth, later) == (Verdict.OUT_OF_ORDER, 0)
    assert (
        sequence.judge("c", E1, 8, truth, [("other", Publication("x", epoch=E1, offset=6))])[0]
        is Verdict.ACCEPT
    )


def test_a_new_epoch_redis_vouches_for_counts_what_it_numbered_before() -> None:
    sequence = Sequence()
    delivered(sequence, E1, 5)
    assert sequence.judge("c", E2, 3, {"c": (E2, 3)}, []) == (Verdict.ACCEPT, 2)


def test_numbers_redis_had_issued_when_last_asked_are_stale() -> None:
    sequence = Sequence()
    truth = {"c": (E1, 50)}
    sequence.confirm(truth, ["c"])  # a check whose barrier completed: up to 50 all arrived
    delivered(sequence, E1, 50)
    assert sequence.place("c", E1, 3) is Place.OFF  # not among the recent numbers here
    assert sequence.judge("c", E1, 3, truth, []) == (Verdict.STALE, 0)
    # The counter's key was evicted or reset: Redis numbers from 1 again.
    assert sequence.judge("c", E1, 2, {"c": (E1, 2)}, []) == (Verdict.RENUMBERED, 1)
    assert sequence.check("c", E1, 2) == 2  # and if none of the new numbers arrived
    assert sequence.position["c"] == (E1, 2)


def test_a_burst_of_forged_next_numbers_cannot_make_genuine_broadcasts_stale() -> None:
    sequence = Sequence()
    sequence.confirm({"c": (E1, 10)}, ["c"])
    delivered(sequence, E1, 10)
    for n in range(11, 11 + 3000):  # each one the next number: delivered unasked
        assert sequence.place("c", E1, n) is Place.NEXT
        sequence.delivered("c", E1, n, hash("forged"))
    # The genuine 11 is behind this process now, and beyond what it remembers...
    assert sequence.place("c", E1, 11) is Place.OFF
    # ...but Redis issued it after it was last asked: new, so delivered.
    truth = {"c": (E1, 11)}
    assert sequence.judge("c", E1, 11, truth, []) == (Verdict.BEHIND, 0)
    assert sequence.check("c", E1, 11) == 0  # and nobody is told they missed anything
    sequence.confirm(truth, ["c"])
    assert sequence.judge("c", E1, 11, truth, []) == (Verdict.STALE, 0)  # a replay now


def test_a_second_different_message_under_a_delivered_number_is_delivered_too() -> None:
    # A forger who wins the race to the next number must not make the genuine one stale.
    sequence = Sequence()
    delivered(sequence, E1, 5)
    sequence.delivered("c", E1, 6, hash("forged"))
    assert sequence.place("c", E1, 6) is Place.AGAIN
    assert sequence.again("c", 6, hash("genuine"))
    sequence.delivered("c", E1, 6, hash("genuine"))
    assert not sequence.again("c", 6, hash("genuine"))  # an exact replay is not
    assert sequence.position["c"] == (E1, 6)
    assert sequence.place("c", E1, 7) is Place.NEXT


def test_after_resubscribing_what_redis_numbered_but_never_arrived_is_missed() -> None:
    sequence = Sequence()
    delivered(sequence, E1, 10)
    assert sequence.check("c", E1, 10) == 0  # nothing published meanwhile
    assert sequence.check("c", E1, 13) == 3
    assert sequence.place("c", E1, 12) is Place.OFF  # counted as missed: never delivered late
    assert sequence.place("c", E1, 14) is Place.NEXT
    assert sequence.check("c", E2, 2) == 2  # a new epoch with two messages in it
    assert sequence.check("c", None, None) == 0  # Redis restarted empty: nothing to compare


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
