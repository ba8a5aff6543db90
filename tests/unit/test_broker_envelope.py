"""The Redis broker's envelopes, sans-IO: what is believed off the wire, and what not."""

from __future__ import annotations

import dataclasses

import pytest

from realtime_broker import MAX_CONTROL_SIZE, MAX_INFO_SIZE, Member, PresenceEvent, Publication
from realtime_broker.base import as_publication
from realtime_broker.meta import MAX_ATTRS, MAX_NAME
from realtime_broker.redis.envelope import (
    CONTROL_MAGIC,
    MAGIC,
    PRESENCE_MAGIC,
    Drop,
    decode,
    decode_control,
    decode_presence,
    encode,
    encode_control,
    is_member,
    member_of,
    member_value,
    parse_counter,
    proof,
)


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
        # With metadata (realtime_broker.meta), which protocols that name messages use.
        Publication("hi", event="my-event", skip="123.456"),
        Publication('{"a":1}', json=True, info="{}", id="urn:uuid:1", attrs={"private": "1"}),
        Publication(b"m3 abc", event="m3 {}", attrs={"é": "ü", "retry": "5000"}),
    ],
)
def test_the_redis_envelope_round_trips(publication: Publication) -> None:
    # Redis stamps magic, epoch and sequence in front of what the publisher sends.
    got = decode(MAGIC + b"ab12cd34 7 " + encode(publication))
    assert got == dataclasses.replace(publication, epoch="ab12cd34", offset=7)
    assert isinstance(got, Publication)
    assert type(got.data) is type(publication.data)


_LONG_EVENT = b'{"e":"' + b"x" * (MAX_NAME + 1) + b'"}'


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
        # Metadata: a bounded length, then JSON of realtime's shape, then the kind.
        b"realtime/2 ab12cd34 3 m",
        b"realtime/2 ab12cd34 3 m2 {}",  # no kind after it
        b"realtime/2 ab12cd34 3 m9 {}thello",  # shorter than it says
        b"realtime/2 ab12cd34 3 m" + b"9" * 5000 + b" {}thello",
        b"realtime/2 ab12cd34 3 m99999 {}thello",  # over MAX_META_SIZE
        b"realtime/2 ab12cd34 3 m2 []thello",
        b'realtime/2 ab12cd34 3 m8 {"x":1}thello',  # a key realtime never writes
        b'realtime/2 ab12cd34 3 m8 {"e":1}thello',  # an event that is not a string
        b'realtime/2 ab12cd34 3 m12 {"a":["x"]}thello',
        b'realtime/2 ab12cd34 3 m14 {"a":{"k":1}}thello',
        b"realtime/2 ab12cd34 3 m2 \xff\xfethello",
        b"realtime/2 ab12cd34 3 m"
        + str(len(_LONG_EVENT)).encode()
        + b" "
        + _LONG_EVENT
        + b"thello",
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


@pytest.mark.parametrize(
    "member",
    [Member("c1", "u1"), Member("c2", "", '{"a":1}'), Member("c:3", "ü:s", '{"x":"é"}')],
)
def test_a_member_round_trips_through_the_presence_hash(member: Member) -> None:
    assert member_of(member.client.encode(), member_value(member)) == member


def test_a_member_realtime_did_not_store_is_none() -> None:
    for value in (b"", b"5:abc", b"x:abc", b"1234567:a", b"1:u{not json", b"1:\xff"):
        assert member_of(b"c1", value) is None, value
    assert member_of(b"c1", b"1:u" + b"1" * (MAX_INFO_SIZE + 1)) is None  # info too big


def test_joins_and_leaves_decode_with_their_kind() -> None:
    value = member_value(Member("c1", "u1", '{"a":1}'))
    join = decode_presence(PRESENCE_MAGIC + b"J2:c1" + value)
    assert join == PresenceEvent(True, Member("c1", "u1", '{"a":1}'), True)
    leave = decode_presence(PRESENCE_MAGIC + b"l2:c1" + value)
    assert leave == PresenceEvent(False, Member("c1", "u1", '{"a":1}'), False)
    assert decode_presence(PRESENCE_MAGIC + b"x2:c1" + value) is Drop.FOREIGN
    assert decode_presence(PRESENCE_MAGIC + b"j9:c1" + value) is Drop.FOREIGN


def test_a_join_is_believed_only_if_the_store_holds_that_member() -> None:
    member = Member("c1", "u1", '{"a":1}')
    event = PresenceEvent(True, member)
    assert is_member(event, member_value(member))
    assert not is_member(event, member_value(Member("c1", "u2")))
    assert not is_member(event, None)


def test_redis_counters_are_parsed_only_when_realtime_could_have_kept_them() -> None:
    assert parse_counter(b"42") == 42
    for value in (None, b"", b"-1", b"1" * 20, b"4x", "42", 42):
        assert parse_counter(value) is None, value


def test_control_messages_decode_with_their_id_and_are_bounded() -> None:
    ident = b"0123456789abcdef"
    assert decode_control(CONTROL_MAGIC + ident + b" " + b'{"op":"x"}') == (ident, b'{"op":"x"}')
    assert decode_control(CONTROL_MAGIC + ident + b" ") == (ident, b"")
    for raw in (
        b"",
        MAGIC + b"ab12 3 tx",  # a publication is not a control message
        CONTROL_MAGIC + b"0123456789ABCDEF body",  # ids are lower-case hex
        CONTROL_MAGIC + b"0123 body",
        CONTROL_MAGIC + ident + b"body",  # no space after the id
    ):
        assert decode_control(raw) is Drop.FOREIGN, raw
    oversized = CONTROL_MAGIC + ident + b" " + b"x" * (MAX_CONTROL_SIZE + 1)
    assert decode_control(oversized) is Drop.OVERSIZED
    assert encode_control(b"x" * MAX_CONTROL_SIZE) == b"x" * MAX_CONTROL_SIZE
    with pytest.raises(ValueError, match="over"):
        encode_control(b"x" * (MAX_CONTROL_SIZE + 1))
    with pytest.raises(TypeError):
        encode_control("text")  # type: ignore[arg-type]


def test_the_proof_is_what_redis_sha1hex_stores() -> None:
    # redis.sha1hex("abc") in the control script.
    assert proof(b"abc") == b"a9993e364706816aba3e25717850c26c9cd0d89d"


@pytest.mark.parametrize(
    ("publication", "error"),
    [
        (Publication("x", event="e" * (MAX_NAME + 1)), ValueError),
        (Publication("x", skip=7), TypeError),  # type: ignore[arg-type]
        (Publication("x", attrs={str(i): "" for i in range(MAX_ATTRS + 1)}), ValueError),
        (Publication("x", attrs={"k": 1}), TypeError),  # type: ignore[dict-item]
        (Publication("x", attrs=["k"]), TypeError),  # type: ignore[arg-type]
    ],
)
def test_metadata_no_broker_could_carry_is_refused_on_publish(
    publication: Publication, error: type[Exception]
) -> None:
    with pytest.raises(error):
        as_publication(publication)
