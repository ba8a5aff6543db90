"""The load generator's protocol clients (bench/clients.py, bench/protocols.py), no sockets.

The bytes a benchmark client sends are read back with the classes generated from
client.proto, and what the server's own protobuf codec writes is read by the client's
hand-written decoder, so the rows measure the protocol the SDKs speak. The HTTP
stream parser is fed a chunked response cut at every byte; loadgen's client, fed
frames by hand, counts protobuf and streamed deliveries as it counts JSON ones, and
Pusher events and Mercure's ``data:`` lines as well.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from realtime_centrifuge.codec import RawJSON
from realtime_centrifuge.codes import Error
from realtime_centrifuge.protobuf import PROTOBUF
from realtime_centrifuge.protobuf import client_pb2 as pb

BENCH = Path(__file__).resolve().parents[2] / "bench"
TOKEN = "header.claims.signature"


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    """bench/clients.py and bench/loadgen.py, imported as loadgen imports its module."""
    sys.path.insert(0, str(BENCH))
    try:
        import clients
        import loadgen

        yield clients, loadgen
    finally:
        sys.path.remove(str(BENCH))
        for name in ("loadgen", "clients", "protocols", "protoclient", "wsclient"):
            sys.modules.pop(name, None)


def split(frame: bytes) -> list[bytes]:
    """Varint-delimited messages, read with the protobuf runtime's own varint decoder."""
    from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]

    out, pos = [], 0
    while pos < len(frame):
        size, pos = _DecodeVarint(frame, pos)
        out.append(frame[pos : pos + size])
        pos += size
    assert pos == len(frame)
    return out


def unmask(frame: bytes) -> tuple[int, bytes]:
    """A masked client WebSocket frame's opcode and payload (lengths below 64 KiB)."""
    size, at = frame[1] & 0x7F, 2
    if size == 126:
        size, at = int.from_bytes(frame[2:4]), 4
    key = frame[at : at + 4]
    body = frame[at + 4 :]
    assert frame[1] & 0x80 and len(body) == size
    return frame[0] & 0x0F, bytes(b ^ key[i & 3] for i, b in enumerate(body))


def test_varints_round_trip_and_refuse_bad_ones(bench: Any) -> None:
    clients, _ = bench
    for value in (0, 1, 127, 128, 300, 2**32, 2**64 - 1):
        encoded = clients.varint(value)
        assert clients.read_varint(encoded + b"\x01", 0) == (value, len(encoded))
    with pytest.raises(ValueError, match="truncated"):
        clients.read_varint(b"\x80\x80", 0)
    with pytest.raises(ValueError, match="overlong"):
        clients.read_varint(b"\xff" * 11, 0)
    with pytest.raises(ValueError, match="out of range"):
        clients.varint(2**64)


def test_connect_frame_is_what_client_proto_reads(bench: Any) -> None:
    clients, _ = bench
    first, second = split(clients.protobuf_connect(TOKEN, "bench7"))
    connect, subscribe = pb.Command.FromString(first), pb.Command.FromString(second)
    assert connect.id == 1 and connect.HasField("connect")
    assert connect.connect.token == TOKEN
    assert subscribe.id == 2 and subscribe.subscribe.channel == "bench7"
    assert not subscribe.HasField("connect")
    # Anonymous: an empty ConnectRequest, still present.
    anonymous = pb.Command.FromString(split(clients.protobuf_connect("", "c"))[0])
    assert anonymous.HasField("connect") and anonymous.connect.token == ""
    assert pb.Command.FromString(split(clients.PROTOBUF_PONG)[0]) == pb.Command()


