"""HTTP-streaming, SSE and /emulation: the Centrifuge protocol without WebSockets.

Raw HTTP clients against ``realtime run``: a stream carries the replies and pushes,
each command goes in its own ``POST /emulation``, to whichever process the request
reaches (routed through Redis to the one holding the stream).
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import pytest

from realtime import create_app, get_host
from realtime_broker import Publication
from realtime_centrifuge.protobuf import client_pb2 as pb
from realtime_centrifuge.protobuf.encode import varint
from realtime_hub import get_hub

from ..conftest import FAN_OUT_MODES, RedisServer, Server, eventually
from .test_fanout import hypercorn

SECRET = "emulation-test-secret-long-enough-32b"
API_KEY = "emulation-api-key"
#: Publications the slow-reader test sends.
COUNT = 200
ARGS = ("--token-hmac-secret", SECRET, "--api-key", API_KEY)


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


def connect_command(user: str = "alice", command_id: int = 1) -> str:
    return json.dumps({"id": command_id, "connect": {"token": token(user), "name": "test"}})


def subscribe(channel: str, command_id: int = 2) -> dict[str, Any]:
    return {"id": command_id, "subscribe": {"channel": channel}}


@pytest.fixture(params=list(FAN_OUT_MODES))
def server(app_dir: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(app_dir, *ARGS, *FAN_OUT_MODES[request.param]).start()
    yield srv
    srv.stop()


class Stream:
    """One emulated connection's replies, as they arrive."""

    def __init__(self) -> None:
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ended = asyncio.Event()
        self.connect: dict[str, Any] = {}

    async def next(self, timeout: float = 10.0) -> dict[str, Any]:
        return await asyncio.wait_for(self.replies.get(), timeout)

    async def until(self, test: Any, timeout: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                reply = await self.replies.get()
                if test(reply):
                    return reply

    @property
    def node(self) -> str:
        return str(self.connect["node"])

    @property
    def session(self) -> str:
        return str(self.connect["session"])


def _take(stream: Stream, text: str) -> None:
    for line in text.split("\n"):
        if line.strip():
            stream.replies.put_nowait(json.loads(line))


async def _pump_lines(response: httpx.Response, stream: Stream) -> None:
    try:
        async for line in response.aiter_lines():
            _take(stream, line)
    except httpx.HTTPError:
        pass
    finally:
        stream.ended.set()


async def _pump_events(response: httpx.Response, stream: Stream) -> None:
    data: list[str] = []
    try:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data.append(line[len("data: ") :])
            elif line == "" and data:
                _take(stream, "\n".join(data))
                data = []
    except httpx.HTTPError:
        pass
    finally:
        stream.ended.set()


@asynccontextmanager
async def opened(base: str, kind: str, user: str = "alice") -> AsyncIterator[Stream]:
    """An http_stream or sse connection, connected (its connect result read)."""
    stream = Stream()
    async with httpx.AsyncClient(base_url=base, timeout=30) as http:
        if kind == "http_stream":
            request = http.build_request(
                "POST",
                "/connection/http_stream",
                content=connect_command(user),
                headers={"content-type": "application/json"},
            )
        else:
            request = http.build_request(
                "GET", f"/connection/sse?cf_connect={quote(connect_command(user))}"
            )
        response = await http.send(request, stream=True)
        assert response.status_code == 200, response.status_code
        pump = _pump_lines if kind == "http_stream" else _pump_events
        task = asyncio.create_task(pump(response, stream))
        try:
            reply = await stream.next()
            assert reply["id"] == 1, reply
            stream.connect = reply["connect"]
            yield stream
        finally:
            task.cancel()
            await response.aclose()


async def emulate(base: str, stream: Stream, *commands: dict[str, Any]) -> int:
    """POST the commands to /emulation on ``base`` (a fresh connection each time)."""
    body = {
        "node": stream.node,
        "session": stream.session,
        "data": "\n".join(json.dumps(command) for command in commands),
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post("/emulation", json=body)
    return response.status_code


async def broadcast(base: str, message: str) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.get("/send.py", params={"message": message})
    assert response.status_code == 200


async def api(base: str, method: str, body: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        response = await http.post(f"/api/{method}", json=body, headers={"x-api-key": API_KEY})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


# One process ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["http_stream", "sse"])
async def test_a_stream_connects_subscribes_receives_and_is_disconnected(
    server: Server, kind: str
) -> None:
    async with opened(server.url, kind) as stream:
        assert stream.connect["client"] and stream.node and stream.session
        assert stream.session != stream.connect["client"]  # not what presence shows
        status = await emulate(server.url, stream, {"id": 2, "subscribe": {"channel": "default"}})
        assert status == 204
        reply = await stream.next()
        assert reply["id"] == 2 and "subscribe" in reply, reply
        await broadcast(server.url, "hello over " + kind)
        push = await stream.next()
        assert push["push"]["channel"] == "default"
        assert push["push"]["pub"]["data"] == "hello over " + kind
        # Two commands in one request, answered in order.
        rpc = [{"id": number, "rpc": {"method": "m"}} for number in (3, 4)]
        assert await emulate(server.url, stream, *rpc) == 204
        replies = [await stream.next(), await stream.next()]
        assert [reply["id"] for reply in replies] == [3, 4]
        assert all(reply["error"]["code"] == 108 for reply in replies)  # no RPC hook
        # The server API's disconnect: a disconnect push, then the body ends.
        bye = {"code": 4000, "reason": "bye"}
        # Another session of alice's is not this one: untouched.
        other = {"user": "alice", "session": "not-" + stream.session, "disconnect": bye}
        await api(server.url, "disconnect", other)
        assert await emulate(server.url, stream, {"id": 5, "rpc": {"method": "m"}}) == 204
        assert (await stream.next())["id"] == 5  # still connected, nothing before the reply
        target = {"user": "alice", "session": stream.session, "disconnect": bye}
        await api(server.url, "disconnect", target)
        push = await stream.until(lambda reply: "disconnect" in reply.get("push", {}))
        assert push["push"]["disconnect"] == {"code": 4000, "reason": "bye"}
        await asyncio.wait_for(stream.ended.wait(), 5)


async def test_a_client_publishes_and_another_stream_gets_it(server: Server) -> None:
    async with (
        opened(server.url, "http_stream", "alice") as alice,
        opened(server.url, "sse", "bob") as bob,
    ):
        for who in (alice, bob):
            await emulate(server.url, who, {"id": 2, "subscribe": {"channel": "chat:room"}})
            assert (await who.until(lambda reply: reply.get("id") == 2))["id"] == 2
        command = {"id": 3, "publish": {"channel": "chat:room", "data": {"text": "hi"}}}
        assert await emulate(server.url, alice, command) == 204
        for who in (alice, bob):
            push = await who.until(lambda reply: "pub" in reply.get("push", {}))
            assert push["push"]["pub"]["data"] == {"text": "hi"}


async def test_bad_requests_get_an_http_status_and_nobody_else_is_touched(
    server: Server,
) -> None:
    async with (
        opened(server.url, "http_stream") as stream,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        body = {"node": stream.node, "session": stream.session, "data": "{}"}
        # A node nobody knows: 404, as Go; a session nobody holds on a known node: 204.
        assert (await http.post("/emulation", json={**body, "node": "nope"})).status_code == 404
        assert (await http.post("/emulation", json={**body, "session": "x"})).status_code == 204
        for bad in (b"not json", b"[]", b'{"node": 1}', b'{"node":"a","session":"b","data":3}'):
            response = await http.post(
                "/emulation", content=bad, headers={"content-type": "application/json"}
            )
            assert response.status_code == 400, bad
        for bad in (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x0a\x85", b"\x0f"):
            response = await http.post(
                "/emulation", content=bad, headers={"content-type": "application/octet-stream"}
            )
            assert response.status_code == 400, bad
        huge = json.dumps({**body, "data": "x" * (70 * 1024)})
        response = await http.post(
            "/emulation", content=huge, headers={"content-type": "application/json"}
        )
        assert response.status_code == 413
        # Its body was not read: the connection is not kept for another request.
        assert response.headers["connection"] == "close"
        response = await http.post("/connection/http_stream", content=b"x" * (70 * 1024))
        assert response.status_code == 413
        assert (await http.get("/emulation")).status_code == 405
        assert (await http.get("/connection/http_stream")).status_code == 405
        assert (await http.get("/connection/sse")).status_code == 400
        assert (await http.options("/emulation")).status_code == 204
        # The stream is still served.
        await emulate(server.url, stream, {"id": 7, "subscribe": {"channel": "default"}})
        assert (await stream.until(lambda reply: reply.get("id") == 7))["id"] == 7


@pytest.mark.parametrize("kind", ["http_stream", "sse"])
async def test_a_malformed_command_ends_only_its_own_stream(server: Server, kind: str) -> None:
    async with opened(server.url, kind, "alice") as bad, opened(server.url, kind, "bob") as good:
        body = {"node": bad.node, "session": bad.session, "data": "{not json"}
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            assert (await http.post("/emulation", json=body)).status_code == 204
        push = await bad.until(lambda reply: "disconnect" in reply.get("push", {}))
        assert push["push"]["disconnect"]["code"] == 3501
        await asyncio.wait_for(bad.ended.wait(), 5)
        await emulate(server.url, good, {"id": 2, "subscribe": {"channel": "default"}})
        await good.until(lambda reply: reply.get("id") == 2)
        await broadcast(server.url, "still here")
        push = await good.until(lambda reply: "pub" in reply.get("push", {}))
        assert push["push"]["pub"]["data"] == "still here"


async def test_a_bad_connect_body_gets_a_disconnect_and_the_end(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await http.post("/connection/http_stream", content=b'{"id":1,"connect":7}')
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.text.splitlines() if line.strip()]
        assert lines[-1]["push"]["disconnect"]["code"] == 3501


async def test_a_slow_stream_reader_is_bounded_like_a_slow_websocket(app_dir: Path) -> None:
    srv = Server(app_dir, *ARGS, "--client-buffer", "65536").start()
    try:
        # A reader that never reads, with small socket buffers on its side.
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", srv.port))
        body = connect_command("slow").encode()
        await loop.sock_sendall(
            sock,
            b"POST /connection/http_stream HTTP/1.1\r\nhost: x\r\n"
            b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body),
        )
        head = b""
        while b'"connect"' not in head or not head.rstrip(b"\r\n0").endswith(b"}"):
            chunk = await loop.sock_recv(sock, 65536)
            assert chunk, head
            head += chunk
        assert head.startswith(b"HTTP/1.1 200"), head
        text = head.decode(errors="replace")
        connect = json.loads(next(line for line in text.split("\r\n") if '"connect"' in line))
        slow = Stream()
        slow.connect = connect["connect"]
        async with opened(srv.url, "http_stream", "fast") as fast:
            for who in (slow, fast):
                assert await emulate(srv.url, who, subscribe("default")) == 204
            await fast.until(lambda reply: reply.get("id") == 2)
            big = "y" * 30_000  # 6 MB in all: past what the kernel's buffers hold
            for number in range(COUNT):
                await broadcast(srv.url, f"{number} {big}")
            for number in range(COUNT):
                push = await fast.until(lambda reply: "pub" in reply.get("push", {}))
                assert push["push"]["pub"]["data"].startswith(f"{number} ")

            async def only_fast() -> bool:
                info = await api(srv.url, "info", {})
                return int(info["result"]["nodes"][0]["num_clients"]) == 1

            # The slow one was closed by the overflow policy; the fast one stays.
            await eventually(lambda: "is not reading" in srv.log)
            await eventually(only_fast)
            assert not fast.ended.is_set()
        sock.close()
    finally:
        srv.stop()


async def test_pings_on_the_stream_pongs_through_emulation(app_dir: Path) -> None:
    srv = Server(app_dir, *ARGS, "--client-ping-interval", "1", "--client-pong-timeout", "1")
    srv.start()
    try:
        async with opened(srv.url, "sse", "ann") as answering, opened(srv.url, "sse", "bo") as mute:
            for _ in range(3):  # three pings answered: still connected
                assert await answering.next(5) == {}
                assert await emulate(srv.url, answering, {}) == 204
            push = await mute.until(lambda reply: "disconnect" in reply.get("push", {}), 10)
            assert push["push"]["disconnect"]["code"] == 3012  # no pong
            await asyncio.wait_for(mute.ended.wait(), 5)
            assert not answering.ended.is_set()
    finally:
        srv.stop()


async def test_emulation_requests_past_the_rate_get_429(app_dir: Path) -> None:
    srv = Server(app_dir, *ARGS, "--max-incoming-rate", "10").start()
    try:
        async with (
            opened(srv.url, "http_stream") as stream,
            httpx.AsyncClient(base_url=srv.url, timeout=10) as http,
        ):
            statuses = []
            for number in range(30):
                command = json.dumps({"id": 10 + number, "rpc": {"method": "m"}})
                body = {"node": stream.node, "session": stream.session, "data": command}
                statuses.append((await http.post("/emulation", json=body)).status_code)
            assert set(statuses) == {204, 429}, statuses
            assert statuses[:9] == [204] * 9  # the burst of 10 passes (the connect took one)
            answered = [await stream.next() for _ in range(statuses.count(204))]
            assert all(reply["error"]["code"] == 108 for reply in answered)  # still served
    finally:
        srv.stop()


async def test_streams_per_address_are_capped_as_websockets_are(app_dir: Path) -> None:
    srv = Server(app_dir, *ARGS, "--max-connections-per-ip", "2").start()
    try:
        async with (
            opened(srv.url, "http_stream"),
            opened(srv.url, "sse"),
            httpx.AsyncClient(base_url=srv.url, timeout=10) as http,
        ):
            response = await http.post("/connection/http_stream", content=connect_command())
            assert response.status_code == 429

        # Both ended: the address may open streams again.
        async def reopened() -> bool:
            async with opened(srv.url, "http_stream") as stream:
                return bool(stream.session)

        await eventually(reopened)
    finally:
        srv.stop()


# Across processes -------------------------------------------------------------------


async def test_emulation_requests_reaching_another_host_are_routed_to_the_stream(
    app_dir: Path, redis_server: RedisServer
) -> None:
    one = Server(app_dir, *ARGS, "--broker", redis_server.url).start()
    two = Server(app_dir, *ARGS, "--broker", redis_server.url).start()
    try:
        async with (
            opened(one.url, "http_stream", "alice") as alice,
            opened(two.url, "sse", "bob") as bob,
        ):
            assert alice.node != bob.node
            # Each one's commands sent to the other host.
            assert await emulate(two.url, alice, subscribe("chat:x")) == 204
            assert await emulate(one.url, bob, subscribe("chat:x")) == 204
            for who in (alice, bob):
                await who.until(lambda reply: reply.get("id") == 2)
            command = {"id": 3, "publish": {"channel": "chat:x", "data": {"n": 1}}}
            assert await emulate(two.url, alice, command) == 204
            for who in (alice, bob):
                push = await who.until(lambda reply: "pub" in reply.get("push", {}))
                assert push["push"]["pub"]["data"] == {"n": 1}
            # A node that left the cluster (or never was): 404 on either host.
            body = {"node": "gone", "session": alice.session, "data": "{}"}
            async with httpx.AsyncClient(timeout=10) as http:
                assert (await http.post(two.url + "/emulation", json=body)).status_code == 404
    finally:
        one.stop()
        two.stop()


async def test_emulation_over_two_workers(app_dir: Path, redis_server: RedisServer) -> None:
    srv = Server(app_dir, *ARGS, "--workers", "2", "--broker", redis_server.url).start()
    try:
        async with opened(srv.url, "http_stream") as stream:
            # Each request on a fresh connection: the kernel spreads them over the workers.
            for number in range(12):
                command = {"id": 10 + number, "rpc": {"method": "nothing"}}
                assert await emulate(srv.url, stream, command) == 204
                reply = await stream.until(lambda reply, n=number: reply.get("id") == 10 + n)
                assert reply["error"]["code"] == 108  # answered: no RPC hook here
        assert srv.log.count("Running on") >= 2
    finally:
        srv.stop()


# Protobuf ---------------------------------------------------------------------------


def _delimited(*messages: Any) -> bytes:
    return b"".join(varint(len(data)) + data for data in (m.SerializeToString() for m in messages))


def _replies(buffer: bytearray) -> Iterator[pb.Reply]:
    """The whole varint-delimited replies at the start of ``buffer``, taken off it."""
    while buffer:
        size = shift = pos = 0
        while pos < len(buffer):
            byte = buffer[pos]
            size |= (byte & 0x7F) << shift
            shift += 7
            pos += 1
            if not byte & 0x80:
                break
        else:
            return
        if len(buffer) < pos + size:
            return
        reply = pb.Reply()
        reply.ParseFromString(bytes(buffer[pos : pos + size]))
        del buffer[: pos + size]
        yield reply


async def test_a_protobuf_http_stream_with_protobuf_emulation_requests(server: Server) -> None:
    connect = pb.Command(id=1, connect=pb.ConnectRequest(token=token("pat")))
    replies: asyncio.Queue[pb.Reply] = asyncio.Queue()
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        request = http.build_request(
            "POST",
            "/connection/http_stream",
            content=_delimited(connect),
            headers={"content-type": "application/octet-stream"},
        )
        response = await http.send(request, stream=True)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/octet-stream"

        async def pump() -> None:
            buffer = bytearray()
            async for chunk in response.aiter_raw():
                buffer += chunk
                for reply in _replies(buffer):
                    replies.put_nowait(reply)

        task = asyncio.create_task(pump())
        try:
            first = await asyncio.wait_for(replies.get(), 10)
            assert first.id == 1 and first.connect.client and first.connect.session
            subscribe = pb.Command(id=2, subscribe=pb.SubscribeRequest(channel="default"))
            emulation = pb.EmulationRequest(
                node=first.connect.node, session=first.connect.session, data=_delimited(subscribe)
            )
            posted = await http.post(
                "/emulation",
                content=emulation.SerializeToString(),
                headers={"content-type": "application/octet-stream"},
            )
            assert posted.status_code == 204
            assert (await asyncio.wait_for(replies.get(), 10)).id == 2
            await broadcast(server.url, "to protobuf")
            push = await asyncio.wait_for(replies.get(), 10)
            assert push.push.channel == "default" and push.push.pub.data == b"to protobuf"
            # Garbage as commands: the session (only) ends, with its disconnect push.
            emulation.data = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"
            posted = await http.post(
                "/emulation",
                content=emulation.SerializeToString(),
                headers={"content-type": "application/octet-stream"},
            )
            assert posted.status_code == 204
            last = await asyncio.wait_for(replies.get(), 10)
            assert last.push.disconnect.code == 3501
            await asyncio.wait_for(task, 10)  # the body ended
        finally:
            task.cancel()
            await response.aclose()


# In this process: what a taken-over stream costs -----------------------------------


async def test_taken_over_streams_keep_no_task_of_hypercorns(tmp_path: Path) -> None:
    app = create_app(tmp_path, settings={"token_hmac_secret": SECRET})
    async with hypercorn(app) as port, httpx.AsyncClient(timeout=10) as http:
        base = f"http://127.0.0.1:{port}"
        before = len(asyncio.all_tasks())
        responses = []
        for number in range(20):
            command = connect_command(f"u{number}")
            request = (
                http.build_request("POST", f"{base}/connection/http_stream", content=command)
                if number % 2
                else http.build_request("GET", f"{base}/connection/sse?cf_connect={quote(command)}")
            )
            response = await http.send(request, stream=True)
            assert response.status_code == 200
            responses.append(response)
        hub = get_hub(get_host(app))
        await eventually(lambda: len(hub) == 20)
        assert all(client.wire is not None for client in hub)
        assert {type(client.wire.framing).__name__ for client in hub} == {"_Chunked"}  # type: ignore[union-attr]
        # The client's end (httpx's read task is not in this count: it is awaited here).
        await eventually(lambda: len(asyncio.all_tasks()) <= before + 2)
        assert hub.publish("default", Publication("x")) == 0  # nobody subscribed
        for response in responses:
            await response.aclose()
        await eventually(lambda: len(hub) == 0)
