"""The NATS broker's wire (sans-IO): subjects for any channel name, envelopes, URLs."""

from __future__ import annotations

import pytest

from realtime_broker.base import Publication
from realtime_broker.nats import (
    MAX_CHANNEL_BYTES,
    Subjects,
    channel_of,
    channel_token,
    parse_url,
    wire,
)
from realtime_broker.redis.envelope import Drop

NAMES = [
    "default", "chat:room 1", "a.b", "*", ">", "a>b*c", "_", "_41", "x_y", "", "\u00e9t\u00e9",
    "\U0001f600", "tab\there", "new\nline", "$private", "user#42,43", "-", "A-Z", "\x00",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_any_channel_is_one_safe_subject_token_and_comes_back(name: str) -> None:
    token = channel_token(name)
    assert token and all(c.isascii() and (c.isalnum() or c in "-_") for c in token)
    assert channel_of(token) == name
    assert len(token) <= 3 * max(1, len(name.encode()))


def test_distinct_channels_never_share_a_subject() -> None:
    tokens = [channel_token(name) for name in NAMES]
    assert len(set(tokens)) == len(NAMES)


def test_tokens_it_did_not_make_are_no_channel() -> None:
    assert channel_of("_41") is None  # "A" escaped: not the one spelling
    assert channel_of("a.b") is None
    assert channel_of("_zz") is None
    assert channel_of("_FF") is None  # not UTF-8
    assert channel_of("") is None


def test_channel_names_are_bounded() -> None:
    assert channel_of(channel_token("\U0001f600" * 255)) == "\U0001f600" * 255  # 1020 bytes
    with pytest.raises(ValueError, match="over 1024 bytes"):
        channel_token("x" * (MAX_CHANNEL_BYTES + 1))


def test_subjects_and_their_prefix() -> None:
    subjects = Subjects("realtime")
    assert subjects.channel("chat:room") == "realtime.ch.chat_3Aroom"
    assert subjects.control == "realtime.control"
    assert Subjects("app.one").nodes == "app.one.nodes"
    for bad in ("", "a..b", "a.*", "a b", "a."):
        with pytest.raises(ValueError, match="not a NATS subject prefix"):
            Subjects(bad)


@pytest.mark.parametrize(
    "publication",
    [
        Publication("hello"),
        Publication(b"\x00\xff"),
        Publication('{"a":1}', json=True, info='{"user":"u"}'),
        Publication("x", event="ev", id="7", skip="conn", attrs={"private": "1"}),
    ],
)
def test_publications_round_trip_unnumbered(publication: Publication) -> None:
    raw = wire.encode_publication(publication, 1024)
    assert raw.startswith(wire.HEADER)
    assert wire.decode_publication(raw, 1024) == publication


def test_what_is_not_a_publication_is_dropped() -> None:
    assert wire.decode_publication(b"hello", 1024) is Drop.FOREIGN
    assert wire.decode_publication(wire.HEADER + b"j{nope", 1024) is Drop.FOREIGN
    assert wire.decode_publication(wire.HEADER + b"t" + b"x" * 1025, 1024) is Drop.OVERSIZED
    assert wire.decode_publication(b"realtime/2 e1 5 thello", 1024) is Drop.FOREIGN  # Redis's
    with pytest.raises(ValueError, match="over the 1024-byte limit"):
        wire.encode_publication(Publication("x" * 1025), 1024)


def test_heartbeats_are_checked() -> None:
    node = {"uid": "u1", "name": "host:1", "num_clients": 3, "num_channels": 1, "num_subs": 2,
            "uptime": 9}  # fmt: skip
    assert wire.decode_node(wire.encode_node(node)) == node
    assert wire.decode_node(wire.encode_node(node, gone=True)) == {"uid": "u1", "gone": True}
    assert wire.decode_node(wire.encode_node({**node, "num_clients": -1})) is Drop.FOREIGN
    assert wire.decode_node(wire.encode_node({**node, "uptime": "9"})) is Drop.FOREIGN
    assert wire.decode_node(b"realtime/2n [1]") is Drop.FOREIGN
    assert wire.decode_node(b"realtime/2n " + b" " * 5000) is Drop.OVERSIZED


def test_channel_maps_go_in_parts_under_a_budget() -> None:
    channels = {f"channel-{n}": n + 1 for n in range(1000)}
    parts = list(wire.encode_maps("u1", channels, 2048))
    assert len(parts) > 1 and all(len(part) < 2048 + 200 for part in parts)
    merged: dict[str, int] = {}
    for raw in parts:
        decoded = wire.decode_map(raw)
        assert decoded is not None
        uid, index, count, got = decoded
        assert uid == "u1" and count == len(parts) and 0 <= index < count
        merged |= got
    assert merged == channels
    assert wire.decode_map(b'realtime/2m {"uid":"u","part":1,"parts":1,"channels":{}}') is None
    assert (
        wire.decode_map(b'realtime/2m {"uid":"u","part":0,"parts":1,"channels":{"a":-1}}') is None
    )


def test_urls() -> None:
    assert parse_url("nats://127.0.0.1:4222") == (["nats://127.0.0.1:4222"], {})
    assert parse_url("nats://h1,h2:5000/") == (["nats://h1:4222", "nats://h2:5000"], {})
    assert parse_url("nats+tls://u:p%40ss@h:4443") == (
        ["tls://h:4443"], {"user": "u", "password": "p@ss"},
    )  # fmt: skip
    assert parse_url("NATS://s3cret@h:1") == (["nats://h:1"], {"token": "s3cret"})
    for bad in ("redis://h:1", "nats://h:1/0", "nats://h:1?x=1", "nats://h:port", "nats://:1"):
        with pytest.raises(ValueError, match="NATS"):
            parse_url(bad)
