"""The one rate limiter (realtime.rate): a GCRA clock, bursts, refill, rate 0. No sockets."""

from __future__ import annotations

import pytest

from realtime.rate import Bucket, Rate


def test_a_burst_passes_and_the_next_event_is_refused() -> None:
    rate = Rate(10, burst=5)
    tat = 0.0
    for _ in range(5):
        tat = rate.take(tat, now=100.0)
        assert tat > 0
    assert rate.take(tat, now=100.0) == -1.0


def test_the_budget_refills_at_the_rate() -> None:
    bucket = Bucket(Rate(10, burst=10))
    assert all(bucket.take(now=0.0) for _ in range(10))
    assert not bucket.take(now=0.0)
    assert all(bucket.take(now=0.5) for _ in range(5))  # half a second: five more
    assert not bucket.take(now=0.5)


def test_counts_spend_several_at_once() -> None:
    bucket = Bucket(Rate(100, burst=300))
    assert bucket.take(300, now=1.0)
    assert not bucket.take(1, now=1.0)


def test_a_refused_event_spends_nothing() -> None:
    bucket = Bucket(Rate(1, burst=1))
    assert bucket.take(now=0.0)
    before = bucket.tat
    assert not bucket.take(now=0.0)
    assert bucket.tat == before


def test_rate_0_never_limits() -> None:
    rate = Rate(0)
    assert not rate
    bucket = Bucket(rate)
    assert all(bucket.take(now=0.0) for _ in range(10_000))


def test_the_burst_defaults_to_the_rate_and_the_description_says_both() -> None:
    assert Rate(50).burst == 50
    assert Rate(0.5).burst == 1
    assert Rate(10, burst=20).describe("frames") == "over 10 frames a second (bursts of 20)"


@pytest.mark.parametrize(("rate", "burst"), [(-1, None), (10, 0)])
def test_bad_settings_are_refused(rate: float, burst: int | None) -> None:
    with pytest.raises(ValueError, match="must be"):
        Rate(rate, burst)
