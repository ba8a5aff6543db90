"""The emulation transports' pure parts: request parsing and the body framings."""

from __future__ import annotations

import pytest

from realtime_centrifuge.emulation import _json_request, protobuf_request
from realtime_centrifuge.protobuf import client_pb2 as pb
from realtime_hub.httpstream import BARE, EVENTS, LINES


def test_a_protobuf_emulation_request_parses_as_the_generated_code_writes_it() -> None:
    request = pb.EmulationRequest(node="n1", session="s1", data=b"\x05hello")
    assert protobuf_request(request.SerializeToString()) == ("n1", "s1", b"\x05hello")
    # Unknown fields of every wire type are skipped, as protobuf allows.
    extra = b"\x20\x96\x01" + b"\x29" + b"\x00" * 8 + b"\x35" + b"\x00" * 4
    assert protobuf_request(request.SerializeToString() + extra)[2] == b"\x05hello"


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a",  # a key, no length
        b"\x0a\x85",  # a truncated varint length
        b"\x0a\xff\xff\xff\xff\x07abc",  # a 2 GiB length prefix
        b"\x0a\x05ab",  # a field past the end
        b"\x0b",  # wire type 3 (groups): refused
        b"\x80" * 11,  # a varint over 10 bytes
        b"\x29\x00\x00",  # a fixed64 past the end
        b"\x0a\x02\xff\xfe",  # node not UTF-8
    ],
)
def test_a_malformed_protobuf_request_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"varint|past the end|wire type|can't decode"):
        protobuf_request(body)


def test_a_json_request_needs_three_strings() -> None:
    assert _json_request(b'{"node":"a","session":"b","data":"{}"}') == ("a", "b", "{}")
    for body in (b'{"node":"a","session":"b"}', b'{"node":1,"session":"b","data":"x"}', b"[]"):
        with pytest.raises((KeyError, TypeError)):
            _json_request(body)
    with pytest.raises(ValueError, match="Expecting"):
        _json_request(b"{")


def test_each_body_framing_plain_and_chunked() -> None:
    assert LINES.plain.frame('{"a":1}\n{"b":2}') == b'{"a":1}\n{"b":2}\n'
    assert LINES.chunked.frame("{}") == b"3\r\n{}\n\r\n"
    assert BARE.plain.frame(b"\x02\x08\x01") == b"\x02\x08\x01"
    assert BARE.chunked.frame(b"\x02\x08\x01") == b"3\r\n\x02\x08\x01\r\n"
    assert EVENTS.plain.frame("one\ntwo") == b"data: one\ndata: two\n\n"
    assert EVENTS.chunked.frame("x") == b"9\r\ndata: x\n\n\r\n"
    # One object per kind: the hub groups a channel's subscribers by framing object.
    assert LINES.chunked is LINES.chunked and LINES.plain is not EVENTS.plain
