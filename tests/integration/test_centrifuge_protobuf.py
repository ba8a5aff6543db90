"""The protobuf codec end to end: centrifuge-python with ``use_protobuf=True``, unchanged,
and raw WebSockets sending what no SDK would, against one Hypercorn in the test's loop
(both fan-out paths: the socket taken over from Hypercorn, or read through ASGI).

The chat namespace (history, recovery, presence) is the demo's; an ``rpc`` hook comes
from a test plugin; publications from a drop-in script's ``broadcast()``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from centrifuge import Client
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import Host, create_app, get_host, hookimpl
from realtime_centrifuge.plugin import get_node
from realtime_centrifuge.protobuf import client_pb2 as pb
from realtime_centrifuge.protobuf.encode import varint
from realtime_hub.channels import DEMO_CHANNEL_TABLE

from ..sdk import PyClient, _ClientEvents, drain, next_item
from .test_fanout import hypercorn

SECRET = "test-secret-for-the-protobuf-tests-0123"
PATH = "/connection/websocket"
PUBLISH_SCRIPT = """\
body = request.json
response.json({"delivered": broadcast(body["data"], channel=body["channel"])})
"""


def mint(user: str, expire_in: float = 3600) -> str:
    claims = {"sub": user, "exp": int(time.time() + expire_in)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def rpc_plugin() -> types.ModuleType:
    module = types.ModuleType("test_centrifuge_protobuf_rpc")

    @hookimpl
    def rpc(user: str, method: str, data: Any) -> Any:
        if method == "echo":
            return {"user": user, "echo": data}
        if method == "raw":
            return b"\x00\xffraw"  # bytes: sent as they are
        return None

    module.rpc = rpc  # type: ignore[attr-defined]
    return module


@pytest.fixture(params=["fast-path", "plain"])
async def server(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[int]:
    (tmp_path / "publish.py").write_text(PUBLISH_SCRIPT)
    plugin = rpc_plugin()
    sys.modules[plugin.__name__] = plugin
    settings = {
        "token_hmac_secret": SECRET,
        "channel": DEMO_CHANNEL_TABLE,
        "fast_path": request.param == "fast-path",
        "script_timeout": 5,
    }
    try:
        app = create_app(tmp_path, settings=settings, plugins=[plugin])
        async with hypercorn(app) as port:
            hosts[port] = get_host(app)
            yield port
            del hosts[port]
    finally:
        del sys.modules[plugin.__name__]


#: Each running server's host, by port (for the server API's node).
hosts: dict[int, Host] = {}


def url(port: int) -> str:
    return f"ws://127.0.0.1:{port}{PATH}"


async def broadcast(port: int, channel: str, data: Any) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/publish.py", json={"channel": channel, "data": data}
        )
    response.raise_for_status()
    delivered: int = response.json()["delivered"]
    return delivered


class ProtoClient(PyClient):
    """tests/sdk.py's PyClient, speaking protobuf (the same SDK, one flag set)."""

    def __init__(
        self,
        address: str,
        *,
        token: str = "",
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        super().__init__(address, token=token)
        getter = None
        if get_token is not None:
            inner = get_token

            async def counted() -> str:
                self.events.tokens_fetched += 1
                return await inner()

            getter = counted
        self.client = Client(
            address,
            events=_ClientEvents(self.events),
            token=token,
            get_token=getter,
            name="python-protobuf-test",
            max_reconnect_delay=2.0,
            use_protobuf=True,
        )


async def test_protobuf_sdk_does_everything_the_json_one_does(server: int) -> None:
    alice = ProtoClient(url(server), token=mint("alice"))
    try:
        connected = await alice.connect()
        assert connected.client
        room = await alice.subscribe("chat:room")
        # A script's broadcast(): the JSON text as bytes, with its offset in the stream.
        assert await broadcast(server, "chat:room", {"text": "from a script"}) == 1
        ctx = await next_item(room.publications)
        assert json.loads(ctx.pub.data) == {"text": "from a script"}
        assert ctx.pub.offset == 1 and ctx.pub.info is None

        sub, _ = alice.subs["chat:room"]
        await sub.publish(b'{"text": "from alice"}')
        ctx = await next_item(room.publications)
        assert ctx.pub.data == b'{"text": "from alice"}'  # byte for byte, as sent
        assert ctx.pub.info is not None and ctx.pub.info.user == "alice"
        assert ctx.pub.info.client == connected.client
        await sub.publish(b"\x00\x01 not json")  # binary, passed through as it is
        assert (await next_item(room.publications)).pub.data == b"\x00\x01 not json"

        presence = await sub.presence()
        assert {info.user for info in presence.clients.values()} == {"alice"}
        assert connected.client in presence.clients
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (1, 1)

        history = await sub.history(limit=10)
        assert [pub.offset for pub in history.publications] == [1, 2, 3]
        assert json.loads(history.publications[0].data) == {"text": "from a script"}
        assert history.publications[1].info.user == "alice"
        assert history.publications[1].data == b'{"text": "from alice"}'
        assert history.publications[2].data == b"\x00\x01 not json"
        assert history.offset == 3 and history.epoch

        echoed = await alice.client.rpc("echo", b"[1, 2]")
        assert json.loads(echoed.data) == {"user": "alice", "echo": [1, 2]}
        assert (await alice.client.rpc("raw", b"")).data == b"\x00\xffraw"
        assert drain(alice.events.disconnected) == []
    finally:
        await alice.close()


async def test_protobuf_sdk_recovers_what_it_missed(server: int) -> None:
    ada = ProtoClient(url(server), token=mint("ada"))
    try:
        await ada.connect()
        room = await ada.subscribe("chat:feed")
        got = []
        for n in range(3):
            await broadcast(server, "chat:feed", {"n": n})
            ctx = await next_item(room.publications)
            got.append((json.loads(ctx.pub.data)["n"], ctx.pub.offset))
        await ada.client.disconnect()
        for n in range(3, 6):  # missed while away
            await broadcast(server, "chat:feed", {"n": n})
        await ada.connect()
        back = await next_item(room.subscribed)
        assert back.was_recovering and back.recovered
        for _ in range(3):
            ctx = await next_item(room.publications)
            got.append((json.loads(ctx.pub.data)["n"], ctx.pub.offset))
        assert got == [(n, n + 1) for n in range(6)]  # each once, in order, no hole
    finally:
        await ada.close()


async def test_protobuf_sdk_refreshes_its_token(server: int) -> None:
    async def get_token() -> str:
        return mint("carol", expire_in=2)

    carol = ProtoClient(url(server), get_token=get_token)
    try:
        await carol.connect()
        room = await carol.subscribe("chat:refresh")
        sent = list(range(16))
        for number in sent:  # 4 s: two 2-second tokens at least
            await broadcast(server, "chat:refresh", {"n": number})
            await asyncio.sleep(0.25)
        received = [json.loads((await next_item(room.publications)).pub.data)["n"] for _ in sent]
        assert received == sent
        assert carol.events.tokens_fetched >= 2  # the first one and a refresh at least
        assert drain(carol.events.disconnected) == []
        assert drain(carol.events.connected) == []  # connected once, never again
    finally:
        await carol.close()


async def test_json_and_protobuf_clients_get_the_same_publications(server: int) -> None:
    json_client = PyClient(url(server), token=mint("jay"))
    proto_client = ProtoClient(url(server), token=mint("pro"))
    try:
        await json_client.connect()
        await proto_client.connect()
        json_room = await json_client.subscribe("chat:mixed")
        proto_room = await proto_client.subscribe("chat:mixed")
        assert await broadcast(server, "chat:mixed", {"text": "héllo", "n": [1, 2.5]}) == 2
        json_sub, _ = json_client.subs["chat:mixed"]
        proto_sub, _ = proto_client.subs["chat:mixed"]
        await json_sub.publish({"from": "json"})
        await proto_sub.publish(b'{"from":"protobuf"}')
        seen_json = [await next_item(json_room.publications) for _ in range(3)]
        seen_proto = [await next_item(proto_room.publications) for _ in range(3)]
        as_json = [(ctx.pub.data, ctx.pub.offset) for ctx in seen_json]
        as_proto = [(json.loads(ctx.pub.data), ctx.pub.offset) for ctx in seen_proto]
        assert (
            as_json
            == as_proto
            == [
                ({"text": "héllo", "n": [1, 2.5]}, 1),
                ({"from": "json"}, 2),
                ({"from": "protobuf"}, 3),
            ]
        )
        publishers = [(ctx.pub.info and ctx.pub.info.user) for ctx in seen_proto]
        assert publishers == [None, "jay", "pro"]
        # Bytes from a protobuf client reach a JSON client as base64 text.
        await proto_sub.publish(b"\xff\x00")
        assert (await next_item(proto_room.publications)).pub.data == b"\xff\x00"
        assert (await next_item(json_room.publications)).pub.data == "/wA="
    finally:
        await json_client.close()
        await proto_client.close()


def framed(*commands: Any) -> bytes:
    out = b""
    for command in commands:
        raw = command.SerializeToString()
        out += varint(len(raw)) + raw
    return out


def first_reply(data: bytes | str) -> Any:
    assert isinstance(data, bytes)
    return pb.Reply.FromString(data[1 : 1 + data[0]])  # small replies: a one-byte length


async def until_closed(ws: ClientConnection) -> None:
    while True:
        await asyncio.wait_for(ws.recv(), 5)


@pytest.mark.parametrize(
    "bad",
    [
        b"\x80",  # a truncated varint
        b"\xff\xff\xff\xff\x07\x08\x01",  # a 2 GiB length prefix, three bytes there
        b"\x02\x0a\x00",  # Command.id sent as bytes: the wrong wire type
        b"\x03\x22\x01\x0a",  # a request cut short
        framed(pb.Command(id=5)),  # an id without a request
        "{}",  # a text frame: JSON on a protobuf connection
    ],
)
async def test_malformed_protobuf_closes_3501_and_others_are_served(
    server: int, bad: bytes | str
) -> None:
    healthy = ProtoClient(url(server), token=mint("healthy"))
    try:
        await healthy.connect()
        room = await healthy.subscribe("chat:calm")
        async with connect(url(server), subprotocols=["centrifuge-protobuf"]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == "centrifuge-protobuf"
            await ws.send(framed(pb.Command(id=1, connect=pb.ConnectRequest(token=mint("evil")))))
            assert first_reply(await ws.recv()).connect.client
            await ws.send(bad)
            with pytest.raises(ConnectionClosed):
                await until_closed(ws)
            assert ws.close_code == 3501
        assert await broadcast(server, "chat:calm", {"still": "here"}) == 1
        assert json.loads((await next_item(room.publications)).pub.data) == {"still": "here"}
        assert drain(healthy.events.disconnected) == []
    finally:
        await healthy.close()


async def test_protobuf_by_query_parameter_as_go_allows(server: int) -> None:
    for query in ("format=protobuf", "cf_protocol=protobuf"):
        async with connect(f"{url(server)}?{query}") as ws:
            assert ws.subprotocol is None  # none was asked for
            await ws.send(framed(pb.Command(id=1, connect=pb.ConnectRequest(token=mint("q")))))
            reply = first_reply(await ws.recv())
            assert reply.id == 1 and reply.connect.client
            await ws.send(framed(pb.Command(id=2, rpc=pb.RPCRequest(method="echo", data=b"7"))))
            reply = first_reply(await ws.recv())
            assert json.loads(reply.rpc.data) == {"user": "q", "echo": 7}
    # Without either, the same connection speaks JSON.
    async with connect(url(server)) as ws:
        await ws.send(json.dumps({"id": 1, "connect": {"token": mint("j")}}))
        assert json.loads(await ws.recv())["connect"]["client"]


async def test_server_api_reaches_protobuf_connections(server: int) -> None:
    node = get_node(hosts[server])
    dora = ProtoClient(url(server), token=mint("dora"))
    try:
        await dora.connect()
        await node.subscribe("dora", "chat:pushed")  # the subscribe push, in protobuf
        delivered = 0
        deadline = time.monotonic() + 5
        while delivered == 0 and time.monotonic() < deadline:
            delivered = await broadcast(server, "chat:pushed", {"server": "side"})
        assert delivered == 1
        ctx = await next_item(dora.events.server_publications)
        assert ctx.channel == "chat:pushed" and json.loads(ctx.pub.data) == {"server": "side"}
        await node.disconnect("dora", code=4500, reason="bye")  # as a close frame
        disconnected = await next_item(dora.events.disconnected)
        assert (disconnected.code, disconnected.reason) == (4500, "bye")
    finally:
        await dora.close()
