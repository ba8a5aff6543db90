"""The one-way codec and framing, no sockets: bare pushes out, one connect request in."""

from __future__ import annotations

import json

import pytest

from realtime_centrifuge.codec import RawJSON
from realtime_centrifuge.codes import DisconnectError, Error
from realtime_centrifuge.uni import UNI_EVENTS, farewell
from realtime_centrifuge.uni_codec import (
    MAX_CONNECT_SIZE,
    UNI_JSON,
    connect_command,
    refusal,
    refused,
)


def test_pushes_are_bare_objects_never_wrapped_in_a_reply() -> None:
    pub = UNI_JSON.encode_publication("news", RawJSON('{"a":1}'), offset=3)
    assert json.loads(pub) == {"channel": "news", "pub": {"data": {"a": 1}, "offset": 3}}
    assert UNI_JSON.encode_push("news", "subscribe", {}) == '{"channel":"news","subscribe":{}}'
    assert UNI_JSON.encode_push("", "refresh", {"ttl": 5}) == '{"refresh":{"ttl":5}}'
    connect = UNI_JSON.encode_reply(1, "connect", {"client": "c", "subs": {"news": {}}})
    assert json.loads(connect) == {"connect": {"client": "c", "subs": {"news": {}}}}
    assert UNI_JSON.ping == "{}"
    with pytest.raises(ValueError, match="one-way"):
        UNI_JSON.encode_reply(2, "publish", {})


def test_a_refused_connect_is_the_disconnect_its_error_maps_to_as_in_go() -> None:
    assert [refusal(Error(code, "m")).code for code in (109, 110, 111, 103, 100, 4001)] == [
        3005, 3005, 3013, 3507, 3004, 3004,
    ]  # fmt: skip
    frame = UNI_JSON.encode_error(1, Error(103))
    assert json.loads(frame) == {"disconnect": {"code": 3507, "reason": "permission denied"}}
    disconnect = refused(frame)
    assert disconnect is not None and disconnect.code == 3507
    assert refused('{"connect":{}}') is None


@pytest.mark.parametrize("text", ["", "  ", "null", "{}", b"{}"])
def test_an_empty_connect_request_is_an_empty_connect(text: str | bytes) -> None:
    command = connect_command(text)
    assert (command.id, command.method, dict(command.params)) == (1, "connect", {})


def test_a_connect_request_is_type_checked_and_loses_its_headers() -> None:
    request = {"token": "t", "data": {"x": 1}, "subs": {"news": {"recover": True}},
               "name": "js", "headers": {"cookie": "forged"}}  # fmt: skip
    command = UNI_JSON.decode_commands(json.dumps(request), 1)[0]
    assert command.get_str("token") == "t" and command.get_map("subs") == request["subs"]
    assert "headers" not in command.params
    for bad in ("{bad", "[1]", '"x"', '{"token":5}', '{"subs":[]}', "NaN", b"\xff",
                '{},"publish":{"channel":"x"}', "x" * (MAX_CONNECT_SIZE + 1)):  # fmt: skip
        with pytest.raises(DisconnectError) as refused_error:
            connect_command(bad)
        assert refused_error.value.disconnect.code == 3501


def test_each_line_of_a_message_is_an_event_of_its_own() -> None:
    assert UNI_EVENTS.plain.frame('{"a":1}\n{"b":2}') == b'data: {"a":1}\n\ndata: {"b":2}\n\n'
    assert UNI_EVENTS.chunked.frame("{}") == b"a\r\ndata: {}\n\n\r\n"


def test_a_stream_s_farewell_says_the_close_as_centrifuge_does() -> None:
    assert (
        farewell(3500, "invalid token") == '{"disconnect":{"code":3500,"reason":"invalid token"}}'
    )
    assert farewell(1008, "client buffer full") == '{"disconnect":{"code":3008,"reason":"slow"}}'
    assert json.loads(farewell(1001, "bye") or "")["disconnect"]["code"] == 3001
    assert json.loads(farewell(1011, "boom") or "")["disconnect"]["code"] == 3004
    # Whatever reason a close carries, the farewell is a push, never an exception.
    long = json.loads(farewell(4000, "é" * 200) or "")
    assert long["disconnect"] == {"code": 4000, "reason": "é" * 200}
