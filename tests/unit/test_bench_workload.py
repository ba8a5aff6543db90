"""bench/workload_parts.py: the workload's payload, rounds, rates and accounts, no servers.

A subscriber finds its channel's round from a call's first position alone, so these
check that every channel of every call gets consecutive rounds, that a gap or a tail
is counted as lost, and that the calls and the churn are spread as the issue asks.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import workload_parts as W


def test_channel_names_round_trip() -> None:
    assert W.channel_name(W.GROUP, 12) == "group:12"
    assert W.channel_name(W.PERSONAL, 7) == "personal:#7"
    for kind in (W.GROUP, W.PERSONAL):
        assert W.channel_index(W.channel_name(kind, 1499)) == (kind, 1499)
    for bad in ("group:#1", "personal:1", "chat:1", "group:x"):
        with pytest.raises(ValueError, match="not a workload channel"):
            W.channel_index(bad)
    with pytest.raises(ValueError, match="unknown kind"):
        W.channel_name("x", 1)


def test_payload_round_trip() -> None:
    text = W.encode(W.PERSONAL, 14950, 1_765_000_000_123_456_789)
    assert text == "u14950.1765000000123456789"
    assert W.decode(text.encode()) == (W.PERSONAL, 14950, 1_765_000_000_123_456_789)
    for bad in (b"x1.2", b"g1", b"g.2", b"g1.", b"g1.2x", b""):
        with pytest.raises(ValueError, match="not a workload publication"):
            W.decode(bad)
    with pytest.raises(ValueError, match="bad publication"):
        W.encode(W.GROUP, -1, 0)


def test_broadcast_body_is_the_server_apis() -> None:
    body = json.loads(W.broadcast_body(["group:1", "group:2"], "g0.5"))
    assert body == {"channels": ["group:1", "group:2"], "data": "g0.5"}


def test_batches_cover_each_channel_once_a_round() -> None:
    channels, size = 130, 50  # not a multiple: calls cross round boundaries
    seen: dict[int, list[int]] = {c: [] for c in range(channels)}
    position = 0
    for _ in range(40):
        members = W.batch(position, size, channels)
        assert len(set(members)) == size
        for c in members:
            seen[c].append(W.round_of(position, c, channels, size))
        position += size
    for c, rounds in seen.items():
        assert rounds == list(range(len(rounds))), c  # consecutive, from 0
        assert rounds[-1] == W.last_round(c, position, channels)
    with pytest.raises(ValueError, match="not in the call"):
        W.round_of(0, 60, channels, size)  # 60 is not in the call at 0
    with pytest.raises(ValueError, match="a batch of 51"):
        W.batch(0, 51, 50)


def test_last_round_before_and_after_a_channel_is_reached() -> None:
    assert W.last_round(5, 5, 100) == -1
    assert W.last_round(5, 6, 100) == 0
    assert W.last_round(5, 105, 100) == 0
    assert W.last_round(5, 106, 100) == 1


def test_sequence_counts_gaps_duplicates_and_the_tail() -> None:
    seq = W.Sequence()
    assert seq.tail(3) == 0  # nothing seen: not judged here
    for rnd in (4, 5, 8, 8, 7, 9):
        seq.add(rnd)
    assert (seq.first, seq.last, seq.got, seq.lost, seq.ooo) == (4, 9, 6, 2, 2)
    assert seq.tail(9) == 0
    assert seq.tail(12) == 3


def test_plan_halves_the_rate_between_groups_and_personal_channels() -> None:
    p = W.plan(7_500, group_size=10, batch_size=50)
    assert p.group_publications == 375 and p.personal_publications == 3_750
    assert p.group_publications * 10 + p.personal_publications == 7_500
    assert (p.group_calls, p.personal_calls) == (7.5, 75)


def test_due_spreads_calls_evenly() -> None:
    assert W.due(-0.1, 10) == 0
    assert W.due(0.0, 10) == 1  # the first call at once
    assert W.due(0.099, 10) == 1
    assert W.due(0.1, 10) == 2
    assert W.due(60.0, 7.5) == 451
    assert W.due(5, 0) == 0
    starts = [k / 75 for k in range(75)]
    assert [W.due(t, 75) for t in starts] == list(range(1, 76))


def test_churn_times_are_evenly_spaced() -> None:
    times = W.churn_times(60, 50)
    assert len(times) == 3_000
    assert times[0] == 0 and times[1] == pytest.approx(0.02)
    assert times[-1] < 60
    assert W.churn_times(10, 0) == []


def test_histogram_buckets_and_percentiles() -> None:
    h = W.Histogram()
    assert h.percentile(0.5) is None and h.maximum() is None
    for ms in (1.0, 1.0, 1.0, 150.0):
        h.add(int(ms * 1e6))
    assert h.percentile(0.5) == pytest.approx(1.1)  # the 0.1 ms bucket's upper bound
    assert h.percentile(0.99) == pytest.approx(151.0)
    assert h.maximum() == pytest.approx(151.0)
    assert W.Histogram.bucket(-5) == 0
    assert W.Histogram.upper_ms(W.Histogram.bucket(10**12)) == 60_000.0  # past 60 s: the last
    other = W.Histogram()
    other.add(2_000_000)
    h.merge(other)
    assert h.total == 5


def test_http_responses_are_cut_at_content_length() -> None:
    one = b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\n{}"
    buf = bytearray(one + one[:20])
    assert W.http_responses(buf) == [(200, b"{}")]
    buf += one[20:]
    assert W.http_responses(buf) == [(200, b"{}")]
    assert buf == b""
    request = W.http_request("/api/broadcast", b"{}", "k")
    assert request.startswith(b"POST /api/broadcast HTTP/1.1\r\n")
    assert b"X-API-Key: k\r\n" in request and request.endswith(b"\r\n\r\n{}")


def test_a_step_is_held_only_within_bound_with_nothing_lost() -> None:
    assert W.held(150.0, 0, 7_400, 7_500, 200)
    assert not W.held(201.0, 0, 7_500, 7_500, 200)
    assert not W.held(100.0, 1, 7_500, 7_500, 200)
    assert not W.held(100.0, 0, 7_000, 7_500, 200)  # under 95% of the rate
    assert not W.held(None, 0, 0, 7_500, 200)


def test_api_errors_lists_each_channels_error_once() -> None:
    answer = json.dumps(
        {
            "result": {
                "responses": [
                    {"result": {}},
                    {"error": {"code": 100, "message": "internal server error"}},
                    {"error": {"code": 100, "message": "internal server error"}},
                ]
            }
        }
    ).encode()
    assert W.api_errors(answer) == (2, '{"code": 100, "message": "internal server error"}')
    assert W.api_errors(b'{"result":{"responses":[{"result":{}}]}}') == (0, "")
    assert W.api_errors(b"<html>") == (1, "<html>")


class Transport:
    """What a client writes, kept (no socket)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def abort(self) -> None:
        self.written.append(b"<abort>")


