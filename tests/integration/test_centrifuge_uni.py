"""Centrifugo's one-way transports over real sockets: uni_websocket, uni_sse, uni_http_stream.

One Hypercorn in the test's loop; the clients are plain ``websockets`` and ``httpx``
(no SDK), as a one-way client needs none. Each gets a script's ``broadcast()`` on a
channel its token, the server API or an ``authorize_connect`` hook granted; bad
input gets Go's status or close and touches nobody else; a reader that stops is
bounded as a slow WebSocket is.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime import create_app, get_host, hookimpl
from realtime_broker import Publication, get_broker
from realtime_centrifuge import ConnectAuth, Error
from realtime_centrifuge.uni_codec import UniJSONCodec
from realtime_hub import WEBSOCKET, get_hub

from ..conftest import RedisServer, Server, eventually
from .test_fanout import hypercorn, send_buffer_max

SECRET = "test-secret-long-enough-for-hs256-32b"
API_KEY = "uni-api-key"
WS = "/connection/uni_websocket"
SSE = "/connection/uni_sse"
STREAM = "/connection/uni_http_stream"
SEND = "from realtime_broadcast import broadcast\nbroadcast(request.values['m'], channel='news')\n"


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")


def cf_connect(**request: Any) -> dict[str, str]:
    return {"cf_connect": json.dumps(request)}


@asynccontextmanager
async def served(
    tmp_path: Path, plugins: tuple[types.ModuleType, ...] = (), **settings: Any
) -> AsyncIterator[tuple[Quart, int]]:
    (tmp_path / "send.py").write_text(SEND)
    config = {"token_hmac_secret": SECRET, "api_key": API_KEY, **settings}
    app = create_app(tmp_path, settings=config, plugins=list(plugins))
    async with hypercorn(app) as port:
        yield app, port


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    """Both ways a connection is written: taken over from Hypercorn, or through ASGI."""
    async with served(tmp_path, fast_path=request.param == "fast-path") as app_port:
        yield app_port


async def script_broadcast(port: int, message: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/send.py", params={"m": message})
    assert response.status_code == 200, response.text


class Lines:
    """A one-way HTTP stream read by its messages: SSE ``data:`` events or NDJSON lines."""

    def __init__(self, response: httpx.Response, sse: bool) -> None:
        self.response = response
        self.sse = sse
        self._chunks = response.aiter_text()
        self._buffer = ""

    async def next(self, timeout: float = 5.0) -> Any:
        separator = "\n\n" if self.sse else "\n"
        async with asyncio.timeout(timeout):
            while True:
                head, found, rest = self._buffer.partition(separator)
                if found:
                    self._buffer = rest
                    text = head.strip()
                    if not text:
                        continue  # Go's "\r\n" before the first event
                    if self.sse:
                        assert text.startswith("data: "), text
                        text = text[len("data: ") :]
                    return json.loads(text)
                self._buffer += await anext(self._chunks)

    async def ended(self, timeout: float = 5.0) -> list[Any]:
        """Every message left, once the server ended the body."""
        rest = []
        async with asyncio.timeout(timeout):
            async for chunk in self._chunks:
                self._buffer += chunk
        for block in self._buffer.split("\n\n" if self.sse else "\n"):
            text = block.strip()
            if text:
                rest.append(json.loads(text.removeprefix("data: ")))
        return rest


@asynccontextmanager
async def stream(
    port: int, path: str, *, method: str = "GET", sse: bool = True, **kwargs: Any
) -> AsyncIterator[Lines]:
    url = f"http://127.0.0.1:{port}{path}"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(method, url, **kwargs) as response,
    ):
        assert response.status_code == 200, await response.aread()
        yield Lines(response, sse)


async def next_push(ws: ClientConnection, timeout: float = 5.0) -> Any:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribed(app: Quart, channel: str, count: int = 1) -> None:
    hub = get_hub(get_host(app))
    await eventually(lambda: hub.subscribers(channel) >= count, message=f"{count} in {channel}")


# -- each transport gets a script's broadcast on a token's channel -------------------


async def test_uni_websocket_connect_as_first_message_with_the_channels_claim(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    async with connect(f"ws://127.0.0.1:{port}{WS}") as ws:
        await ws.send(json.dumps({"token": token("ann", channels=["news"])}))
        connected = (await next_push(ws))["connect"]
        assert connected["subs"] == {"news": {}} and connected["client"]
        assert "pong" not in connected  # a one-way client answers no ping
        await script_broadcast(port, "hello uni")
        assert await next_push(ws) == {"channel": "news", "pub": {"data": "hello uni"}}
        await ws.send("anything: a one-way client's messages are dropped")
        await get_broker(get_host(app)).publish("news", Publication('{"n":2}', json=True))
        assert await next_push(ws) == {"channel": "news", "pub": {"data": {"n": 2}}}


async def test_uni_websocket_connect_in_the_url_with_the_subs_claim(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    claims = {"subs": {"news": {"data": {"welcome": 1}}}}
    query = httpx.QueryParams(cf_connect(token=token("bo", **claims)))
    async with connect(f"ws://127.0.0.1:{port}{WS}?{query}") as ws:
        assert (await next_push(ws))["connect"]["subs"] == {"news": {"data": {"welcome": 1}}}
        await script_broadcast(port, "via url")
        assert (await next_push(ws))["pub"]["data"] == "via url"


async def test_uni_sse_with_cf_connect_and_with_a_post_body(
    server: tuple[Quart, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = server
    encoded: list[str] = []
    encode = UniJSONCodec.encode_publication

    def counted(self: UniJSONCodec, channel: str, *args: Any, **kwargs: Any) -> Any:
        encoded.append(channel)
        return encode(self, channel, *args, **kwargs)

    monkeypatch.setattr(UniJSONCodec, "encode_publication", counted)
    params = cf_connect(token=token("cy", channels=["news"]))
    async with stream(port, SSE, params=params) as get:
        assert get.response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert "no-cache" in get.response.headers["cache-control"]
        assert (await get.next())["connect"]["subs"] == {"news": {}}
        body = json.dumps({"token": token("cy", channels=["news"])})
        async with (
            stream(port, SSE, method="POST", content=body) as post,
            connect(f"ws://127.0.0.1:{port}{WS}?{httpx.QueryParams(params)}") as ws,
        ):
            assert (await post.next())["connect"]["subs"] == {"news": {}}
            assert (await next_push(ws))["connect"]["subs"] == {"news": {}}
            await subscribed(app, "news", 3)
            # Both streams are written on the fast path, as a WebSocket is.
            hub = get_hub(get_host(app))
            streams = [c for c in hub if c.wire is not None and c.framing is not WEBSOCKET]
            assert len(streams) == 2 and all(c.direct is not None for c in streams)
            await script_broadcast(port, "to all")
            expected = {"channel": "news", "pub": {"data": "to all"}}
            assert await get.next() == expected and await post.next() == expected
            assert await next_push(ws) == expected
            assert encoded == ["news"]  # once for the three one-way clients


async def test_one_way_streams_follow_the_fast_path_setting(server: tuple[Quart, int]) -> None:
    """Taken over from Hypercorn with the fast path, through ASGI without it (as the
    emulation's streams and WebSockets are)."""
    app, port = server
    fast_path = get_hub(get_host(app)).fast_path
    params = cf_connect(token=token("cy", channels=["news"]))
    async with stream(port, SSE, params=params) as get:
        assert (await get.next())["connect"]["subs"] == {"news": {}}
        (client,) = [c for c in get_hub(get_host(app)) if c.framing is not WEBSOCKET]
        assert client.connection.chunked is fast_path  # taken over, or through ASGI
        await script_broadcast(port, "either way")
        assert await get.next() == {"channel": "news", "pub": {"data": "either way"}}


async def test_uni_http_stream_gets_newline_delimited_pushes(server: tuple[Quart, int]) -> None:
    app, port = server
    body = json.dumps({"token": token("di", channels=["news"]), "name": "curl"})
    async with stream(port, STREAM, method="POST", sse=False, content=body) as lines:
        assert (await lines.next())["connect"]["subs"] == {"news": {}}
        await script_broadcast(port, "line one")
        await get_broker(get_host(app)).publish("news", Publication('["x"]', json=True))
        assert await lines.next() == {"channel": "news", "pub": {"data": "line one"}}
        assert await lines.next() == {"channel": "news", "pub": {"data": ["x"]}}


async def test_pings_are_empty_pushes_and_no_pong_is_awaited(tmp_path: Path) -> None:
    async with served(tmp_path, client_ping_interval=1.0, client_pong_timeout=1.0) as (_, port):
        params = cf_connect(token=token("ed", channels=["news"]))
        async with stream(port, SSE, params=params) as events:
            assert (await events.next())["connect"]["ping"] == 1
            started = time.monotonic()
            assert await events.next(timeout=3) == {}  # Go's ping push
            assert await events.next(timeout=3) == {}
            assert time.monotonic() - started > 1.5  # past the pong timeout: still open
            await script_broadcast(port, "still here")
            assert (await events.next())["pub"]["data"] == "still here"


# -- subscriptions from the server API and from a hook ------------------------------


async def test_server_side_subscribe_through_the_server_api(server: tuple[Quart, int]) -> None:
    _, port = server
    params = cf_connect(token=token("fay"))
    async with stream(port, SSE, params=params) as events:
        assert (await events.next())["connect"].get("subs") is None
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as api:
            response = await api.post(
                f"http://127.0.0.1:{port}/api/subscribe", json={"user": "fay", "channel": "news"}
            )
            assert response.status_code == 200, response.text
            assert await events.next() == {"channel": "news", "subscribe": {}}
            await script_broadcast(port, "after subscribe")
            expected = {"channel": "news", "pub": {"data": "after subscribe"}}
            assert await events.next() == expected
            response = await api.post(
                f"http://127.0.0.1:{port}/api/disconnect", json={"user": "fay"}
            )
            assert response.status_code == 200, response.text
        # The stream's last push says why it ends (a WebSocket's close frame would).
        assert await events.ended() == [
            {"disconnect": {"code": 3503, "reason": "force disconnect"}}
        ]


def cookie_plugin() -> types.ModuleType:
    module = types.ModuleType("test_centrifuge_uni_hooks")

    @hookimpl
    def authorize_connect(headers: dict[str, str], data: Any) -> Any:
        if headers.get("cookie") == "session=letmein":
            return ConnectAuth(user="cookie-user", channels=("news",), data={"hi": "cookie"})
        if headers.get("cookie") == "session=banned":
            return Error(103, "permission denied")
        return None

    module.authorize_connect = authorize_connect  # type: ignore[attr-defined]
    return module


@pytest.fixture
async def hooked(tmp_path: Path) -> AsyncIterator[tuple[Quart, int]]:
    plugin = cookie_plugin()
    sys.modules[plugin.__name__] = plugin
    try:
        async with served(tmp_path, plugins=(plugin,)) as app_port:
            yield app_port
    finally:
        del sys.modules[plugin.__name__]


async def test_a_cookie_authorizes_an_event_stream_through_the_hook(
    hooked: tuple[Quart, int],
) -> None:
    _, port = hooked
    cookie = {"Cookie": "session=letmein"}
    async with stream(port, SSE, headers=cookie) as events:  # no cf_connect, no token
        connected = (await events.next())["connect"]
        assert connected["subs"] == {"news": {}} and connected["data"] == {"hi": "cookie"}
        # The request's own headers decide: a cf_connect's "headers" cannot stand in.
        forged = cf_connect(headers={"cookie": "session=letmein"})
        async with stream(port, SSE, params=forged) as other:
            assert await other.ended() == [{"disconnect": {"code": 3501, "reason": "bad request"}}]
        await script_broadcast(port, "for cookies")
        assert await events.next() == {"channel": "news", "pub": {"data": "for cookies"}}
    # A hook's refusal ends the connection with the disconnect it maps to (Go's table).
    async with stream(port, SSE, headers={"Cookie": "session=banned"}) as banned:
        assert await banned.ended() == [
            {"disconnect": {"code": 3507, "reason": "permission denied"}}
        ]
    async with connect(f"ws://127.0.0.1:{port}{WS}", additional_headers=cookie) as ws:
        await ws.send("{}")
        assert (await next_push(ws))["connect"]["subs"] == {"news": {}}


# -- bad input: Go's status or close, nobody else affected ---------------------------


async def test_bad_connect_requests_get_go_s_answers(server: tuple[Quart, int]) -> None:
    _, port = server
    base = f"http://127.0.0.1:{port}"
    good = cf_connect(token=token("gil", channels=["news"]))
    async with stream(port, SSE, params=good) as bystander, httpx.AsyncClient() as http:
        await bystander.next()
        for bad in ("{bad", "[1]", '"text"', '{"token": 5}', '{"subs": []}', "NaN"):
            response = await http.get(base + SSE, params={"cf_connect": bad})
            assert response.status_code == 400, bad
            response = await http.post(base + STREAM, content=bad)
            assert response.status_code == 400, bad
        big = json.dumps({"data": "x" * 70_000})
        assert (await http.post(base + SSE, content=big)).status_code == 413
        assert (await http.post(base + STREAM, content=big)).status_code == 413
        assert (await http.get(base + STREAM)).status_code == 405
        assert (await http.put(base + SSE, content="{}")).status_code == 405
        preflight = await http.options(base + STREAM)
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-methods"] == "POST, OPTIONS"
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}{WS}?cf_connect=%7Bbad")
        assert refused.value.response.status_code == 400
        # A bad token: the stream says why (3500), then ends; an expired one: 3005.
        for request, code in (({"token": "not.a.jwt"}, 3500),
                              ({"token": token("gil", exp=int(time.time()) - 5)}, 3005),
                              ({}, 3501)):  # fmt: skip
            async with stream(port, SSE, params=cf_connect(**request)) as refused_stream:
                (last,) = await refused_stream.ended()
                assert last["disconnect"]["code"] == code, request
        async with connect(f"ws://127.0.0.1:{port}{WS}") as ws:
            await ws.send(json.dumps({"token": "not.a.jwt"}))
            assert await next_push(ws) == {"disconnect": {"code": 3500, "reason": "invalid token"}}
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 3500
        async with connect(f"ws://127.0.0.1:{port}{WS}") as ws:
            await ws.send("[not a connect request")
            assert await next_push(ws) == {"disconnect": {"code": 3501, "reason": "bad request"}}
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 3501
        await script_broadcast(port, "unaffected")
        assert await bystander.next() == {"channel": "news", "pub": {"data": "unaffected"}}


