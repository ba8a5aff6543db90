"""The Centrifuge endpoint over real WebSockets, one Hypercorn in the test's loop.

The protocol's decisions are unit-tested in test_centrifuge_session.py; here: the
transport (framing, timers, closes), the hooks, the tokens end to end, and that one
client's mistake touches nobody else.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cent
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import create_app, get_host, hookimpl
from realtime_broker import Publication, get_broker
from realtime_centrifuge import ConnectAuth, Error
from realtime_centrifuge.node import MAX_CONTROL_SIZE
from realtime_centrifuge.plugin import get_node
from realtime_hub import get_hub
from realtime_hub.channels import DEMO_CHANNEL_TABLE

from ..conftest import RedisServer, eventually
from .test_fanout import hypercorn

SECRET = "test-secret-long-enough-for-hs256-32b"
PATH = "/connection/websocket"


def token(user: str, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, secret, algorithm="HS256")


async def served_app(tmp_path: Path, **settings: Any) -> Quart:
    # The demo's namespaces (chat:*), as app/realtime.toml gives them to the real app.
    settings = {"token_hmac_secret": SECRET, "channel": DEMO_CHANNEL_TABLE, **settings}
    return create_app(tmp_path, settings=settings)


@pytest.fixture(params=["fast-path", "plain"])
def fan_out(request: pytest.FixtureRequest) -> bool:
    """Both ways a connection is read: taken over from Hypercorn, or through ASGI."""
    return bool(request.param == "fast-path")


@pytest.fixture
async def server(
    tmp_path: Path, request: pytest.FixtureRequest, fan_out: bool
) -> AsyncIterator[tuple[Quart, int]]:
    app = await served_app(tmp_path, fast_path=fan_out, **getattr(request, "param", {}))
    async with hypercorn(app) as port:
        yield app, port


class Peer:
    """A Centrifuge client by hand: commands out, replies and pushes in."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.pushes: list[dict[str, Any]] = []
        #: Leave joins and leaves out of :meth:`push` (chat rooms announce them by
        #: default; the presence tests want them).
        self.skip_join_leave = True

    async def send(self, *commands: dict[str, Any]) -> list[int]:
        ids = []
        lines = []
        for command in commands:
            self.next_id += 1
            ids.append(self.next_id)
            lines.append(json.dumps({"id": self.next_id, **command}))
        await self.ws.send("\n".join(lines))
        return ids

    async def messages(self, timeout: float = 5.0) -> list[dict[str, Any]]:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(frame, str)
        return [json.loads(line) for line in frame.split("\n")]

    async def reply(self, command_id: int, timeout: float = 5.0) -> dict[str, Any]:
        """The reply to ``command_id``; what else comes meanwhile, in the same frame
        too (pushes right after a reply), is kept for :meth:`push`."""
        async with asyncio.timeout(timeout):
            while True:
                found = None
                for message in await self.messages():
                    if found is None and message.get("id") == command_id:
                        found = message
                    elif message != {}:
                        self.pushes.append(message)
                if found is not None:
                    return found

    async def call(self, name: str, /, **params: Any) -> dict[str, Any]:
        (command_id,) = await self.send({name: params})
        return await self.reply(command_id)

    async def push(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                while self.pushes:
                    message = self.pushes.pop(0)
                    if not self._skipped(message):
                        return message
                for message in await self.messages():
                    if message != {}:  # {} is a ping
                        self.pushes.append(message)

    def _skipped(self, message: dict[str, Any]) -> bool:
        push = message.get("push", {})
        return self.skip_join_leave and ("join" in push or "leave" in push)

    async def closed(self, timeout: float = 5.0) -> tuple[int, str]:
        async with asyncio.timeout(timeout):
            try:
                while True:
                    await self.ws.recv()
            except ConnectionClosed as exc:
                received = exc.rcvd
        assert received is not None, "closed without a close frame"
        return received.code, received.reason


async def peer(port: int, **kwargs: Any) -> Peer:
    ws = await connect(f"ws://127.0.0.1:{port}{PATH}", **kwargs)
    return Peer(ws)


async def connected(port: int, user: str = "alice", **claims: Any) -> Peer:
    client = await peer(port)
    reply = await client.call("connect", token=token(user, **claims))
    assert "connect" in reply, reply
    return client


async def test_connect_subscribe_publish_round_trip(server: tuple[Quart, int]) -> None:
    _, port = server
    alice, bob = (
        await connected(port, "alice", info={"name": "Alice"}),
        await connected(port, "bob"),
    )
    for client in (alice, bob):
        sub = (await client.call("subscribe", channel="chat:room"))["subscribe"]
        # Chat rooms keep history by default: the reply says where the stream is (at
        # offset 0 in the empty epoch before any publication: both left out, as in Go).
        assert sub == {"positioned": True, "recoverable": True}
    reply = await alice.call("publish", channel="chat:room", data={"text": "hi"})
    assert reply["publish"] == {}
    push = await bob.push()
    pub = push["push"]["pub"]
    assert push["push"]["channel"] == "chat:room"
    assert pub["data"] == {"text": "hi"}
    assert pub["info"]["user"] == "alice" and pub["info"]["conn_info"] == {"name": "Alice"}
    assert "chan_info" not in pub["info"]  # empty fields are left out, as in Go
    await alice.ws.close()
    await bob.ws.close()


async def test_connect_reply_declares_pings_and_expiry(server: tuple[Quart, int]) -> None:
    _, port = server
    client = await peer(port)
    reply = await client.call("connect", token=token("alice", exp=int(time.time()) + 120))
    result = reply["connect"]
    assert result["client"] and result["version"]
    assert result["ping"] == 25 and result["pong"] is True
    assert result["expires"] is True and 100 < result["ttl"] <= 120
    await client.ws.close()


@pytest.mark.parametrize(
    "server", [{"client_ping_interval": 1.0, "client_pong_timeout": 0.5}], indirect=True
)
async def test_a_client_that_answers_pings_stays_and_one_that_does_not_is_dropped(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    polite, silent = await connected(port), await connected(port, "bob")
    for _ in range(3):  # pings go out on their timer; answered, the client stays
        assert await polite.messages(timeout=3) == [{}]
        await polite.ws.send("{}")
    assert await silent.closed(timeout=5) == (3012, "no pong")
    await polite.call("subscribe", channel="news")
    await polite.ws.close()


@pytest.mark.parametrize(
    "server", [{"client_ping_interval": 1.0, "client_pong_timeout": 0.5}], indirect=True
)
async def test_pings_go_out_on_their_timer_however_busy_the_client(
    server: tuple[Quart, int],
) -> None:
    """centrifuge-python counts only pings as a sign of life: traffic must not delay them."""
    _, port = server
    client = await connected(port)
    pings = 0
    async with asyncio.timeout(10):
        while pings < 3:
            await client.ws.send('{"send":{"data":"chatter"}}')  # no reply to a send
            try:
                frame = await asyncio.wait_for(client.ws.recv(), 0.1)
            except TimeoutError:
                continue
            assert frame == "{}"
            pings += 1
            await client.ws.send("{}")
    await client.ws.close()


@pytest.mark.parametrize("server", [{"client_connect_timeout": 0.3}], indirect=True)
async def test_no_connect_within_the_timeout_is_closed_stale(server: tuple[Quart, int]) -> None:
    _, port = server
    client = await peer(port)
    assert await client.closed() == (3502, "stale")


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", 3501),
        ('{"id": 1, "nonsense": {}}', 3501),
        ('{"id": 1, "subscribe": {"channel": 7}}', 3501),
        (b"\x00binary", 3501),
        ("x" * (70 * 1024), 1009),
    ],
)
async def test_malformed_commands_close_that_client_only(
    server: tuple[Quart, int], frame: str | bytes, code: int
) -> None:
    app, port = server
    bystander = await connected(port, "bob")
    await bystander.call("subscribe", channel="news")
    culprit = await connected(port)
    await culprit.ws.send(frame)
    closed_code, _ = await culprit.closed()
    assert closed_code == code
    await get_broker(get_host(app)).publish("news", Publication('{"still":"here"}', json=True))
    assert (await bystander.push())["push"]["pub"]["data"] == {"still": "here"}
    await bystander.ws.close()


