"""Where a process stands in Redis's numbering, sans-IO: every rule on its own."""

from __future__ import annotations

from realtime_broker import EMPTY_EPOCH, Publication
from realtime_broker.redis.sequence import (
    COPIES,
    INLINE_MARK,
    RECENT,
    Mark,
    Place,
    Sequence,
    Verdict,
    mark,
)

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


def test_publications_are_their_own_marks_compared_only_when_a_number_comes_again() -> None:
    sequence = Sequence()
    first = Publication("a", epoch=E1, offset=1)
    sequence.delivered("c", E1, 1, first)
    assert sequence.place("c", E1, 1) is Place.AGAIN
    assert not sequence.again("c", 1, Publication("a", epoch=E1, offset=1))  # equal: a replay
    assert sequence.again("c", 1, Publication(b"a", epoch=E1, offset=1))  # bytes, not text
    assert sequence.again("c", 1, Publication("a", json=True, epoch=E1, offset=1))
    assert sequence.again("c", 1, Publication("a", info="{}", epoch=E1, offset=1))


def test_one_number_carries_at_most_a_few_different_messages() -> None:
    sequence = Sequence()
    for n in range(COPIES):
        sequence.delivered("c", E1, 1, f"copy {n}")
    assert not sequence.again("c", 1, "one more")


def test_only_the_recent_numbers_are_remembered() -> None:
    sequence = Sequence()
    delivered(sequence, E1, *range(1, RECENT + 2))
    assert sequence.place("c", E1, 1) is Place.OFF  # forgotten: Redis is asked
    assert sequence.place("c", E1, 2) is Place.AGAIN


def test_a_channel_dropped_starts_afresh() -> None:
    sequence = Sequence()
    sequence.confirm({"c": (E1, 5)}, ["c"])
    delivered(sequence, E1, 5)
    sequence.drop("c")
    assert "c" not in sequence.position and "c" not in sequence.confirmed
    assert sequence.place("c", E1, 6) is Place.OFF
    assert sequence.check("c", None, None) == 0
    assert sequence.position["c"] == (EMPTY_EPOCH, 0)


def test_marks_are_what_redis_confirmed() -> None:
    assert Mark("subscribe") is Mark.SUBSCRIBED and Mark("unsubscribe") is Mark.UNSUBSCRIBED
    assert Verdict.BEYOND.value.endswith("(not stamped by realtime)")


def test_small_publications_are_their_own_mark_and_large_ones_a_hash() -> None:
    small = Publication("x" * INLINE_MARK, epoch=E1, offset=1)
    assert mark(small) is small  # no hash on the way
    large = Publication("x" * INLINE_MARK, info="{}", epoch=E1, offset=1)
    assert isinstance(mark(large), int)
    assert mark(large) == mark(Publication("x" * INLINE_MARK, info="{}", epoch=E1, offset=1))
    assert mark(large) != mark(Publication(b"x" * INLINE_MARK, info="{}", epoch=E1, offset=1))
    sequence = Sequence()
    sequence.delivered("c", E1, 1, mark(large))
    assert not sequence.again("c", 1, mark(large))  # a replay of a large one
    assert sequence.again("c", 1, mark(small))