async def test_a_silent_uni_websocket_is_closed_as_stale(tmp_path: Path) -> None:
    async with (
        served(tmp_path, client_connect_timeout=0.5) as (_, port),
        connect(f"ws://127.0.0.1:{port}{WS}") as ws,
    ):
        assert await next_push(ws) == {"disconnect": {"code": 3502, "reason": "stale"}}
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        assert ws.close_code == 3502


# -- a reader that stops is bounded like a slow WebSocket ----------------------------


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "plain"])
async def test_an_event_stream_that_stops_reading_is_closed_and_others_keep_up(
    tmp_path: Path, fast_path: bool
) -> None:
    async with served(tmp_path, client_buffer=64 * 1024, fast_path=fast_path) as (app, port):
        hub = get_hub(get_host(app))
        broker = get_broker(get_host(app))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        query = httpx.QueryParams(cf_connect(token=token("slow", channels=["news"])))
        request = f"GET {SSE}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        try:
            body = json.dumps({"token": token("quick", channels=["news"])})
            async with stream(port, STREAM, method="POST", sse=False, content=body) as quick:
                await quick.next()
                await subscribed(app, "news", 2)
                payload = json.dumps("p" * 8000)

                async def read_all() -> list[int]:
                    numbers = []
                    while (data := (await quick.next(timeout=20))["pub"]["data"]) != "done":
                        numbers.append(data[0])
                    return numbers

                reading = asyncio.create_task(read_all())
                # Past what the kernel may buffer for the stalled reader, and the hub's bound.
                most = 3 * send_buffer_max() // 8000
                sent = 0
                while hub.stats.disconnected_slow == 0 and sent < most:
                    await broker.publish("news", Publication(f"[{sent},{payload}]", json=True))
                    sent += 1
                    await asyncio.sleep(0)
                assert hub.stats.overflows == 1 and hub.stats.disconnected_slow == 1
                await eventually(lambda: hub.subscribers("news") == 1)  # the quick one
                await script_broadcast(port, "done")
                assert await asyncio.wait_for(reading, 30) == list(range(sent))
        finally:
            sock.close()