def rsa_keys() -> tuple[Any, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


async def test_bad_connection_tokens_get_the_protocols_answers(tmp_path: Path) -> None:
    key, public = rsa_keys()
    app = create_app(
        tmp_path,
        settings={"token_rsa_public_key": public, "token_audience": "app", "token_issuer": "me"},
    )
    now = int(time.time())
    good = {"sub": "alice", "aud": "app", "iss": "me", "exp": now + 60}
    cases = {
        "wrong signature": (jwt.encode(good, rsa_keys()[0], algorithm="RS256"), 3500),
        "alg none": (jwt.encode(good, None, algorithm="none"), 3500),
        "HMAC signed with the public key": (
            # PyJWT refuses to sign with a PEM as HMAC secret; build it by hand.
            _hs256_with(public, good),
            3500,
        ),
        "wrong aud": (jwt.encode({**good, "aud": "other"}, key, algorithm="RS256"), 3500),
        "wrong iss": (jwt.encode({**good, "iss": "other"}, key, algorithm="RS256"), 3500),
        "expired": (jwt.encode({**good, "exp": now - 5}, key, algorithm="RS256"), 109),
    }
    async with hypercorn(app) as port:
        bystander = await peer(port)
        ok = await bystander.call("connect", token=jwt.encode(good, key, algorithm="RS256"))
        assert ok["connect"]["client"]
        await bystander.call("subscribe", channel="news")
        for name, (bad, expected) in cases.items():
            client = await peer(port)
            (command_id,) = await client.send({"connect": {"token": bad}})
            if expected == 109:
                reply = await client.reply(command_id)
                assert reply["error"]["code"] == 109, name
            else:
                assert (await client.closed())[0] == expected, name
            await client.ws.close()
        await get_broker(get_host(app)).publish("news", Publication("after"))
        assert (await bystander.push())["push"]["pub"]["data"] == "after"
        await bystander.ws.close()


def _hs256_with(secret: str, claims: dict[str, Any]) -> str:
    import base64
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


async def test_subscription_tokens_for_another_channel_or_user_are_refused(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    alice = await connected(port, "alice")
    other_channel = jwt.encode({"sub": "alice", "channel": "$b"}, SECRET, algorithm="HS256")
    await alice.send({"subscribe": {"channel": "$a", "token": other_channel}})
    assert (await alice.closed())[0] == 3500
    bob = await connected(port, "bob")
    for_alice = jwt.encode({"sub": "alice", "channel": "$x"}, SECRET, algorithm="HS256")
    await bob.send({"subscribe": {"channel": "$x", "token": for_alice}})
    assert (await bob.closed())[0] == 3500
    carol = await connected(port, "carol")
    mine = jwt.encode({"sub": "carol", "channel": "$x"}, SECRET, algorithm="HS256")
    assert (await carol.call("subscribe", channel="$x", token=mine))["subscribe"] == {}
    assert (await carol.call("subscribe", channel="$y"))["error"]["code"] == 103
    await carol.ws.close()


async def test_a_refresh_renews_the_connection(server: tuple[Quart, int]) -> None:
    _, port = server
    client = await connected(port, "alice", exp=int(time.time()) + 30)
    reply = await client.call("refresh", token=token("alice", exp=int(time.time()) + 600))
    assert reply["refresh"]["expires"] is True and reply["refresh"]["ttl"] > 500
    await client.send({"refresh": {"token": token("mallory", exp=int(time.time()) + 600)}})
    assert (await client.closed())[0] == 3500  # another user's token


async def test_a_scripts_broadcast_reaches_raw_and_centrifuge_clients_of_the_channel(
    server: tuple[Quart, int], tmp_path: Path
) -> None:
    _, port = server
    (tmp_path / "to.py").write_text(
        "import json\n"
        "value = request.values['value']\n"
        "data = value.encode() if request.values.get('binary') else json.loads(value)\n"
        "print(broadcast(data, channel='news'))\n"
    )
    sdk = await connected(port)
    await sdk.call("subscribe", channel="news")
    async with (
        connect(f"ws://127.0.0.1:{port}/ws?channel=news") as raw,
        connect(f"ws://127.0.0.1:{port}/ws") as elsewhere,
        httpx.AsyncClient() as http,
    ):
        await asyncio.sleep(0.05)
        sent = await http.get(f"http://127.0.0.1:{port}/to.py", params={"value": '{"n": 1}'})
        assert sent.text.strip() == "2"
        assert json.loads(await asyncio.wait_for(raw.recv(), 5)) == {"n": 1}
        assert (await sdk.push())["push"] == {"channel": "news", "pub": {"data": {"n": 1}}}
        await http.get(f"http://127.0.0.1:{port}/to.py", params={"value": "x", "binary": "1"})
        assert await asyncio.wait_for(raw.recv(), 5) == b"x"
        assert (await sdk.push())["push"]["pub"]["data"] == "eA=="  # base64 for JSON clients
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(elsewhere.recv(), 0.3)  # the default channel heard none
    await sdk.ws.close()


async def test_a_loss_on_one_channel_resubscribes_its_clients_only(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    client = await connected(port)
    await client.call("subscribe", channel="a")
    await client.call("subscribe", channel="b")
    get_hub(get_host(app)).lost("a", 3)
    push = await client.push()
    assert push == {
        "push": {"channel": "a", "unsubscribe": {"code": 2500, "reason": "insufficient state"}}
    }
    await get_broker(get_host(app)).publish("b", Publication("still"))
    assert (await client.push())["push"] == {"channel": "b", "pub": {"data": "still"}}
    # The SDK subscribes again, as it does for codes of 2500 and above.
    assert (await client.call("subscribe", channel="a"))["subscribe"] == {}
    await client.ws.close()


async def test_the_server_api_acts_on_a_users_connections(server: tuple[Quart, int]) -> None:
    app, port = server
    node = get_node(get_host(app))
    alice, other = await connected(port, "alice"), await connected(port, "bob")
    await node.subscribe("alice", "news", data=None)
    assert (await alice.push())["push"] == {"channel": "news", "subscribe": {}}
    await get_broker(get_host(app)).publish("news", Publication("n1"))
    assert (await alice.push())["push"]["pub"]["data"] == "n1"
    await node.unsubscribe("alice", "news")
    assert (await alice.push())["push"]["unsubscribe"] == {
        "code": 2000,
        "reason": "server unsubscribe",
    }
    assert dict(await node.channels()) == {}
    await node.refresh("alice", expire_at=int(time.time()) + 100)
    push = (await alice.push())["push"]
    assert push["refresh"]["expires"] is True and 98 <= push["refresh"]["ttl"] <= 100
    assert "channel" not in push
    await node.refresh("alice")  # expire_at 0: never
    assert (await alice.push())["push"] == {"refresh": {}}
    await node.disconnect("alice", code=4500, reason="bye")
    assert await alice.closed() == (4500, "bye")
    assert (await other.call("subscribe", channel="still"))["subscribe"] == {}
    assert dict(await node.channels()) == {"still": 1}
    await node.refresh("bob", expired=True)
    assert await other.closed() == (3005, "connection expired")


def hooks_plugin() -> types.ModuleType:
    module = types.ModuleType("test_centrifuge_hooks")
    seen: list[Any] = []

    @hookimpl
    async def authorize_connect(headers: dict[str, str], data: Any) -> Any:
        if headers.get("cookie") == "session=letmein":
            return ConnectAuth(user="cookie-user", data={"welcome": True}, channels=("news",))
        if data == "refuse":
            return Error(4001, "go away")
        return None

    @hookimpl
    def authorize_subscribe(user: str, channel: str) -> Any:
        return True if channel == "secret:ok" else None

    @hookimpl
    def rpc(method: str, data: Any) -> Any:
        return {"echo": data} if method == "echo" else None

    @hookimpl
    def client_message(user: str, data: Any) -> None:
        seen.append((user, data))

    module.authorize_connect = authorize_connect  # type: ignore[attr-defined]
    module.authorize_subscribe = authorize_subscribe  # type: ignore[attr-defined]
    module.rpc = rpc  # type: ignore[attr-defined]
    module.client_message = client_message  # type: ignore[attr-defined]
    module.seen = seen  # type: ignore[attr-defined]
    return module


async def test_hooks_decide_instead_of_tokens(tmp_path: Path) -> None:
    plugin = hooks_plugin()
    sys.modules[plugin.__name__] = plugin
    try:
        config = {
            "token_hmac_secret": SECRET,
            "channel": {"namespaces": [{"name": "secret"}]},
        }
        app = create_app(tmp_path, settings=config, plugins=[plugin])
        async with hypercorn(app) as port:
            cookie = await peer(port, additional_headers={"Cookie": "session=letmein"})
            result = (await cookie.call("connect"))["connect"]
            assert result["data"] == {"welcome": True} and "news" in result["subs"]
            assert (await cookie.call("subscribe", channel="secret:ok"))["subscribe"] == {}
            assert (await cookie.call("subscribe", channel="secret:no"))["error"]["code"] == 103
            assert (await cookie.call("rpc", method="echo", data=[1]))["rpc"] == {
                "data": {"echo": [1]}
            }
            assert (await cookie.call("rpc", method="nope"))["error"]["code"] == 104
            await cookie.ws.send(json.dumps({"send": {"data": "fire and forget"}}))
            await cookie.call("subscribe", channel="x")  # after the send was handled
            assert plugin.seen == [("cookie-user", "fire and forget")]
            refused = await peer(port)
            reply = await refused.call("connect", data="refuse")
            assert reply["error"] == {"code": 4001, "message": "go away"}
            nobody = await peer(port)
            await nobody.send({"connect": {}})
            assert (await nobody.closed())[0] == 3501  # no token, no hook's word
            await cookie.ws.close()
    finally:
        del sys.modules[plugin.__name__]


LOGIN = (
    "import json\n"
    "user = request.values['user']\n"
    "print(json.dumps({'c': connection_token(user, expire_in=60),\n"
    "                  's': subscription_token(user, '$vip')}))\n"
)


async def test_with_a_shared_broker_and_no_secret_tokens_are_refused_and_say_why(
    tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "login.py").write_text(LOGIN)
    app = create_app(tmp_path, settings={"broker": redis_server.url})
    async with hypercorn(app) as port:
        async with httpx.AsyncClient() as http:
            response = await http.get(f"http://127.0.0.1:{port}/login.py?user=zoe")
        assert response.status_code == 500
        client = await peer(port)
        await client.send({"connect": {"token": token("zoe")}})
        assert (await client.closed())[0] == 3500
        # The raw endpoint needs no token: it serves as before.
        async with connect(f"ws://127.0.0.1:{port}/ws") as raw:
            hub = get_hub(get_host(app))
            await eventually(lambda: hub.subscribers("default"), message="raw client in")
            await get_broker(get_host(app)).publish("default", Publication("raw"))
            assert await asyncio.wait_for(raw.recv(), 5) == "raw"
    assert "REALTIME_TOKEN_HMAC_SECRET" in caplog.text


async def test_two_hosts_over_redis_share_channels_and_the_server_api(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = {
        "broker": redis_server.url,
        "token_hmac_secret": SECRET,
        "api_key": "k",
        "channel": DEMO_CHANNEL_TABLE,
    }
    one, two = (create_app(tmp_path, settings=settings) for _ in range(2))
    async with hypercorn(one) as port_one, hypercorn(two) as port_two:
        alice, bob = await connected(port_one, "alice"), await connected(port_two, "bob")
        await alice.call("subscribe", channel="chat:north")
        await bob.call("subscribe", channel="chat:south")
        await bob.call("subscribe", channel="chat:north")
        carol = await connected(port_two, "carol")
        await carol.call("subscribe", channel="chat:south")
        await alice.call("publish", channel="chat:north", data="from one")
        assert (await bob.push())["push"]["pub"]["data"] == "from one"
        assert (await alice.push())["push"]["pub"]["data"] == "from one"
        await carol.call("publish", channel="chat:south", data="south only")
        assert (await bob.push())["push"]["pub"]["data"] == "south only"
        assert alice.pushes == [] and await _quiet(alice)
        # The server API of host two acts on alice, connected to host one.
        api = cent.AsyncClient(f"http://127.0.0.1:{port_two}/api", "k")
        await api.subscribe(cent.SubscribeRequest(user="alice", channel="news"))
        assert (await alice.push())["push"] == {"channel": "news", "subscribe": {}}
        await api.publish(cent.PublishRequest(channel="news", data={"n": 1}))
        assert (await alice.push())["push"]["pub"]["data"] == {"n": 1}
        async with asyncio.timeout(10):
            while True:  # counts travel with each process's heartbeat
                channels = (await api.channels(cent.ChannelsRequest())).channels
                counts = {name: info.num_clients for name, info in channels.items()}
                if counts == {"chat:north": 2, "chat:south": 2, "news": 1}:
                    break
                await asyncio.sleep(0.2)
        assert len((await api.info(cent.InfoRequest())).nodes) == 2
        await api.disconnect(
            cent.DisconnectRequest(user="alice", disconnect=cent.Disconnect(code=4501, reason="x"))
        )
        assert await alice.closed() == (4501, "x")
        await api.close()
        for client in (bob, carol):
            await client.ws.close()


async def _quiet(client: Peer, wait: float = 0.3) -> bool:
    try:
        await client.push(timeout=wait)
    except TimeoutError:
        return True
    return False


async def test_scripts_mint_tokens_the_endpoint_accepts(tmp_path: Path) -> None:
    app = create_app(tmp_path)  # no secret configured: one is made up, single process
    (tmp_path / "login.py").write_text(LOGIN)
    async with hypercorn(app) as port:
        async with httpx.AsyncClient() as http:
            minted = (await http.get(f"http://127.0.0.1:{port}/login.py?user=zoe")).json()
        client = await peer(port)
        result = (await client.call("connect", token=minted["c"]))["connect"]
        assert result["expires"] is True and 50 < result["ttl"] <= 60
        subscribed = await client.call("subscribe", channel="$vip", token=minted["s"])
        assert subscribed["subscribe"]["expires"] is True
        await client.ws.close()


async def test_control_messages_from_the_broker_are_bounded_and_checked(
    server: tuple[Quart, int], caplog: pytest.LogCaptureFixture
) -> None:
    app, port = server
    node = get_node(get_host(app))
    alice = await connected(port, "alice")
    disconnect = {"op": "disconnect", "user": "alice", "code": 4500, "reason": "bye"}
    oversized = json.dumps({**disconnect, "padding": "x" * MAX_CONTROL_SIZE})
    unhashable = json.dumps({**disconnect, "op": ["disconnect"]})
    foreign = json.dumps({**disconnect, "op": "emulation"})  # the emulation layer's op
    for bad in (oversized, "not json", '{"op": "disconnect"}', '{"op": 1, "user": []}',
                unhashable, foreign):  # fmt: skip
        assert node._control(Publication(bad, json=True)) == 0
    assert (await alice.call("subscribe", channel="news"))["subscribe"] == {}  # still here
    assert "control message refused" in caplog.text
    node._control(Publication(json.dumps(disconnect), json=True))  # within bounds: applied
    assert await alice.closed() == (4500, "bye")