def server_frame(text: str) -> bytes:
    data = text.encode()
    assert len(data) < 126
    return bytes([0x81, len(data)]) + data


def unmasked(frame: bytes) -> bytes:
    """A short masked client frame's payload."""
    size, key = frame[1] & 0x7F, frame[2:6]
    assert size < 126
    return bytes(b ^ key[i % 4] for i, b in enumerate(frame[6 : 6 + size]))


def test_client_counts_rounds_latency_and_a_you_may_have_missed() -> None:
    import workload_load as L  # its wsclient import needs bench/ on the path (above)

    async def scenario() -> tuple[L.Load, L.Client, Transport]:
        load = L.Load(L.Config(port=1, clients=100, secret="s", api_key="k"))
        load.window = L.Window(start=0)
        client = L.Client(load, user=23)  # group 2 of 10 groups, personal 23 of 100
        transport = Transport()
        client.transport = transport  # type: ignore[assignment]
        client.upgraded = True
        connect = '{"id":1,"connect":{"client":"c","subs":{"personal:#23":{}}}}'
        client.data_received(server_frame(connect) + server_frame('{"id":2,"subscribe":{}}'))
        assert client.ready.done()
        for position in (0, 10, 30):  # group calls of 10 channels over 10 groups: rounds 0, 1, 3
            data = W.encode(W.GROUP, position, 0)
            push = f'{{"push":{{"channel":"group:2","pub":{{"data":"{data}"}}}}}}'
            client.data_received(server_frame(push))
        unsubscribe = '{"push":{"channel":"group:2","unsubscribe":{"code":2500}}}'
        client.data_received(server_frame(unsubscribe))
        return load, client, transport

    load, client, transport = asyncio.run(scenario())
    assert load.window.delivered == 3 and load.window.hist.total == 3
    assert load.lost == 1  # round 2 never came, handed over when the server said so
    assert load.told == 1 and client.seqs[W.GROUP].got == 0  # rounds start over
    assert json.loads(unmasked(transport.written[-1])) == {
        "id": 3,
        "subscribe": {"channel": "group:2"},
    }  # subscribed again, as an SDK does


def test_a_step_with_a_refused_publication_is_not_held() -> None:
    assert not W.held(50.0, 0, 7_500, 7_500, 200, refused=1)
