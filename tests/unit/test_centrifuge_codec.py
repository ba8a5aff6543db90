"""The JSON codec: frames in as Go's decoder takes them, replies out as clients read them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from realtime_centrifuge.codec import (
    Command,
    RawJSON,
    decode_command,
    decode_commands,
    encode_error,
    encode_json,
    encode_publication,
    encode_push,
    encode_reply,
)
from realtime_centrifuge.codes import (
    DISCONNECT_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_PERMISSION_DENIED,
    DisconnectError,
    Error,
)


def client_decode(frame: str) -> list[Any]:
    """How centrifuge-js and centrifuge-python read a frame."""
    return [json.loads(line) for line in frame.strip().split("\n")]


def test_frame_of_commands_in_order() -> None:
    frame = (
        '{"id":1,"connect":{"token":"t","name":"js","flag":1}}\n'
        '{"id":2,"subscribe":{"channel":"chat:a","flag":1}}\n'
        '{"id":3,"publish":{"channel":"chat:a","data":{"x":1}}}\n'
    )
    commands = decode_commands(frame, 3)
    assert [(c.id, c.method) for c in commands] == [
        (1, "connect"),
        (2, "subscribe"),
        (3, "publish"),
    ]
    assert commands[0].get_str("token") == "t"
    assert commands[1].get_str("channel") == "chat:a"
    assert commands[2].params["data"] == {"x": 1}


def test_empty_command_is_a_pong_and_send_needs_no_id() -> None:
    assert decode_command("{}") == Command(0, "")
    assert decode_command('{"id":0}') == Command(0, "")
    assert decode_command('{"unknown":1}') == Command(0, "")  # Go ignores unknown fields
    assert decode_command('{"send":{"data":"hi"}}') == Command(0, "send", {"data": "hi"})


def test_first_request_in_go_order_wins() -> None:
    command = decode_command('{"id":7,"publish":{"channel":"b"},"subscribe":{"channel":"a"}}')
    assert (command.method, command.get_str("channel")) == ("subscribe", "a")
    # null is Go's "absent".
    assert decode_command('{"id":7,"connect":null,"rpc":{"method":"m"}}').method == "rpc"


def test_accessors_default_like_go() -> None:
    command = decode_command('{"id":1,"subscribe":{"channel":null,"recover":true,"offset":5}}')
    assert command.get_str("channel") == ""
    assert command.get_bool("recover") is True
    assert command.get_bool("positioned") is False
    assert command.get_int("offset") == 5
    assert command.get_int("type") == 0
    assert command.get_map("tf") == {}


@pytest.mark.parametrize(
    "frame",
    [
        "",  # no command at all
        "\n",
        "{}\n\n{}",  # a blank line in between
        "not json",
        "[1,2]",  # a JSON array
        '"text"',
        "NaN",
        '{"id":1,"connect":{"data":NaN}}',
        '{"id":1}',  # an id and no request
        '{"id":1,"ping":{}}',  # the legacy ping: not in Go's dispatcher
        '{"id":1,"frobnicate":{}}',  # unknown method
        '{"connect":{}}',  # a request without id
        '{"id":-1,"connect":{}}',
        '{"id":4294967296,"connect":{}}',
        '{"id":1.0,"connect":{}}',
        '{"id":"1","connect":{}}',
        '{"id":true,"connect":{}}',
        '{"id":1,"connect":[]}',
        '{"id":1,"connect":"x"}',
        '{"id":1,"connect":{"token":5}}',
        '{"id":1,"connect":{"headers":{"a":1}}}',
        '{"id":1,"connect":{"subs":{"a":{"recover":"yes"}}}}',
        '{"id":1,"subscribe":{"channel":5}}',
        '{"id":1,"subscribe":{"channel":"a","recover":1}}',
        '{"id":1,"subscribe":{"channel":"a","offset":-1}}',
        '{"id":1,"subscribe":{"channel":"a","type":2147483648}}',
        '{"id":1,"publish":{"channel":["a"],"data":1}}',
        '{"id":1,"history":{"channel":"a","since":{"offset":"1"}}}',
        '{"id":1,"rpc":{"method":1}}',
        '{"id":1,"refresh":{"token":{}}}',
        '{"id":1,"sub_refresh":{"channel":"a","untrack":[1]}}',
        '{"send":5}',
        # A bad request after the one used is refused too: Go parses every field.
        '{"id":1,"subscribe":{"channel":"a"},"publish":{"channel":1}}',
        "[" * 100_000,  # nesting too deep for the parser
    ],
)
def test_malformed_frames_close_with_bad_request(frame: str) -> None:
    with pytest.raises(DisconnectError) as caught:
        decode_commands(frame, 10)
    assert caught.value.disconnect == DISCONNECT_BAD_REQUEST


def test_too_many_commands() -> None:
    assert len(decode_commands("{}\n{}\n{}\n", 3)) == 3
    with pytest.raises(DisconnectError):
        decode_commands("{}\n{}\n{}\n{}", 3)


def test_unknown_fields_are_ignored() -> None:
    command = decode_command('{"id":2,"subscribe":{"channel":"a","flag":1,"future":[1]},"x":1}')
    assert command.method == "subscribe"


# -- exact output, as the clients expect it -------------------------------------------


def test_connect_reply_exact() -> None:
    result = {
        "client": "3b4f0f6e-1c2d-4a5b-9c8d-7e6f5a4b3c2d",
        "version": "",
        "expires": True,
        "ttl": 600,
        "data": None,
        "subs": {"news": {"data": None}, "$alerts": {"data": {"x": 1}}},
        "ping": 25,
        "pong": True,
    }
    line = encode_reply(1, "connect", result)
    assert line == (
        '{"id":1,"connect":{"client":"3b4f0f6e-1c2d-4a5b-9c8d-7e6f5a4b3c2d","expires":true,'
        '"ttl":600,"subs":{"news":{},"$alerts":{"data":{"x":1}}},"ping":25,"pong":true}}'
    )
    reply = client_decode(line)[0]
    # centrifuge-python indexes these; centrifuge-js tests subs[channel] for truth.
    assert reply["connect"]["client"] and reply["connect"]["ttl"] == 600
    assert all(isinstance(v, dict) for v in reply["connect"]["subs"].values())


def test_subscribe_and_empty_replies_keep_an_object() -> None:
    assert encode_reply(2, "subscribe", {}) == '{"id":2,"subscribe":{}}'
    assert encode_reply(2, "subscribe", {"expires": False, "ttl": 0, "data": None}) == (
        '{"id":2,"subscribe":{}}'
    )
    assert encode_reply(3, "subscribe", {"expires": True, "ttl": 30, "data": 0}) == (
        '{"id":3,"subscribe":{"expires":true,"ttl":30,"data":0}}'
    )
    assert encode_reply(4, "unsubscribe", {}) == '{"id":4,"unsubscribe":{}}'
    assert encode_reply(5, "rpc", {"data": False}) == '{"id":5,"rpc":{"data":false}}'


def test_error_reply_exact() -> None:
    assert encode_error(2, ERROR_PERMISSION_DENIED) == (
        '{"id":2,"error":{"code":103,"message":"permission denied"}}'
    )
    assert encode_error(9, ERROR_INTERNAL) == (
        '{"id":9,"error":{"code":100,"message":"internal server error","temporary":true}}'
    )
    assert encode_error(3, Error(4000, 'say "no"')) == (
        '{"id":3,"error":{"code":4000,"message":"say \\"no\\""}}'
    )


def test_publication_push_exact() -> None:
    info = {"user": "42", "client": "c1", "conn_info": {"name": "Ann"}, "chan_info": None}
    line = encode_publication("chat:index", {"text": "héllo\n"}, info=info, offset=3)
    assert line == (
        '{"push":{"channel":"chat:index","pub":{"data":{"text":"héllo\\n"},'
        '"info":{"user":"42","client":"c1","conn_info":{"name":"Ann"}},"offset":3}}}'
    )
    assert "\n" not in line
    # Anonymous publisher: user is still sent, as Go always sends it.
    anonymous = encode_publication("a", 1, info={"user": "", "client": "c2"})
    assert anonymous == '{"push":{"channel":"a","pub":{"data":1,"info":{"user":"","client":"c2"}}}}'


def test_publication_data_is_always_there() -> None:
    assert encode_publication("a", None) == '{"push":{"channel":"a","pub":{"data":null}}}'
    assert encode_publication("a", 0) == '{"push":{"channel":"a","pub":{"data":0}}}'
    assert encode_publication("a", "") == '{"push":{"channel":"a","pub":{"data":""}}}'
    assert encode_publication("a", [], tags={"k": ""}) == (
        '{"push":{"channel":"a","pub":{"data":[],"tags":{"k":""}}}}'
    )


def test_raw_json_is_embedded_once_encoded() -> None:
    data = encode_json({"big": [0, 1, 2], "zero": 0, "none": None})
    assert data == '{"big":[0,1,2],"zero":0,"none":null}'  # a payload keeps every field
    assert encode_json(data) is data
    line = encode_publication("a", data)
    assert line == '{"push":{"channel":"a","pub":{"data":{"big":[0,1,2],"zero":0,"none":null}}}}'
    # A pre-encoded body is embedded as is.
    assert (
        encode_push("a", "pub", RawJSON('{"data":1}'))
        == '{"push":{"channel":"a","pub":{"data":1}}}'
    )
    assert encode_push("a", "pub", RawJSON("")) == '{"push":{"channel":"a","pub":{}}}'
    # Pretty-printed raw JSON cannot split a line.
    assert encode_publication("a", RawJSON('{\n  "x": 1\r\n}')) == (
        '{"push":{"channel":"a","pub":{"data":{   "x": 1  }}}}'
    )
    # Empty raw JSON is no value at all.
    assert encode_reply(1, "rpc", {"data": RawJSON("")}) == '{"id":1,"rpc":{}}'


def test_other_pushes() -> None:
    assert encode_push("", "message", {"data": {"a": 1}}) == '{"push":{"message":{"data":{"a":1}}}}'
    assert encode_push("a", "unsubscribe", {"code": 2501, "reason": "subscription expired"}) == (
        '{"push":{"channel":"a","unsubscribe":{"code":2501,"reason":"subscription expired"}}}'
    )
    assert encode_push("a", "subscribe", {}) == '{"push":{"channel":"a","subscribe":{}}}'
    with pytest.raises(ValueError, match="unknown push kind"):
        encode_push("a", "nonsense", {})


def test_always_emitted_result_fields() -> None:
    assert encode_reply(1, "presence_stats", {"num_clients": 0, "num_users": 0}) == (
        '{"id":1,"presence_stats":{"num_clients":0,"num_users":0}}'
    )
    assert encode_reply(1, "presence", {"presence": {}}) == '{"id":1,"presence":{"presence":{}}}'
    assert encode_reply(1, "history", {"publications": [], "epoch": "", "offset": 0}) == (
        '{"id":1,"history":{"publications":[],"epoch":"","offset":0}}'
    )


def test_reply_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="id"):
        encode_reply(0, "connect", {})
    with pytest.raises(ValueError, match="no reply"):
        encode_reply(1, "send", {})
    with pytest.raises(ValueError, match="Out of range float"):
        encode_publication("a", float("nan"))


def test_batched_replies_split_like_clients_do() -> None:
    frame = "\n".join(
        [encode_reply(1, "connect", {"client": "c"}), encode_reply(2, "subscribe", {}), "{}"]
    )
    assert client_decode(frame) == [
        {"id": 1, "connect": {"client": "c"}},
        {"id": 2, "subscribe": {}},
        {},
    ]
