"""The protobuf codec: frames in as Go's decoder takes them, replies out as SDKs read them.

Every encoded frame is read back with the classes generated from client.proto (as the
SDKs' own generated code reads it), and every command is written with them.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from realtime_broker import Publication
from realtime_centrifuge.codec import RawJSON
from realtime_centrifuge.codec import decode_command as decode_json_command
from realtime_centrifuge.codes import (
    DISCONNECT_BAD_REQUEST,
    ERROR_INTERNAL,
    ERROR_PERMISSION_DENIED,
    DisconnectError,
)
from realtime_centrifuge.protobuf import PROTOBUF
from realtime_centrifuge.protobuf import client_pb2 as pb
from realtime_centrifuge.protobuf.encode import varint


def frame(*commands: Any) -> bytes:
    """Commands as an SDK sends them: each behind its varint length."""
    out = b""
    for command in commands:
        raw = command.SerializeToString()
        out += varint(len(raw)) + raw
    return out


def replies(data: Any) -> list[Any]:
    """A frame as an SDK reads it: every varint-delimited Reply."""
    assert isinstance(data, bytes)
    out, pos = [], 0
    while pos < len(data):
        length = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        out.append(pb.Reply.FromString(data[pos : pos + length]))
        pos += length
    assert pos == len(data)
    return out


def reply(data: Any) -> Any:
    [only] = replies(data)
    return only


def decode(*commands: Any, most: int = 10) -> list[Any]:
    return PROTOBUF.decode_commands(frame(*commands), most)


def refused(data: Any, most: int = 10) -> None:
    with pytest.raises(DisconnectError) as caught:
        PROTOBUF.decode_commands(data, most)
    assert caught.value.disconnect == DISCONNECT_BAD_REQUEST


# -- the codec's own shape -------------------------------------------------------------


def test_codec_identity_and_ping() -> None:
    assert (PROTOBUF.name, PROTOBUF.binary) == ("protobuf", True)
    assert PROTOBUF.ping == b"\x00"  # an empty Reply behind its length
    assert reply(PROTOBUF.ping) == pb.Reply()
    assert PROTOBUF.join([b"\x00"]) == b"\x00"
    assert PROTOBUF.join([b"\x00", PROTOBUF.encode_error(1, ERROR_INTERNAL)]).startswith(b"\x00")


# -- commands in: the same params as the JSON decoder ---------------------------------


@pytest.mark.parametrize(
    ("command", "json_line"),
    [
        (
            pb.Command(
                id=1,
                connect=pb.ConnectRequest(
                    token="t",
                    data=b'{"a":[1,2]}',
                    subs={"news": pb.SubscribeRequest(recover=True, offset=5, epoch="e")},
                    name="dart",
                    version="1.0",
                    headers={"x-h": "v"},
                    flag=1,
                ),
            ),
            '{"id":1,"connect":{"token":"t","data":{"a":[1,2]},"subs":{"news":{"recover":true,'
            '"epoch":"e","offset":5}},"name":"dart","version":"1.0","headers":{"x-h":"v"},'
            '"flag":1}}',
        ),
        (
            pb.Command(
                id=2,
                subscribe=pb.SubscribeRequest(
                    channel="chat:a",
                    token="st",
                    recover=True,
                    epoch="ep",
                    offset=2**63,
                    data=b'"hi"',
                    positioned=True,
                    recoverable=True,
                    join_leave=True,
                    delta="fossil",
                    flag=1,
                ),
            ),
            '{"id":2,"subscribe":{"channel":"chat:a","token":"st","recover":true,"epoch":"ep",'
            '"offset":9223372036854775808,"data":"hi","positioned":true,"recoverable":true,'
            '"join_leave":true,"delta":"fossil","flag":1}}',
        ),
        (
            pb.Command(id=3, unsubscribe=pb.UnsubscribeRequest(channel="c")),
            '{"id":3,"unsubscribe":{"channel":"c"}}',
        ),
        (
            pb.Command(id=4, publish=pb.PublishRequest(channel="c", data=b'{"x": 1}')),
            '{"id":4,"publish":{"channel":"c","data":{"x":1}}}',
        ),
        (
            pb.Command(id=5, presence=pb.PresenceRequest(channel="c")),
            '{"id":5,"presence":{"channel":"c"}}',
        ),
        (
            pb.Command(id=6, presence_stats=pb.PresenceStatsRequest(channel="c")),
            '{"id":6,"presence_stats":{"channel":"c"}}',
        ),
        (
            pb.Command(
                id=7,
                history=pb.HistoryRequest(
                    channel="c",
                    limit=-1,
                    since=pb.StreamPosition(offset=3, epoch="e"),
                    reverse=True,
                ),
            ),
            '{"id":7,"history":{"channel":"c","limit":-1,"since":{"offset":3,"epoch":"e"},'
            '"reverse":true}}',
        ),
        (
            pb.Command(id=8, rpc=pb.RPCRequest(method="sum", data=b"[1,2]")),
            '{"id":8,"rpc":{"data":[1,2],"method":"sum"}}',
        ),
        (pb.Command(send=pb.SendRequest(data=b"true")), '{"send":{"data":true}}'),
        (
            pb.Command(id=10, refresh=pb.RefreshRequest(token="t2")),
            '{"id":10,"refresh":{"token":"t2"}}',
        ),
        (
            pb.Command(
                id=11, sub_refresh=pb.SubRefreshRequest(channel="c", token="s", untrack=["k"])
            ),
            '{"id":11,"sub_refresh":{"channel":"c","token":"s","untrack":["k"]}}',
        ),
        (
            pb.Command(
                id=13,
                subscribe=pb.SubscribeRequest(
                    channel="a",
                    tf=pb.FilterNode(
                        op="and",
                        nodes=[
                            pb.FilterNode(key="k", cmp="eq", val="v"),
                            pb.FilterNode(key="x", cmp="in", vals=["1", "2"]),
                        ],
                    ),
                ),
            ),
            '{"id":13,"subscribe":{"channel":"a","tf":{"op":"and","nodes":[{"key":"k",'
            '"cmp":"eq","val":"v"},{"key":"x","cmp":"in","vals":["1","2"]}]}}}',
        ),
        (
            pb.Command(
                id=14,
                sub_refresh=pb.SubRefreshRequest(
                    channel="a",
                    type=1,
                    track=[pb.TrackBatch(signature="s", items=[pb.KeyedItem(key="k", version=3)])],
                ),
            ),
            '{"id":14,"sub_refresh":{"channel":"a","type":1,"track":[{"signature":"s",'
            '"items":[{"key":"k","version":3}]}]}}',
        ),
        (pb.Command(), "{}"),  # the pong
        (pb.Command(history=None, id=12, presence=pb.PresenceRequest()), '{"id":12,"presence":{}}'),
    ],
)
def test_commands_decode_as_the_json_decoder_gives_them(command: Any, json_line: str) -> None:
    [decoded] = decode(command)
    assert decoded == decode_json_command(json_line)


def test_a_frame_of_commands_in_order() -> None:
    commands = decode(
        pb.Command(id=1, connect=pb.ConnectRequest()),
        pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="a")),
        pb.Command(),
    )
    assert [(c.id, c.method) for c in commands] == [(1, "connect"), (2, "subscribe"), (0, "")]
    assert commands[0].params == {}  # an empty request is still the request


def test_data_that_is_not_json_stays_bytes() -> None:
    for raw in (b"\xff\xfe", b"not json", b"NaN", b"{", b"\x00", b"[" * 10_000):
        [decoded] = decode(pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=raw)))
        assert decoded.params["data"] == raw
    [decoded] = decode(pb.Command(id=1, rpc=pb.RPCRequest(data=b" 5 ")))
    assert decoded.params["data"] == 5
    # No data at all: absent, as the session needs to tell (publish refuses it).
    [decoded] = decode(pb.Command(id=1, publish=pb.PublishRequest(channel="c")))
    assert "data" not in decoded.params


def test_published_json_is_kept_as_the_client_sent_it() -> None:
    raw = b'{"b": 1,  "a": [2]}'
    [decoded] = decode(pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=raw)))
    assert decoded.params["data"] == {"b": 1, "a": [2]}  # hooks see the value
    assert decoded.published_data() == RawJSON(raw.decode())  # subscribers get the text
    [binary] = decode(pb.Command(id=1, publish=pb.PublishRequest(channel="c", data=b"\xff")))
    assert binary.published_data() == b"\xff"
    [other] = decode(pb.Command(id=2, rpc=pb.RPCRequest(data=raw)))
    assert other.raw_data is None and other.published_data() == {"b": 1, "a": [2]}


def test_first_request_in_go_order_wins_and_unknown_fields_are_skipped() -> None:
    both = pb.Command(
        id=7,
        publish=pb.PublishRequest(channel="b"),
        subscribe=pb.SubscribeRequest(channel="a"),
    )
    [decoded] = decode(both)
    assert (decoded.method, decoded.get_str("channel")) == ("subscribe", "a")
    # Field 99 (varint) and 98 (bytes), unknown to client.proto: skipped, as Go does.
    raw = pb.Command(id=3, presence=pb.PresenceRequest(channel="x")).SerializeToString()
    raw += b"\x98\x06\x01" + b"\x92\x06\x02hi"
    [decoded] = PROTOBUF.decode_commands(varint(len(raw)) + raw, 1)
    assert (decoded.id, decoded.method) == (3, "presence")


def test_max_commands() -> None:
    assert len(decode(pb.Command(), pb.Command(), pb.Command(), most=3)) == 3
    refused(frame(pb.Command(), pb.Command(), pb.Command(), pb.Command()), 3)
    # Counted before each is parsed: a frame of a million empty commands stops early.
    refused(b"\x00" * 1_000_000, 100)


@pytest.mark.parametrize(
    "data",
    [
        "text",  # a text frame: not this codec
        "",
        b"",  # no command at all
        b"\x80",  # a truncated varint
        b"\xff" * 11,  # a varint longer than ten bytes
        b"\x05\x08\x01",  # a length past the end of the frame
        b"\xff\xff\xff\xff\x07" + b"\x08\x01",  # 2 GiB claimed, three bytes there
        b"\x80\x80\x80\x80\x08",  # 2 GiB claimed, nothing there
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01",  # 2**64 - 1 claimed
        frame(pb.Command(id=1, connect=pb.ConnectRequest())) + b"\x80",  # a good one, then junk
        b"\x02\x08",  # a message cut in the middle of a field
        b"\x01\xff",  # an invalid tag
        b"\x02\x0f\x01",  # wire type 7 does not exist
        b"\x02\x0a\x00",  # Command.id (a varint) sent as bytes
        b"\x03\x22\x01\x0a",  # connect's body cut short
        b"\x04\x22\x02\x08\x01",  # ConnectRequest.token (a string) sent as a varint
        b"\x05\x3a\x03\x0a\x01\xff",  # publish.channel: not UTF-8
        frame(pb.Command(id=1)),  # an id and no request
        frame(pb.Command(id=1, ping=pb.PingRequest())),  # the legacy ping: not dispatched
        frame(pb.Command(connect=pb.ConnectRequest())),  # a request without id
        frame(pb.Command(subscribe=pb.SubscribeRequest(channel="a"))),
    ],
)
def test_malformed_frames_close_with_bad_request(data: Any) -> None:
    refused(data)


def test_a_wrong_wire_type_deep_inside_is_refused() -> None:
    # ConnectRequest.subs["a"] = SubscribeRequest whose recover (3, a bool) is bytes.
    sub = b"\x1a\x01x"  # field 3, wire type 2
    entry = b"\x0a\x01a" + b"\x12" + varint(len(sub)) + sub
    connect = b"\x1a" + varint(len(entry)) + entry
    command = b"\x08\x01" + b"\x22" + varint(len(connect)) + connect
    refused(varint(len(command)) + command)


def test_nesting_past_the_runtime_limit_is_refused() -> None:
    # subscribe.tf: FilterNode.nodes, 200 deep (upb stops at 100).
    node = b""
    for _ in range(200):
        node = b"\x32" + varint(len(node)) + node
    subscribe = b"\x0a\x01c" + b"\x6a" + varint(len(node)) + node
    command = b"\x08\x01" + b"\x2a" + varint(len(subscribe)) + subscribe
    refused(varint(len(command)) + command)


def test_random_bytes_never_raise_anything_but_bad_request() -> None:
    rng = random.Random(21)
    good = frame(
        pb.Command(id=1, connect=pb.ConnectRequest(token="t", subs={"a": pb.SubscribeRequest()})),
        pb.Command(id=2, publish=pb.PublishRequest(channel="c", data=b'{"x":1}')),
        pb.Command(id=3, history=pb.HistoryRequest(channel="c", since=pb.StreamPosition())),
    )
    decoded = 0
    codes = set()
    for _ in range(20_000):
        kind = rng.random()
        if kind < 0.4:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 40)))
        else:  # a good frame with a few bytes changed, cut or grown
            data = bytearray(good)
            for _ in range(rng.randrange(1, 4)):
                data[rng.randrange(len(data))] = rng.getrandbits(8)
            if kind < 0.6:
                data = data[: rng.randrange(1, len(data) + 1)]
            elif kind < 0.7:
                data += bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 8)))
            data = bytes(data)
        try:
            commands = PROTOBUF.decode_commands(data, 5)
        except DisconnectError as exc:
            codes.add(exc.disconnect)
        else:
            decoded += 1
            assert all(c.method == "send" or (c.id == 0) == (c.method == "") for c in commands)
    assert codes == {DISCONNECT_BAD_REQUEST}
    assert decoded > 100  # the loop reached the decoder's far end too


# -- replies out: what the generated classes read ------------------------------------

CLIENT_INFO = RawJSON('{"user":"42","client":"c1","conn_info":{"name":"Ann"},"chan_info":[1]}')


def test_connect_reply() -> None:
    result = {
        "client": "3b4f0f6e",
        "version": "",
        "expires": True,
        "ttl": 600,
        "data": {"x": 1},
        "subs": {
            "news": {"data": None},
            "$alerts": {
                "recoverable": True,
                "epoch": "e",
                "offset": 9,
                "positioned": True,
                "publications": [{"data": b'{"n":1}', "info": CLIENT_INFO, "offset": 9}],
                "was_recovering": True,
                "recovered": True,
            },
        },
        "ping": 25,
        "pong": True,
        "session": None,
    }
    got = reply(PROTOBUF.encode_reply(1, "connect", result))
    assert got.id == 1 and got.HasField("connect")
    connect = got.connect
    assert (connect.client, connect.expires, connect.ttl, connect.ping, connect.pong) == (
        "3b4f0f6e", True, 600, 25, True,
    )  # fmt: skip
    assert json.loads(connect.data) == {"x": 1}
    assert set(connect.subs) == {"news", "$alerts"}
    alerts = connect.subs["$alerts"]
    assert (alerts.recoverable, alerts.epoch, alerts.offset, alerts.positioned) == (
        True, "e", 9, True,
    )  # fmt: skip
    assert (alerts.was_recovering, alerts.recovered) == (True, True)
    [pub] = alerts.publications
    assert (pub.data, pub.offset) == (b'{"n":1}', 9)
    assert (pub.info.user, pub.info.client) == ("42", "c1")
    assert json.loads(pub.info.conn_info) == {"name": "Ann"}
    assert json.loads(pub.info.chan_info) == [1]


@pytest.mark.parametrize(
    ("method", "result", "expected"),
    [
        ("subscribe", {}, pb.SubscribeResult()),
        (
            "subscribe",
            {"expires": True, "ttl": 30, "data": 0, "was_recovering": None},
            pb.SubscribeResult(expires=True, ttl=30, data=b"0"),
        ),
        ("unsubscribe", {}, pb.UnsubscribeResult()),
        ("publish", {}, pb.PublishResult()),
        (
            "presence",
            {"presence": {"c1": CLIENT_INFO, "c2": {"user": "", "client": "c2"}}},
            pb.PresenceResult(
                presence={
                    "c1": pb.ClientInfo(
                        user="42", client="c1", conn_info=b'{"name":"Ann"}', chan_info=b"[1]"
                    ),
                    "c2": pb.ClientInfo(client="c2"),
                }
            ),
        ),
        ("presence", {"presence": {}}, pb.PresenceResult()),
        (
            "presence_stats",
            {"num_clients": 3, "num_users": 2},
            pb.PresenceStatsResult(num_clients=3, num_users=2),
        ),
        (
            "history",
            {
                "publications": [
                    {"data": RawJSON('{"a":"é"}'), "info": None, "offset": 1},
                    {"data": b"\xff", "info": CLIENT_INFO, "offset": 2},
                ],
                "epoch": "ep",
                "offset": 2,
            },
            pb.HistoryResult(
                publications=[
                    pb.Publication(data='{"a":"é"}'.encode(), offset=1),
                    pb.Publication(
                        data=b"\xff",
                        offset=2,
                        info=pb.ClientInfo(
                            user="42", client="c1", conn_info=b'{"name":"Ann"}', chan_info=b"[1]"
                        ),
                    ),
                ],
                epoch="ep",
                offset=2,
            ),
        ),
        ("rpc", {"data": {"sum": 3}}, pb.RPCResult(data=b'{"sum":3}')),
        ("rpc", {"data": b"\x00raw"}, pb.RPCResult(data=b"\x00raw")),
        ("rpc", {"data": False}, pb.RPCResult(data=b"false")),
        (
            "refresh",
            {"client": "c", "expires": True, "ttl": 9},
            pb.RefreshResult(client="c", expires=True, ttl=9),
        ),
        ("sub_refresh", {"expires": False, "ttl": 0}, pb.SubRefreshResult()),
    ],
)
def test_every_method_reply(method: str, result: Any, expected: Any) -> None:
    got = reply(PROTOBUF.encode_reply(5, method, result))
    assert got.id == 5
    assert got.HasField(method)  # present even when empty: the SDK matches on it
    assert getattr(got, method) == expected


def test_reply_needs_an_id_and_a_method_with_a_result() -> None:
    with pytest.raises(ValueError, match="needs the command's id"):
        PROTOBUF.encode_reply(0, "connect", {})
    with pytest.raises(ValueError, match="no reply"):
        PROTOBUF.encode_reply(1, "send", {})


def test_error_reply() -> None:
    got = reply(PROTOBUF.encode_error(2, ERROR_PERMISSION_DENIED))
    assert got == pb.Reply(id=2, error=pb.Error(code=103, message="permission denied"))
    got = reply(PROTOBUF.encode_error(9, ERROR_INTERNAL))
    assert got.error == pb.Error(code=100, message="internal server error", temporary=True)


INFO = pb.ClientInfo(user="42", client="c1", conn_info=b'{"name":"Ann"}', chan_info=b"[1]")


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        ("join", {"info": CLIENT_INFO}, pb.Join(info=INFO)),
        ("leave", {"info": {"user": "u", "client": "c"}}, pb.Leave(info=pb.ClientInfo(
            user="u", client="c"))),
        ("unsubscribe", {"code": 2000, "reason": "server unsubscribe"}, pb.Unsubscribe(
            code=2000, reason="server unsubscribe")),
        ("subscribe", {"data": {"x": 1}, "recoverable": True, "epoch": "e", "offset": 4,
                       "positioned": True}, pb.Subscribe(
            data=b'{"x":1}', recoverable=True, epoch="e", offset=4, positioned=True)),
        ("message", {"data": RawJSON("[1]")}, pb.Message(data=b"[1]")),
        ("refresh", {"expires": True, "ttl": 60}, pb.Refresh(expires=True, ttl=60)),
        ("disconnect", {"code": 3503, "reason": "force disconnect", "reconnect": True},
         pb.Disconnect(code=3503, reason="force disconnect", reconnect=True)),
        ("connect", {"client": "c", "data": b"\x01", "subs": {"a": {}}, "ping": 25}, pb.Connect(
            client="c", data=b"\x01", subs={"a": pb.SubscribeResult()}, ping=25)),
        ("pub", {"data": RawJSON("1"), "offset": 3}, pb.Publication(data=b"1", offset=3)),
    ],
)  # fmt: skip
def test_every_push_kind(kind: str, body: Any, expected: Any) -> None:
    got = reply(PROTOBUF.encode_push("ch", kind, body))
    assert got.id == 0 and got.push == pb.Push(channel="ch", **{kind: expected})
    assert got.push.HasField(kind)


def test_push_without_channel_and_unknown_kind() -> None:
    got = reply(PROTOBUF.encode_push("", "refresh", {"expires": False, "ttl": 0}))
    assert got.push == pb.Push(refresh=pb.Refresh())
    assert got.push.HasField("refresh")
    with pytest.raises(ValueError, match="unknown push kind"):
        PROTOBUF.encode_push("a", "frobnicate", {})


def test_publication_push() -> None:
    got = reply(PROTOBUF.encode_publication("chat:index", b'{"t":1}', CLIENT_INFO, 7, {"k": "v"}))
    assert got.push.channel == "chat:index"
    pub = got.push.pub
    assert (pub.data, pub.offset, dict(pub.tags)) == (b'{"t":1}', 7, {"k": "v"})
    assert (pub.info.user, pub.info.client, pub.info.conn_info) == ("42", "c1", b'{"name":"Ann"}')
    # Data as JSON values, text, or nothing; info as a mapping or not an object at all.
    assert reply(PROTOBUF.encode_publication("a", {"x": [1]})).push.pub.data == b'{"x":[1]}'
    assert reply(PROTOBUF.encode_publication("a", "é")).push.pub.data == '"é"'.encode()
    assert reply(PROTOBUF.encode_publication("a", None)).push.HasField("pub")
    info = {"user": "u", "client": "c", "conn_info": None}
    assert reply(PROTOBUF.encode_publication("a", 1, info)).push.pub.info == pb.ClientInfo(
        user="u", client="c"
    )
    assert not reply(PROTOBUF.encode_publication("a", 1, RawJSON("[1]"))).push.pub.info.user


def test_long_fields_take_multibyte_lengths() -> None:
    data = b"x" * 300_000
    got = replies(PROTOBUF.encode_publication("a" * 200, data, None, 2**64 - 1))
    assert got[0].push.pub.data == data and got[0].push.pub.offset == 2**64 - 1


def test_lone_surrogates_never_make_invalid_utf8() -> None:
    # JSON may carry "\ud800": clients' parsers refuse a frame with invalid UTF-8.
    lone = json.loads('"\\ud800"')
    got = reply(PROTOBUF.encode_publication("a", {"t": lone}, {"user": lone, "client": "c"}))
    assert json.loads(got.push.pub.data) == {"t": lone}
    assert got.push.pub.info.user == "?"
    assert reply(PROTOBUF.encode_push("a", "message", {"data": RawJSON('"' + lone + '"')}))


def test_payload_of_publications() -> None:
    assert PROTOBUF.payload(Publication('{"a":1}', json=True)) == b'{"a":1}'
    assert PROTOBUF.payload(Publication(b"\x00\x01")) == b"\x00\x01"
    assert PROTOBUF.payload(Publication("plain text é")) == "plain text é".encode()


def test_negative_and_sint_values_round_trip() -> None:
    # int32/int64 negatives take ten bytes, as protobuf writes them.
    got = reply(PROTOBUF.encode_reply(1, "subscribe", {"type": -1, "phase": 2}))
    assert (got.subscribe.type, got.subscribe.phase) == (-1, 2)
    got = reply(PROTOBUF.encode_reply(1, "history", {"publications": [{"score": -5}]}))
    assert got.history.publications[0].score == -5


def test_keys_client_proto_lacks_are_left_out() -> None:
    got = reply(PROTOBUF.encode_reply(1, "subscribe", {"ttl": 5, "json_only": {"x": 1}}))
    assert got.subscribe == pb.SubscribeResult(ttl=5)