def test_replies_of_the_server_codec_are_read(bench: Any) -> None:
    clients, _ = bench
    frame = PROTOBUF.join(
        [
            PROTOBUF.encode_reply(1, "connect", {"client": "c1", "version": "v", "ping": 25}),
            PROTOBUF.encode_reply(2, "subscribe", {}),
            PROTOBUF.encode_publication("default", RawJSON('"m3.1234.xxxx"'), offset=7),
            PROTOBUF.ping,
            PROTOBUF.encode_push("default", "join", {"info": {"user": "u", "client": "c"}}),
        ]
    )
    assert isinstance(frame, bytes)
    replies = clients.protobuf_replies(frame)
    assert [(r.kind, r.id) for r in replies] == [
        ("connect", 1),
        ("subscribe", 2),
        ("pub", 0),
        ("ping", 0),
        ("other", 0),
    ]
    assert clients.publication_data(replies[2].data) == b"m3.1234.xxxx"
    # The empty SubscribeResult is still a field of the Reply (length 0).
    assert pb.Reply.FromString(split(frame)[1]).HasField("subscribe")
    error = PROTOBUF.encode_error(2, Error(103, "permission denied"))
    assert isinstance(error, bytes)
    (reply,) = clients.protobuf_replies(error)
    assert (reply.kind, reply.id, reply.data) == ("error", 2, b"103 permission denied")


def test_replies_built_with_the_generated_classes_are_read(bench: Any) -> None:
    clients, _ = bench
    push = pb.Reply(push=pb.Push(channel="x", pub=pb.Publication(data=b"w12", offset=3)))
    sub = pb.Reply(id=2, subscribe=pb.SubscribeResult(recoverable=True, epoch="e"))
    frame = clients.delimited([push.SerializeToString(), sub.SerializeToString()])
    replies = clients.protobuf_replies(frame)
    assert [(r.kind, r.id, r.data if r.kind == "pub" else b"") for r in replies] == [
        ("pub", 0, b"w12"),
        ("subscribe", 2, b""),
    ]
    assert clients.publication_data(b"w12") == b"w12"
    assert clients.publication_data(b'"') == b'"'


def test_the_fast_path_reads_what_the_full_decoder_reads(bench: Any) -> None:
    clients, _ = bench
    info = {"user": "u", "client": "c"}
    pubs = [
        PROTOBUF.encode_publication("default", RawJSON('"m1.5.x"')),
        PROTOBUF.encode_publication("bench7", RawJSON('"m2.5.' + "x" * 300 + '"'), offset=9),
        PROTOBUF.encode_publication("c" * 200, b"\x00\x01", info, 2**40, {"k": "v"}),
        PROTOBUF.encode_publication("", RawJSON('"w3"')),
    ]
    for pub in pubs:
        assert isinstance(pub, bytes)
        (reply,) = clients.protobuf_replies(pub)
        assert clients.publication_fast(pub) == reply.data != b""
        for cut in range(len(pub)):  # never an exception, never a wrong answer
            assert clients.publication_fast(pub[:cut]) is None
    first, second = pubs[0], pubs[1]
    assert isinstance(first, bytes) and isinstance(second, bytes)
    with_id = pb.Reply(push=pb.Push(id=3, pub=pb.Publication(data=b"m1")))
    others = [
        first + second,  # a batch: the full decoder's
        b"\x00",  # a ping
        PROTOBUF.encode_reply(2, "subscribe", {}),
        clients.delimited([with_id.SerializeToString()]),
    ]
    for frame in others:
        assert isinstance(frame, bytes)
        assert clients.protobuf_replies(frame)
        assert clients.publication_fast(frame) is None


@pytest.mark.parametrize(
    "frame",
    [
        b"\x05\x08\x01",  # a length past the frame's end
        b"\x02\x08",  # a varint cut inside the message
        b"\x02\x0b\x00",  # wire type 3 (a group)
        b"\xff\xff\xff\xff\x0f",  # a 4 GiB length prefix
    ],
)
def test_malformed_replies_raise_value_error(bench: Any, frame: bytes) -> None:
    clients, _ = bench
    with pytest.raises(ValueError, match=r"varint|past the|wire type"):
        clients.protobuf_replies(frame)


def chunked(*parts: bytes) -> bytes:
    return b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
)


