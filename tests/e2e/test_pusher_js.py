"""pusher-js 8.6 from npm, unchanged, against the Pusher plugin: in Node
(tests/node/pusher_client.mjs) and in Debian's Chromium through Caddy, with the
``pusher`` server SDKs from PyPI and npm (tests/node/pusher_sdk.mjs) triggering.
Laravel Echo over it: tests/e2e/test_pusher_echo.py.

Channels are authorized by drop-in scripts calling ``pusher_auth``: the shipped
app/pusher_auth.py (the user from a cookie) in Chromium, and ``node_auth.py`` here (the
user from the query string, since pusher-js's Node XMLHttpRequest sends no cookies).
Presence across hosts runs two ``realtime run`` processes sharing Redis behind
deploy/Caddyfile.cluster; one of them is SIGKILLed and pusher-js reconnects through
Caddy to the other.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import time
import types
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pusher
import pytest
from playwright.async_api import Browser, Page
from playwright.async_api import TimeoutError as PlaywrightTimeout

from realtime import create_app

from ..conftest import RedisServer, Server, eventually, start_caddy
from ..integration.test_fanout import hypercorn
from ..sdk import ROOT, NodeClient, node_executable

APP_ID = "1001"
KEY = "pusher-test-key"
SECRET = "pusher-test-secret-0123456789"
#: The key from which private-encrypted- channels' secrets are derived (32 bytes).
MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
APPS = [
    {
        "id": APP_ID,
        "key": KEY,
        "secret": SECRET,
        "enable_client_messages": True,
        "encryption_master_key_base64": MASTER_KEY,
    }
]
HARNESS = ROOT / "tests" / "node" / "pusher_client.mjs"
SDK_HARNESS = ROOT / "tests" / "node" / "pusher_sdk.mjs"
#: pusher-js's browser build (a UMD script: ``window.Pusher``) and Echo's (``window.Echo``).
PUSHER_WEB = ROOT / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.js"
ECHO_WEB = ROOT / "node_modules" / "laravel-echo" / "dist" / "echo.iife.js"
SOCKET_ID = re.compile(r"\d+\.\d+")

#: The auth endpoint of the Node clients (channels, and pusher:signin when no
#: channel_name is posted): the user is ``?user=``; ``private-vault`` is for ``admin``
#: only (anyone else gets 403, which pusher-js reports).
NODE_AUTH_SCRIPT = """\
user = request.values.get("user", "")
socket_id = request.form.get("socket_id", "")
channel = request.form.get("channel_name", "")
if not user or (channel.startswith("private-vault") and user != "admin"):
    response.json({"error": "not for you"}, 403)
    exit()
if not channel:  # pusher:signin
    response.json(pusher_user_auth(socket_id, {"id": user, "user_info": {"name": user}}))
elif channel.startswith("presence-"):
    response.json(pusher_auth(socket_id, channel, {"user_id": user, "user_info": {"name": user}}))
else:
    response.json(pusher_auth(socket_id, channel))
"""
#: A script's broadcast(), with an event name when given (what Laravel's would send).
PUBLISH_SCRIPT = """\
body = request.json
sent = broadcast(body["data"], channel=body["channel"], event=body.get("event"))
response.json({"delivered": sent})
"""
#: The socket ids of the Pusher connections this host holds.
WHOAMI_SCRIPT = """\
from realtime import current_host
from realtime_pusher.node import get_node
sessions = get_node(current_host()).sessions.values()
response.json({"sockets": sorted(session.socket_id for session in sessions)})
"""


def make_app_dir(target: Path) -> Path:
    """app/ (with its pusher_auth.py) plus the test's scripts and the browser builds."""
    shutil.copytree(ROOT / "app", target)
    (target / "node_auth.py").write_text(NODE_AUTH_SCRIPT)
    (target / "publish.py").write_text(PUBLISH_SCRIPT)
    (target / "whoami.py").write_text(WHOAMI_SCRIPT)
    vendor = target / "vendor"
    vendor.mkdir(exist_ok=True)
    shutil.copyfile(PUSHER_WEB, vendor / "pusher.js")
    shutil.copyfile(ECHO_WEB, vendor / "echo.iife.js")
    (target / "pusher_test.html").write_text(PAGE)
    return target