async def test_streams_per_address_are_capped_as_websockets_are(tmp_path: Path) -> None:
    async with served(tmp_path, max_connections_per_ip=2) as (app, port):
        params = cf_connect(token=token("hal", channels=["news"]))
        async with stream(port, SSE, params=params) as one:
            await one.next()
            body = json.dumps({"token": token("hal")})
            async with stream(port, STREAM, method="POST", sse=False, content=body) as two:
                await two.next()
                async with httpx.AsyncClient() as http:
                    third = await http.get(f"http://127.0.0.1:{port}{SSE}", params=params)
                assert third.status_code == 429 and "limit 2" in third.text
            # One ended: its place is free again.
            hub = get_hub(get_host(app))
            await eventually(lambda: len(hub) == 1, message="the stream's client gone")
            async with stream(port, SSE, params=params) as again:
                assert (await again.next())["connect"]["subs"] == {"news": {}}


async def test_websockets_and_every_kind_of_stream_share_one_count(tmp_path: Path) -> None:
    """``--max-connections-per-ip`` bounds what an address holds, whatever it holds:
    a WebSocket and a one-way stream leave no room for an emulated stream or another
    WebSocket."""
    async with served(tmp_path, max_connections_per_ip=2) as (app, port):
        params = cf_connect(token=token("hal", channels=["news"]))
        async with (
            connect(f"ws://127.0.0.1:{port}/connection/websocket"),
            stream(port, SSE, params=params) as one,
        ):
            await one.next()
            async with httpx.AsyncClient() as http:
                emulated = await http.post(
                    f"http://127.0.0.1:{port}/connection/http_stream",
                    content=json.dumps({"id": 1, "connect": {"token": token("hal")}}),
                )
            assert emulated.status_code == 429 and "limit 2" in emulated.text
            with pytest.raises(InvalidStatus) as refused:
                async with connect(f"ws://127.0.0.1:{port}/connection/websocket"):
                    pass
            assert refused.value.response.status_code == 429
        host = get_host(app)
        assert host.limits is not None
        await eventually(lambda: host.limits is not None and host.limits.open == 0)