def test_http_stream_lines_whatever_the_cuts(bench: Any) -> None:
    clients, _ = bench
    lines = [b'{"id":1,"connect":{"session":"s","node":"n"}}', b"{}", b'{"push":{"pub":1}}']
    # A line split over two chunks, two lines in one chunk.
    body = chunked(lines[0][:10], lines[0][10:] + b"\n" + lines[1] + b"\n", lines[2] + b"\n")
    response = STREAM_HEAD + body
    for cut in range(1, len(response)):
        stream = clients.HttpStream()
        got = stream.feed(response[:cut]) + stream.feed(response[cut:])
        assert got == lines, cut
        assert stream.ended and stream.error is None and stream.chunked
    stream = clients.HttpStream()
    got = [line for byte in response for line in stream.feed(bytes([byte]))]
    assert got == lines and stream.ended


def test_http_stream_plain_body_and_refusals(bench: Any) -> None:
    clients, _ = bench
    plain = clients.HttpStream()
    assert plain.feed(b"HTTP/1.1 200 OK\r\n\r\n{}\n{") == [b"{}"]
    assert plain.feed(b"}\n") == [b"{}"] and not plain.chunked
    refused = clients.HttpStream()
    assert refused.feed(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n") == []
    assert refused.error == "stream refused: HTTP/1.1 400 Bad Request"
    assert refused.feed(b"{}\n") == []
    bad_chunk = clients.HttpStream()
    assert bad_chunk.feed(STREAM_HEAD + b"zz\r\n{}\n\r\n") == []
    assert bad_chunk.error is not None and "chunk size" in bad_chunk.error
    huge = clients.HttpStream()
    huge.feed(b"HTTP/1.1 200 OK\r\n" + b"x" * (clients.MAX_HEAD + 1))
    assert huge.error == "oversized response head"
    with pytest.raises(ValueError, match="not an HTTP response"):
        clients.response_status(b"SSH-2.0-OpenSSH")


def test_requests_are_the_shapes_centrifuge_js_sends(bench: Any) -> None:
    clients, _ = bench
    request = clients.http_stream_request("/connection/http_stream", "127.0.0.1:9", TOKEN)
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /connection/http_stream HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body) == {"id": 1, "connect": {"token": TOKEN}}
    data = clients.subscribe_command("bench3")
    request = clients.emulation_request("/emulation", "127.0.0.1:9", "sess", "node1", data)
    head, _, body = request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /emulation HTTP/1.1\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    sent = json.loads(body)
    assert sent == {"session": "sess", "node": "node1", "data": data}
    assert json.loads(sent["data"]) == {"id": 2, "subscribe": {"channel": "bench3"}}
    reply = b'{"id":1,"connect":{"client":"c","session":"sess","node":"node1"}}'
    assert clients.connect_result(reply) == ("sess", "node1")
    assert clients.connect_result(b'{"id":2,"subscribe":{}}') is None
    assert clients.connect_result(b"not json") is None