@pytest.fixture
def pusher_app_dir(tmp_path: Path) -> Path:
    return make_app_dir(tmp_path / "app")


@pytest.fixture
async def server(pusher_app_dir: Path) -> AsyncIterator[int]:
    """One host in this test's loop."""
    app = create_app(pusher_app_dir, settings={"pusher_apps": APPS, "script_timeout": 5})
    async with hypercorn(app) as port:
        yield port


async def pusher_js(port: int, user: str | None = None, **config: Any) -> NodeClient:
    """pusher-js in Node, connected to ``127.0.0.1:port`` (authorized as ``user``)."""
    settings: dict[str, Any] = {"key": KEY, "wsHost": "127.0.0.1", "wsPort": port, **config}
    if user is not None:
        settings["authEndpoint"] = f"http://127.0.0.1:{port}/node_auth.py?user={user}"
    process = await asyncio.create_subprocess_exec(
        node_executable(),
        str(HARNESS),
        json.dumps(settings),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeClient(process)


async def node_sdk(port: int, ops: list[Mapping[str, Any]], **config: Any) -> list[Any]:
    """The npm ``pusher`` SDK running ``ops``; each op's {ok, status, body}."""
    settings = {"appId": APP_ID, "key": KEY, "secret": SECRET, "port": port, "ops": ops, **config}
    process = await asyncio.create_subprocess_exec(
        node_executable(),
        str(SDK_HARNESS),
        json.dumps(settings),
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, err.decode(errors="replace")
    return [json.loads(line) for line in out.decode().splitlines() if line.strip()]


def python_sdk(port: int, secret: str = SECRET) -> pusher.Pusher:
    """PyPI's ``pusher`` (3.3) client for this server."""
    return pusher.Pusher(
        app_id=APP_ID,
        key=KEY,
        secret=secret,
        host="127.0.0.1",
        port=port,
        ssl=False,
        timeout=5,
        encryption_master_key_base64=MASTER_KEY,
    )


async def broadcast(port: int, channel: str, data: Any, event: str | None = None) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/publish.py",
            json={"channel": channel, "data": data, "event": event},
        )
    response.raise_for_status()
    delivered: int = response.json()["delivered"]
    return delivered


def ok(reply: Mapping[str, Any]) -> Any:
    assert reply["ok"], reply
    return reply["result"]


async def connected(client: NodeClient) -> str:
    socket_id: str = (await client.next("connected"))["socket_id"]
    assert SOCKET_ID.fullmatch(socket_id), socket_id
    return socket_id


# -- Node: one host -------------------------------------------------------------------


async def test_pusher_js_in_node_public_private_presence_and_client_events(server: int) -> None:
    ada = await pusher_js(server, "ada", subscriptions=["news", "private-room", "presence-lobby"])
    bob = await pusher_js(server, "bob")
    try:
        ada_id = await connected(ada)
        for channel in ("news", "private-room"):
            await ada.next("subscribed", where=lambda e, c=channel: e["channel"] == c)
        lobby = await ada.next("subscribed", where=lambda e: e["channel"] == "presence-lobby")
        assert lobby["members"] == {
            "count": 1, "me": {"id": "ada", "info": {"name": "ada"}}, "ids": ["ada"],
        }  # fmt: skip

        # A script's broadcast() reaches the public channel, under the default event
        # name ("message") or the one it names; data as the JSON it was.
        assert await broadcast(server, "news", {"text": "hello"}) == 1
        assert await broadcast(server, "news", {"n": 2}, event="App\\Events\\Tick") == 1
        got = [await ada.next("message") for _ in range(2)]
        assert [(e["name"], e["data"], e["channel"]) for e in got] == [
            ("message", {"text": "hello"}, "news"),
            ("App\\Events\\Tick", {"n": 2}, "news"),
        ]

        # Bob: private and presence through the auth script.
        await connected(bob)
        ok(await bob.command("subscribe", channel="private-room"))
        ok(await bob.command("subscribe", channel="presence-lobby"))
        await bob.next("subscribed", where=lambda e: e["channel"] == "private-room")
        bob_lobby = await bob.next("subscribed", where=lambda e: e["channel"] == "presence-lobby")
        assert bob_lobby["members"]["count"] == 2
        assert bob_lobby["members"]["ids"] == ["ada", "bob"]
        added = await ada.next("member_added")
        assert (added["channel"], added["id"], added["info"]) == (
            "presence-lobby", "bob", {"name": "bob"},
        )  # fmt: skip
        members = ok(await ada.command("members", channel="presence-lobby"))
        assert members["ids"] == ["ada", "bob"]

        # Client events (Echo's whisper): to the others, not the sender; on a presence
        # channel with the sender's user_id.
        assert ok(await ada.command("trigger", channel="private-room", event="client-typing",
                                    data={"who": "ada"}))  # fmt: skip
        typing = await bob.next("message", where=lambda e: e["channel"] == "private-room")
        assert (typing["name"], typing["data"]) == ("client-typing", {"who": "ada"})
        ok(await ada.command("bind", channel="presence-lobby", event="client-wave"))
        ok(await bob.command("trigger", channel="presence-lobby", event="client-wave", data={}))
        wave = await ada.next("bound")
        assert (wave["channel"], wave["name"], wave["user_id"]) == (
            "presence-lobby", "client-wave", "bob",
        )  # fmt: skip
        assert bob.seen("message", where=lambda e: e["name"] == "client-wave") == []

        # A channel the script refuses: pusher-js reports the endpoint's 403.
        ok(await bob.command("subscribe", channel="private-vault"))
        refused = await bob.next("subscription_error")
        assert (refused["channel"], refused["status"]) == ("private-vault", 403)

        # Bob goes: ada hears member_removed once.
        ok(await bob.command("exit"))
        removed = await ada.next("member_removed")
        assert (removed["channel"], removed["id"]) == ("presence-lobby", "bob")
        assert ada.seen("connection_error") == [] and ada_id
    finally:
        await bob.close()
        await ada.close()


# -- The server SDKs ------------------------------------------------------------------


async def test_server_sdks_trigger_and_wrong_secret_or_stale_timestamp_are_refused(
    server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    ada = await pusher_js(server, "ada", subscriptions=["news", "private-orders"])
    bob = await pusher_js(server, "bob", subscriptions=["private-orders", "presence-shop"])
    try:
        ada_id = await connected(ada)
        await connected(bob)
        await ada.next("subscribed", where=lambda e: e["channel"] == "news")
        await ada.next("subscribed", where=lambda e: e["channel"] == "private-orders")
        await bob.next("subscribed", where=lambda e: e["channel"] == "private-orders")
        await bob.next("subscribed", where=lambda e: e["channel"] == "presence-shop")
        py = python_sdk(server)

        # PyPI's SDK: one channel, several, and one connection excluded.
        await asyncio.to_thread(py.trigger, "news", "py-one", {"n": 1})
        await asyncio.to_thread(py.trigger, ["news", "private-orders"], "py-two", {"n": 2})
        await asyncio.to_thread(py.trigger, "private-orders", "py-skip", {"n": 3}, ada_id)
        await asyncio.to_thread(
            py.trigger_batch, [{"channel": "private-orders", "name": "py-batch", "data": "text"}]
        )
        # npm's SDK likewise.
        results = await node_sdk(
            server,
            [
                {"op": "trigger", "channels": "news", "event": "js-one", "data": {"n": 4}},
                {"op": "trigger", "channels": ["news", "private-orders"], "event": "js-two",
                 "data": {"n": 5}, "params": {"socket_id": ada_id}},
                {"op": "triggerBatch", "batch": [
                    {"channel": "news", "name": "js-batch", "data": {"n": 6}},
                    {"channel": "private-orders", "name": "js-batch", "data": {"n": 7}},
                ]},
                {"op": "get", "path": "/channels", "params": {"filter_by_prefix": "presence-"}},
                {"op": "get", "path": "/channels/presence-shop/users"},
            ],
        )  # fmt: skip
        assert [r["status"] for r in results] == [200] * 5, results
        assert results[3]["body"] == {"channels": {"presence-shop": {}}}
        assert results[4]["body"] == {"users": [{"id": "bob"}]}
        info = await asyncio.to_thread(
            py.channel_info, "presence-shop", ["user_count", "subscription_count"]
        )
        assert info["occupied"] is True and info["user_count"] == 1

        # Refused: a wrong secret (either SDK), a timestamp an hour old (either SDK).
        with pytest.raises(pusher.errors.PusherBadAuth):
            await asyncio.to_thread(python_sdk(server, "wrong").trigger, "news", "bad", {})
        with monkeypatch.context() as patched:
            old = types.SimpleNamespace(time=lambda: time.time() - 3600)
            patched.setattr(pusher.http, "time", old)
            with pytest.raises(pusher.errors.PusherBadAuth):
                await asyncio.to_thread(py.trigger, "news", "stale", {})
        op = {"op": "trigger", "channels": "news", "event": "bad", "data": {}}
        wrong = await node_sdk(server, [op], secret="wrong")
        stale = await node_sdk(server, [{**op, "event": "stale"}], clockSkew=3600)
        assert [(r["ok"], r["status"]) for r in wrong + stale] == [(False, 401)] * 2, wrong + stale

        # What each pusher-js got, in order: the refused ones never arrived.
        await asyncio.to_thread(py.trigger, ["news", "private-orders"], "end", {})
        await ada.next("message", where=lambda e: e["name"] == "end" and e["channel"] == "news")
        await ada.next("message", where=lambda e: e["name"] == "end" and e["channel"] != "news")
        await bob.next("message", where=lambda e: e["name"] == "end")
        names = lambda client, channel: [  # noqa: E731
            (e["name"], e["data"]) for e in client.seen("message") if e["channel"] == channel
        ]
        assert names(ada, "news") == [
            ("py-one", {"n": 1}), ("py-two", {"n": 2}), ("js-one", {"n": 4}),
            ("js-batch", {"n": 6}), ("end", {}),
        ]  # fmt: skip
        assert names(ada, "private-orders") == [
            ("py-two", {"n": 2}), ("py-batch", "text"), ("js-batch", {"n": 7}), ("end", {}),
        ]  # fmt: skip
        assert names(bob, "private-orders") == [
            ("py-two", {"n": 2}), ("py-skip", {"n": 3}), ("py-batch", "text"),
            ("js-two", {"n": 5}), ("js-batch", {"n": 7}), ("end", {}),
        ]  # fmt: skip
    finally:
        await bob.close()
        await ada.close()


async def test_private_encrypted_channel_end_to_end_with_both_sdks(server: int) -> None:
    """The auth script's ``shared_secret`` is the one the SDKs encrypt with: pusher-js
    decrypts what each SDK sent (the server relays ciphertext it cannot read)."""
    channel = "private-encrypted-ledger"
    ada = await pusher_js(server, "ada", subscriptions=[channel])
    try:
        await connected(ada)
        await ada.next("subscribed")
        py = python_sdk(server)
        await asyncio.to_thread(py.trigger, channel, "entry", {"from": "python"})
        op = {"op": "trigger", "channels": channel, "event": "entry", "data": {"from": "node"}}
        results = await node_sdk(server, [op], encryptionMasterKeyBase64=MASTER_KEY)
        assert results[0]["status"] == 200, results
        got = [(await ada.next("message"))["data"] for _ in range(2)]
        assert got == [{"from": "python"}, {"from": "node"}]
        assert ada.seen("connection_error") == []
    finally:
        await ada.close()


async def test_signin_events_to_a_user_and_terminating_its_connections(server: int) -> None:
    """pusher:signin through the script's ``pusher_user_auth``; the SDKs' sendToUser
    reaches every connection of that user, and terminate_user_connections closes them
    with 4009, after which pusher-js does not reconnect."""
    tabs = [await pusher_js(server, "ada") for _ in range(2)]
    bob = await pusher_js(server, "bob")
    try:
        for client in (*tabs, bob):
            await connected(client)
            user = ok(await client.command("signin"))
            assert user["user_info"]["name"] == user["id"]
            ok(await client.command("user_bind", event="notice"))
        await asyncio.to_thread(python_sdk(server).send_to_user, "ada", "notice", {"n": 1})
        send = {"op": "sendToUser", "userId": "ada", "event": "notice", "data": {"n": 2}}
        results = await node_sdk(server, [send])
        assert results[0]["status"] == 200, results
        for tab in tabs:
            got = [(await tab.next("user_event"))["data"] for _ in range(2)]
            assert got == [{"n": 1}, {"n": 2}]

        results = await node_sdk(server, [{"op": "terminate", "userId": "ada"}])
        assert results[0]["status"] == 200, results
        for tab in tabs:
            error = await tab.next("connection_error")
            assert error["error"]["data"]["code"] == 4009, error
            await tab.next("state", where=lambda e: e["current"] == "disconnected")
        # Bob is untouched: still connected, still signed in, still served; ada's tabs
        # stay down meanwhile (4009 is pusher-js's "refused": no reconnect).
        await asyncio.to_thread(python_sdk(server).send_to_user, "bob", "notice", {"n": 3})
        assert (await bob.next("user_event"))["data"] == {"n": 3}
        assert [ok(await tab.command("state"))["state"] for tab in tabs] == ["disconnected"] * 2
    finally:
        for client in (bob, *tabs):
            await client.close()


# -- Two hosts over Redis behind Caddy ------------------------------------------------


class Cluster:
    """Two ``realtime run`` hosts sharing one Redis, behind deploy/Caddyfile.cluster."""

    def __init__(self, app_dir: Path, redis: RedisServer, tmp_path: Path) -> None:
        args = ("--broker", redis.url, "--pusher-apps", json.dumps(APPS))
        self.hosts = [Server(app_dir, *args) for _ in range(2)]
        self.tmp_path = tmp_path
        self.caddy: Any = None
        self.caddy_port = 0

    def start(self) -> Cluster:
        for host in self.hosts:
            host.start()
        self.caddy, self.caddy_port = start_caddy(
            self.hosts[0].port,
            self.tmp_path / "caddy-cluster.log",
            config="deploy/Caddyfile.cluster",
            extra_env={"REALTIME_UPSTREAM_2": f"127.0.0.1:{self.hosts[1].port}"},
        )
        return self

    def stop(self) -> None:
        if self.caddy is not None:
            self.caddy.terminate()
            self.caddy.wait(10)
        for host in self.hosts:
            host.stop()

    async def sockets(self) -> list[list[str]]:
        """The socket ids of the Pusher connections each host holds ([] when down)."""
        found: list[list[str]] = []
        async with httpx.AsyncClient() as http:
            for host in self.hosts:
                try:
                    response = await http.get(f"{host.url}/whoami.py", timeout=2)
                    found.append(response.json()["sockets"])
                except httpx.HTTPError:
                    found.append([])
        return found

    async def host_of(self, socket_id: str) -> int:
        """Which host holds the connection ``socket_id``."""
        for index, ids in enumerate(await self.sockets()):
            if socket_id in ids:
                return index
        raise AssertionError(f"no host holds {socket_id}: {await self.sockets()}")

    def kill(self, index: int) -> None:
        """SIGKILL host ``index``: no close frame, no presence leave, nothing."""
        process = self.hosts[index].process
        assert process is not None
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.fixture
def cluster(pusher_app_dir: Path, redis_server: RedisServer, tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(pusher_app_dir, redis_server, tmp_path)
    try:
        yield made.start()
    finally:
        made.stop()


async def test_presence_of_one_user_on_two_hosts_is_one_member_and_reconnect_after_sigkill(
    cluster: Cluster,
) -> None:
    one, two = (host.port for host in cluster.hosts)
    room = "presence-room"
    watcher = await pusher_js(one, "watcher", subscriptions=[room])
    tab_one = await pusher_js(one, "ada")
    tab_two = await pusher_js(two, "ada")
    late: NodeClient | None = None
    roaming: NodeClient | None = None
    try:
        await connected(watcher)
        await watcher.next("subscribed")
        for tab in (tab_one, tab_two):  # one after the other: the second is no news
            await connected(tab)
            ok(await tab.command("subscribe", channel=room))
            joined = await tab.next("subscribed")
            assert joined["members"]["ids"] == ["ada", "watcher"]
            assert joined["members"]["count"] == 2
        added = await watcher.next("member_added")
        assert added["id"] == "ada"
        # Late comer on host two: two members, whatever host each connection is on.
        late = await pusher_js(two, "cleo", subscriptions=[room])
        await connected(late)
        assert (await late.next("subscribed"))["members"]["ids"] == ["ada", "cleo", "watcher"]
        await watcher.next("member_added", where=lambda e: e["id"] == "cleo")

        # A client event on host two reaches host one, with the user id there, and the
        # same user's other tab (only the sending connection is left out).
        ok(await watcher.command("bind", channel=room, event="client-hi"))
        ok(await tab_two.command("trigger", channel=room, event="client-hi", data={"x": 1}))
        hi = await watcher.next("bound")
        assert (hi["name"], hi["data"], hi["user_id"]) == ("client-hi", {"x": 1}, "ada")
        await tab_one.next("message", where=lambda e: e["name"] == "client-hi")

        # Ada's first tab leaves: she is still there (her tab on host two).
        ok(await tab_one.command("exit"))
        await tab_one.close()
        sdk = python_sdk(one)

        async def ada_connections() -> bool:
            info = await asyncio.to_thread(sdk.channel_info, room, ["subscription_count"])
            return info.get("subscription_count") == 3

        await eventually(ada_connections, timeout=10, message="three subscriptions left")
        # Nothing says "ada left": after a settle long enough for a cross-host leave
        # (the watcher got cleo's join in far less), the second tab leaves and that is
        # the only member_removed.
        await asyncio.sleep(0.5)
        assert watcher.seen("member_removed") == []
        ok(await tab_two.command("exit"))
        removed = await watcher.next("member_removed")
        assert removed["id"] == "ada"
        assert len(watcher.seen("member_added", where=lambda e: e["id"] == "ada")) == 1

        # Through Caddy, then its host is SIGKILLed: pusher-js reconnects (to the other
        # host, through the same Caddy) and subscribes again on its own.
        roaming = await pusher_js(cluster.caddy_port, "dan", subscriptions=[room, "news"])
        first_id = await connected(roaming)
        await roaming.next("subscribed", where=lambda e: e["channel"] == room)
        await roaming.next("subscribed", where=lambda e: e["channel"] == "news")
        victim = await cluster.host_of(first_id)
        cluster.kill(victim)
        # Caddy retries what it sent to the dead host on the other one, POSTs (the
        # auth endpoint's) with their bodies: deploy/Caddyfile.cluster must buffer
        # them (Caddy 2.6's Go transport closes a request's body on a failed dial, and
        # the retry then sends none: 502).
        auth = f"http://127.0.0.1:{cluster.caddy_port}/node_auth.py?user=dan"
        form = {"socket_id": first_id, "channel_name": "private-probe"}
        async with httpx.AsyncClient() as http:
            statuses = [(await http.post(auth, data=form)).status_code for _ in range(10)]
        assert statuses == [200] * 10, f"auth POSTs through Caddy, one host dead: {statuses}"
        second_id = await connected(roaming)
        assert second_id != first_id
        assert await cluster.host_of(second_id) == 1 - victim
        back = await roaming.next("subscribed", where=lambda e: e["channel"] == room)
        assert "dan" in back["members"]["ids"]
        await roaming.next("subscribed", where=lambda e: e["channel"] == "news")
        survivor = cluster.hosts[1 - victim].port
        await asyncio.to_thread(python_sdk(survivor).trigger, "news", "after", {"ok": True})
        after = await roaming.next("message", where=lambda e: e["name"] == "after")
        assert after["data"] == {"ok": True}
    finally:
        for client in (roaming, late, tab_two, tab_one, watcher):
            if client is not None:
                await client.close()


# -- Chromium through Caddy -----------------------------------------------------------

#: pusher-js's browser build and Laravel Echo's, loaded as a Laravel page loads them
#: (plain scripts: ``window.Pusher``, ``window.Echo``); the tests drive the page with
#: evaluate(). Auth: app/pusher_auth.py, which reads the ``user`` cookie.
PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>pusher-js</title>
<script src="/vendor/pusher.js"></script>
<script src="/vendor/echo.iife.js"></script>
<script>
window.seen = [];
const note = (kind, fields) => window.seen.push({kind, ...fields});
const options = () => ({
  wsHost: location.hostname, wsPort: Number(location.port), forceTLS: false,
  enabledTransports: ["ws"], disableStats: true, cluster: "mt1",
  authEndpoint: "/pusher_auth.py",
  channelAuthorization: {endpoint: "/pusher_auth.py", transport: "ajax"},
});
const watch = (pusher) => {
  const connection = pusher.connection;
  connection.bind("connected", () => note("connected", {socket_id: connection.socket_id}));
  connection.bind("state_change", (s) => note("state", s));
  return new Promise((resolve) =>
    connection.bind("connected", () => resolve(connection.socket_id)));
};
window.start = (key) => {
  window.pusher = new Pusher(key, options());
  return watch(window.pusher);
};
window.startEcho = (key) => {
  window.echo = new Echo.default({broadcaster: "pusher", key, ...options()});
  window.pusher = window.echo.connector.pusher;
  return watch(window.pusher);
};
window.subscribe = (name) => new Promise((resolve) => {
  const channel = window.pusher.subscribe(name);
  channel.bind("pusher:subscription_succeeded", (members) => {
    const ids = [];
    if (name.startsWith("presence-")) members.each((m) => ids.push(m.id));
    ids.sort();
    note("subscribed", {channel: name, ids});
    resolve(ids);
  });
  channel.bind("pusher:subscription_error", (e) => {
    note("subscription_error", {channel: name, status: e.status});
    resolve({error: e.status});
  });
  channel.bind("pusher:member_added", (m) => note("member_added", {channel: name, id: m.id}));
  channel.bind("pusher:member_removed", (m) => note("member_removed", {channel: name, id: m.id}));
  channel.bind_global((event, data) => {
    if (!event.startsWith("pusher")) note("message", {channel: name, name: event, data});
  });
});
// A callback of its own event gets the metadata (user_id) that bind_global's does not.
window.bind = (name, event) => window.pusher.channel(name).bind(event, (data, metadata) =>
  note("bound", {channel: name, name: event, data, user_id: metadata?.user_id ?? null}));
window.trigger = (name, event, data) => window.pusher.channel(name).trigger(event, data);
window.ofKind = (kind) => window.seen.filter((e) => e.kind === kind);
window.ready = true;
</script>
"""


async def open_tab(browser: Browser, base: str, user: str, echo: bool = False) -> Page:
    """A tab of ``user``: a browser context of its own, with the demo's ``user`` cookie
    (``tab_of`` opens the same user's second tab in it); connected."""
    context = await browser.new_context()
    await context.add_cookies([{"name": "user", "value": user, "url": f"http://{base}/"}])
    return await started(await context.new_page(), f"http://{base}/pusher_test.html", echo)


async def tab_of(page: Page) -> Page:
    """Another tab in ``page``'s context: the same user (the same cookie)."""
    return await started(await page.context.new_page(), page.url, False)


async def started(page: Page, url: str, echo: bool) -> Page:
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(url)
    await page.wait_for_function("window.ready === true", timeout=10_000)
    socket_id = await page.evaluate(
        "([echo, key]) => echo ? window.startEcho(key) : window.start(key)", [echo, KEY]
    )
    assert SOCKET_ID.fullmatch(socket_id), socket_id
    assert errors == []
    return page


async def seen(page: Page, kind: str, count: int = 1, **match: Any) -> list[dict[str, Any]]:
    """The page's ``kind`` notes matching ``match``, once there are ``count`` of them."""
    script = (
        "([kind, match]) => window.ofKind(kind).filter((e) =>"
        " Object.entries(match).every(([k, v]) => JSON.stringify(e[k]) === JSON.stringify(v)))"
    )
    try:
        await page.wait_for_function(
            f"(args) => ({script})(args).length >= {count}", arg=[kind, match], timeout=15_000
        )
    except PlaywrightTimeout:
        everything = await page.evaluate("window.seen")
        raise AssertionError(
            f"no {count} {kind} {match} in 15 s; the page saw {everything}"
        ) from None
    found: list[dict[str, Any]] = await page.evaluate(script, [kind, match])
    return found


async def test_chromium_two_tabs_of_one_user_on_two_hosts_through_caddy(
    browser: Browser, cluster: Cluster
) -> None:
    base = f"127.0.0.1:{cluster.caddy_port}"
    room = "presence-room"
    watcher = await pusher_js(
        cluster.hosts[0].port, "watcher", subscriptions=[room, "private-notes"]
    )
    try:
        await connected(watcher)
        await watcher.next("subscribed", where=lambda e: e["channel"] == room)
        await watcher.next("subscribed", where=lambda e: e["channel"] == "private-notes")
        # Caddy's least_conn puts the second tab on the host the first is not on.
        first = await open_tab(browser, base, "ada")
        second = await tab_of(first)
        ids = [(await seen(tab, "connected"))[0]["socket_id"] for tab in (first, second)]
        assert sorted([await cluster.host_of(i) for i in ids]) == [0, 1]
        for tab in (first, second):
            assert await tab.evaluate("n => window.subscribe(n)", room) == ["guest-ada", "watcher"]
            assert await tab.evaluate("n => window.subscribe(n)", "private-notes") == []
        added = await watcher.next("member_added")
        assert (added["id"], added["info"]) == ("guest-ada", {"name": "ada"})

        # Client events: to the same user's other tab and to the watcher, not back.
        await first.evaluate(
            "a => window.trigger(...a)", ["private-notes", "client-note", {"a": 1}]
        )
        note = await watcher.next("message", where=lambda e: e["channel"] == "private-notes")
        assert (note["name"], note["data"]) == ("client-note", {"a": 1})
        await seen(second, "message", name="client-note", data={"a": 1})
        await first.evaluate("a => window.bind(...a)", [room, "client-wave"])
        await second.evaluate("a => window.trigger(...a)", [room, "client-wave", {}])
        wave = await seen(first, "bound", name="client-wave")
        assert wave[0]["user_id"] == "guest-ada"
        # The server SDK through one host reaches the tabs on both.
        await asyncio.to_thread(python_sdk(cluster.hosts[0].port).trigger, room, "hi", {"n": 1})
        for tab in (first, second):
            await seen(tab, "message", name="hi", data={"n": 1})
        assert await first.evaluate("window.ofKind('message').length") == 2  # not its own

        # One tab closes: ada stays. The other: one member_removed.
        await second.close()
        sdk = python_sdk(cluster.hosts[0].port)

        async def left() -> bool:
            info = await asyncio.to_thread(sdk.channel_info, room, ["subscription_count"])
            return info.get("subscription_count") == 2

        await eventually(left, timeout=10, message="the closed tab's subscription gone")
        await asyncio.sleep(0.5)  # a cross-host leave would have come by now
        assert watcher.seen("member_removed") == []
        await first.context.close()
        removed = await watcher.next("member_removed")
        assert removed["id"] == "guest-ada"
        assert len(watcher.seen("member_added", where=lambda e: e["id"] == "guest-ada")) == 1
    finally:
        await watcher.close()

    # A tab whose host is SIGKILLed reconnects through Caddy to the other host, and
    # pusher-js subscribes it again.
    tab = await open_tab(browser, base, "bea")
    assert await tab.evaluate("n => window.subscribe(n)", room) == ["guest-bea"]
    await tab.evaluate("n => window.subscribe(n)", "news")
    first_id = (await seen(tab, "connected"))[0]["socket_id"]
    victim = await cluster.host_of(first_id)
    cluster.kill(victim)
    second_id = (await seen(tab, "connected", 2))[1]["socket_id"]
    assert second_id != first_id and await cluster.host_of(second_id) == 1 - victim
    await seen(tab, "subscribed", 2, channel=room)
    await seen(tab, "subscribed", 2, channel="news")
    survivor = cluster.hosts[1 - victim].port
    # (broadcast()'s count may still include the dead host's subscriber, until its
    # cluster report expires: what counts is that the tab gets it.)
    await broadcast(survivor, "news", {"back": True})
    await seen(tab, "message", channel="news", name="message", data={"back": True})
    await tab.context.close()