async def test_one_way_clients_on_two_workers_over_redis(
    app_dir: Path, redis_server: RedisServer
) -> None:
    """Streams spread over two processes: a broadcast and the server API reach them all."""
    (app_dir / "send.py").write_text(SEND)
    server = Server(
        app_dir, "--workers", "2", "--broker", redis_server.url,
        "--token-hmac-secret", SECRET, "--api-key", API_KEY,
    ).start()  # fmt: skip
    try:
        async with contextlib.AsyncExitStack() as stack:
            sources, sessions = [], []
            for _ in range(6):  # the kernel spreads them over both workers
                params = cf_connect(token=token("ivy", channels=["news"]))
                events = await stack.enter_async_context(stream(server.port, SSE, params=params))
                connected = (await events.next())["connect"]
                assert connected["subs"] == {"news": {}}
                sessions.append(connected["session"])
                sources.append(events)
            async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as api:
                response = await api.post(
                    f"{server.url}/api/subscribe", json={"user": "ivy", "channel": "extra"}
                )
                assert response.status_code == 200, response.text
            for events in sources:
                assert await events.next() == {"channel": "extra", "subscribe": {}}
            # A session targets its one connection, wherever it is.
            async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}) as api:
                body = {"user": "ivy", "channel": "extra", "session": sessions[2]}
                response = await api.post(f"{server.url}/api/unsubscribe", json=body)
                assert response.status_code == 200, response.text
            assert (await sources[2].next())["unsubscribe"]["code"] == 2000
            await script_broadcast(server.port, "everywhere")
            for events in sources:
                assert await events.next() == {"channel": "news", "pub": {"data": "everywhere"}}
            assert len(set(sessions)) == 6
    finally:
        server.stop()