class Transport:
    """Records what a client writes (loadgen's clients need only these methods)."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


def server_frame(opcode: int, payload: bytes) -> bytes:
    assert len(payload) < 126
    return bytes([0x80 | opcode, len(payload)]) + payload


def new_client(loadgen: ModuleType, protocol: str) -> tuple[Any, Any, Transport]:
    urls = ["--url", "ws://127.0.0.1:9/x", "--send-url", "http://127.0.0.1:9/s"]
    args = loadgen.parse_args([*urls, "--protocol", protocol, "--token", TOKEN])
    run = loadgen.Run(args)
    client = loadgen.Client(run, False, b"GET / HTTP/1.1\r\n\r\n", b"acc")
    transport = Transport()
    client.connection_made(transport)
    return run, client, transport


async def test_protobuf_deliveries_are_counted_as_json_ones(bench: Any) -> None:
    clients, loadgen = bench
    run, client, transport = new_client(loadgen, "centrifuge-protobuf")
    opcode, payload = unmask(run.connect_frame(0))
    assert opcode == 2 and payload == clients.protobuf_connect(TOKEN, "default")
    client.data_received(
        b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: acc\r\n"
        b"Sec-WebSocket-Protocol: centrifuge-protobuf\r\n\r\n"
    )
    assert unmask(transport.written[-1]) == (2, payload)
    replies = PROTOBUF.join(
        [
            PROTOBUF.encode_reply(1, "connect", {"client": "c"}),
            PROTOBUF.encode_reply(2, "subscribe", {}),
        ]
    )
    assert isinstance(replies, bytes)
    client.data_received(server_frame(2, replies))
    assert client.handshake.done() and client.ended is None
    run.broadcasts[1] = loadgen.Broadcast(0, 1, asyncio.get_running_loop().create_future())
    for seq in (1, 2, 2):
        pub = PROTOBUF.encode_publication("default", RawJSON(f'"m{seq}.{loadgen.now_ns()}.xx"'))
        assert isinstance(pub, bytes)
        client.data_received(server_frame(2, pub))
    client.data_received(server_frame(2, PROTOBUF.ping))
    assert (client.received, client.last, client.ooo, run.delivered_total) == (3, 2, 1, 3)
    assert run.broadcasts[1].done.done()
    assert unmask(transport.written[-1]) == (2, b"\x00") and run.pings == 1
    client.data_received(server_frame(2, b"\x05\x08"))
    assert client.ended is not None and "bad protobuf frame" in client.ended


async def test_protobuf_client_refuses_a_server_without_the_subprotocol(bench: Any) -> None:
    _, loadgen = bench
    _, client, transport = new_client(loadgen, "centrifuge-protobuf")
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: acc\r\n\r\n")
    assert client.ended == "error server did not accept the centrifuge-protobuf subprotocol"
    assert transport.closed


async def test_stream_client_subscribes_through_emulation_and_counts(
    bench: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, loadgen = bench
    run, client, transport = new_client(loadgen, "centrifuge-http-stream")
    sent: list[tuple[str, tuple[str, ...]]] = []
    monkeypatch.setattr(run, "emulate", lambda c, data, *session: sent.append((data, session)))
    client.data_received(STREAM_HEAD)
    connect = b'{"id":1,"connect":{"client":"c","session":"S1","node":"N1","pong":true}}\n'
    client.data_received(b"%x\r\n%s\r\n" % (len(connect), connect))
    assert sent == [('{"id":2,"subscribe":{"channel":"default"}}', ("S1", "N1"))]
    assert not client.handshake.done()
    now = loadgen.now_ns()
    lines = b'{"id":2,"subscribe":{}}\n{}\n' + (
        b'{"push":{"channel":"default","pub":{"data":"m1.%d.xx"}}}\n' % now
    )
    client.data_received(b"%x\r\n%s\r\n" % (len(lines), lines))
    assert client.handshake.done() and client.ended is None
    assert (client.received, run.delivered_total, run.pings) == (1, 1, 1)
    assert sent[-1] == ("{}", ())  # the pong goes through /emulation too
    assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"]  # nothing on the stream itself
    client.data_received(b"0\r\n\r\n")
    assert transport.closed


def row(name: str, cpu: float, lost: int = 0) -> dict[str, Any]:
    """A fan-out result as run.py keeps one, with the keys its tables read."""
    return {
        "server": name,
        "clients": 5000,
        "connected": 5000,
        "lost": lost,
        "server_cpu_us_per_delivery": cpu,
        "server_cpu_us_per_connect": 300.0,
        "kb_per_connection": 6.5,
        "latency_ms": {"p50": 100.0, "p99": 150.0},
        "connect_rate": 3000.0,
        "deliveries_per_s": 50000.0,
        "out_of_order": 0,
        "loadgen_cpu_share": 0.95,
    }


def test_run_py_judges_each_row_against_json_over_websocket(bench: Any) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("run", None)
    results = [
        row("realtime-centrifuge", 6.0),
        row("realtime-centrifuge-protobuf", 6.1),
        row("realtime-centrifuge-http-stream", 7.5, lost=3),
    ]
    ok = {(r["server"], r["clients"]): r for r in results}
    protobuf, stream = run.codec_rows(ok)
    assert protobuf[1] == "realtime-centrifuge-protobuf"
    assert protobuf[3] == "6.10 vs 6.00 (1.02x): ≤ 1.00x **missed**"
    assert stream[3].startswith("7.50 vs 6.00 (1.25x): ≤ 1.30x met (not every delivery")
    assert stream[-1] == "3 vs 0"
    assert "### Centrifuge codecs and transports" in run.main_tables(results)
    assert run.codec_rows({("realtime-centrifuge-protobuf", 5000): results[1]}) == []


def protocols_module() -> ModuleType:
    """bench/protocols.py (the fixture put bench/ on the path for loadgen's import)."""
    return sys.modules["protocols"]


def test_pusher_requests_are_what_pusher_js_sends(bench: Any) -> None:
    protocols = protocols_module()
    assert (
        protocols.pusher_path("k 1") == "/app/k%201?protocol=7&client=js&version=8.4.0&flash=false"
    )
    assert json.loads(protocols.pusher_subscribe("news")) == {
        "event": "pusher:subscribe",
        "data": {"auth": "", "channel": "news"},
    }
    assert json.loads(protocols.PUSHER_PONG) == {"event": "pusher:pong", "data": {}}


@pytest.mark.parametrize(
    ("payload", "data"),
    [
        (b'{"event":"news","channel":"default","data":"m1.5.xx"}', b"m1.5.xx"),
        (b'{"channel":"default","data":"w3","event":"x"}', b"w3"),
        (b'{"event":"e","channel":"c","data":"\\"m2.7.x\\""}', b"m2.7.x"),  # JSON text
        (b'{"event":"e","channel":"c","data":"a\\nb"}', None),  # an escape: the full parse
        (b'{"event":"e","channel":"c","data":{"a":1}}', None),  # not a string
        (b'{"event":"pusher:ping","data":{}}', None),
        (b'{"channel":"c","event":"pusher_internal:subscription_succeeded","data":"{}"}', None),
        (b'{"event":"e","channel":"c"}', None),
    ],
)
def test_pusher_fast_path_reads_plain_publications_only(
    bench: Any, payload: bytes, data: bytes | None
) -> None:
    protocols = protocols_module()
    assert protocols.pusher_data_fast(payload) == data
    if data is not None:  # what the fast path reads, the full parse reads too
        assert protocols.pusher_event(payload).data.strip('"').encode() == data


def test_pusher_events_parse_and_refuse(bench: Any) -> None:
    protocols = protocols_module()
    welcome = {"socket_id": "12.34", "activity_timeout": 120}
    established = json.dumps(
        {"event": "pusher:connection_established", "data": json.dumps(welcome)}
    ).encode()
    event = protocols.pusher_event(established)
    assert (event.event, event.channel) == ("pusher:connection_established", "")
    assert event.value == {"socket_id": "12.34", "activity_timeout": 120}
    assert protocols.pusher_socket_id(event) == "12.34"
    odd = protocols.pusher_event(
        b'{"event":"pusher:connection_established","data":{"socket_id":"x.1"}}'
    )
    assert odd.data == '{"socket_id":"x.1"}' and protocols.pusher_socket_id(odd) is None
    assert protocols.pusher_event(b'{"event":"e","channel":"c","data":"text"}').value is None
    for bad in (b"nope", b"[1]", b'{"event":5}', b'{"data":"x"}'):
        with pytest.raises(ValueError, match="not"):
            protocols.pusher_event(bad)


def test_mercure_request_and_event_stream_lines(bench: Any) -> None:
    protocols = protocols_module()
    path = protocols.mercure_path("/.well-known/mercure", "https://x/a b")
    assert path == "/.well-known/mercure?topic=https%3A%2F%2Fx%2Fa%20b"
    assert protocols.mercure_path("/hub?x=1", "t") == "/hub?x=1&topic=t"
    head = protocols.mercure_request(path, "127.0.0.1:9")
    assert head.startswith(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:9\r\n".encode())
    assert b"Accept: text/event-stream\r\n" in head and head.endswith(b"\r\n\r\n")
    assert protocols.sse_data(b"data: m1.2.x") == b"m1.2.x"
    assert protocols.sse_data(b"data:m1.2.x\r") == b"m1.2.x"
    assert protocols.sse_data(b'data: "w4"') == b"w4"  # a JSON string loses its quotes
    assert protocols.sse_data(b"data:  two") == b" two"  # only one space goes
    assert protocols.sse_data(b"id: urn:uuid:1") is None
    assert protocols.sse_data(b":heartbeat") is None
    assert protocols.sse_field(b": hi\r") == ("", b" hi")
    assert protocols.sse_field(b"id: urn:1") == ("id", b"urn:1")
    assert protocols.sse_field(b"retry:5000") == ("retry", b"5000")
    assert protocols.sse_field(b"event") == ("event", b"")


SSE_HEAD = b"HTTP/1.1 200 \r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    ("body", "fast"),
    [
        (b"id: urn:uuid:1\ndata: m1.2.xx\n\n", b"m1.2.xx"),
        (b"data: w3\n\n", b"w3"),
        (b"event: news\nretry: 10\nid: 7\ndata: m4.5.x\n\n", b"m4.5.x"),
        (b"data: a\ndata: b\n\n", None),  # two data lines: the line parser
        (b'data: "w3"\n\n', None),  # a JSON string: the line parser unquotes it
        (b"data:w3\n\n", None),  # no space
        (b":\n", None),  # a heartbeat
        (b"id: 1\n", None),  # no data
    ],
)
def test_sse_fast_path_agrees_with_the_stream_parser(
    bench: Any, body: bytes, fast: bytes | None
) -> None:
    clients, _ = bench
    protocols = protocols_module()
    chunk = b"%x\r\n%s\r\n" % (len(body), body)
    assert protocols.sse_chunk_data(chunk) == fast
    stream = clients.HttpStream()
    assert stream.feed(SSE_HEAD) == [] and stream.between_chunks()
    found = [d for d in map(protocols.sse_data, stream.feed(chunk)) if d is not None]
    assert stream.between_chunks()
    if fast is not None:
        assert found == [fast]
    for cut in (chunk[:-1], chunk + chunk, b"zz\r\n" + body + b"\r\n", chunk[:-2] + b"xx"):
        assert protocols.sse_chunk_data(cut) is None
    stream.feed(chunk[:5])
    assert not stream.between_chunks()  # a chunk begun: the fast path must not be tried


def pusher_text(message: dict[str, Any]) -> bytes:
    return server_frame(1, json.dumps(message, separators=(",", ":")).encode())


async def test_pusher_client_subscribes_then_counts_events(bench: Any) -> None:
    _, loadgen = bench
    protocols = protocols_module()
    run, client, transport = new_client(loadgen, "pusher")
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: acc\r\n\r\n")
    assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"]  # nothing until established
    data = json.dumps({"socket_id": "1.2", "activity_timeout": 120})
    client.data_received(pusher_text({"event": "pusher:connection_established", "data": data}))
    assert unmask(transport.written[-1]) == (1, protocols.pusher_subscribe("default"))
    assert not client.handshake.done()
    succeeded = {
        "event": "pusher_internal:subscription_succeeded",
        "channel": "other",
        "data": "{}",
    }
    client.data_received(pusher_text(succeeded))
    assert not client.handshake.done()  # another channel's
    client.data_received(pusher_text(succeeded | {"channel": "default"}))
    assert client.handshake.done() and client.ended is None
    run.broadcasts[1] = loadgen.Broadcast(0, 1, asyncio.get_running_loop().create_future())
    now = loadgen.now_ns()
    for seq, quoted in ((1, False), (2, True), (2, False)):
        text = f"m{seq}.{now}.xx"
        event = {
            "event": "message",
            "channel": "default",
            "data": json.dumps(text) if quoted else text,
        }
        client.data_received(pusher_text(event))
    client.data_received(pusher_text({"event": "pusher:ping", "data": {}}))
    assert (client.received, client.last, client.ooo, run.delivered_total) == (3, 2, 1, 3)
    assert run.broadcasts[1].done.done()
    assert unmask(transport.written[-1]) == (1, protocols.PUSHER_PONG) and run.pings == 1
    client.data_received(pusher_text({"event": "pusher:error", "data": {"code": 4201}}))
    assert client.ended is not None and "pusher:error" in client.ended and transport.closed


async def test_pusher_client_refuses_a_bad_welcome(bench: Any) -> None:
    _, loadgen = bench
    _, client, transport = new_client(loadgen, "pusher")
    client.data_received(b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: acc\r\n\r\n")
    welcome = {"event": "pusher:connection_established", "data": '{"socket_id":"abc"}'}
    client.data_received(pusher_text(welcome))
    assert client.ended is not None and "bad connection_established" in client.ended
    assert client.handshake.done() and transport.closed


async def test_mercure_client_is_subscribed_by_the_head_and_counts_data_lines(bench: Any) -> None:
    _, loadgen = bench
    run, client, transport = new_client(loadgen, "mercure")
    client.data_received(SSE_HEAD)
    assert client.handshake.done() and client.ended is None
    now = loadgen.now_ns()
    events = b":\n" + b"".join(
        b"id: urn:uuid:%d\ndata: m%d.%d.xx\n\n" % (k, k, now) for k in (1, 2)
    )
    client.data_received(b"%x\r\n%s\r\n" % (len(events), events))
    other = b"retry: 5000\nbogus: 1\n"
    client.data_received(b"%x\r\n%s\r\n" % (len(other), other))
    assert (client.received, client.last, run.delivered_total) == (2, 2, 2)
    one = b"data: m3.%d.xx\n\n" % now
    client.data_received(b"%x\r\n%s\r\n" % (len(one), one))  # the fast path
    client.data_received(b"%x\r\n%s" % (len(one), one[:4]))  # a read cut in a chunk
    client.data_received(one[4:] + b"\r\n")
    assert (client.received, client.last, run.delivered_total) == (4, 3, 4)
    assert list(run.other_pushes) == ["bogus: 1"]
    assert transport.written == [b"GET / HTTP/1.1\r\n\r\n"]
    client.data_received(b"0\r\n\r\n")
    assert transport.closed


async def test_mercure_client_fails_on_a_refused_subscription(bench: Any) -> None:
    _, loadgen = bench
    _, client, transport = new_client(loadgen, "mercure")
    client.data_received(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
    assert client.ended is not None and "401" in client.ended and transport.closed
    with pytest.raises(ConnectionError):
        client.handshake.result()


def test_run_py_judges_pusher_and_mercure_against_raw(bench: Any) -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run
    finally:
        sys.path.remove(str(BENCH))
        sys.modules.pop("run", None)
    results = [row("realtime", 5.0), row("realtime-pusher", 5.9), row("realtime-mercure", 6.5, 2)]
    results[2]["kb_per_connection"] = 11.0
    ok = {(r["server"], r["clients"]): r for r in results}
    pusher, mercure = run.protocol_rows(ok)
    assert pusher[1] == "realtime-pusher"
    assert pusher[3] == "5.90 vs 5.00 (1.18x): ≤ 1.20x met"
    assert pusher[4] == "6.5 vs 6.5 (+0.0 KB): ≤ +4 KB met"
    assert mercure[3].startswith("6.50 vs 5.00 (1.30x): ≤ 1.20x **missed** (not every")
    assert mercure[4] == "11.0 vs 6.5 (+4.5 KB): ≤ +4 KB **missed**"
    assert mercure[-1] == "2 vs 0"
    assert "### Pusher and Mercure vs raw /ws" in run.main_tables(results)
    assert run.protocol_rows({("realtime-pusher", 5000): results[1]}) == []
