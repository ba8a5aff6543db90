"""centrifuge-js's protobuf build (``centrifuge/build/protobuf`` from npm), unchanged, in
Node (tests/node/client_protobuf.mjs) and in Debian's Chromium through Caddy.

One Hypercorn in the test's loop serves the demo's chat namespace (history, recovery,
presence) with an ``rpc`` hook from a test plugin, a drop-in token script and a
script's ``broadcast()``; the JSON SDK (centrifuge-python) shares channels with it.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import time
import types
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser

from realtime import create_app, hookimpl
from realtime_hub.channels import DEMO_CHANNEL_TABLE

from ..conftest import start_caddy
from ..integration.test_fanout import hypercorn
from ..sdk import ROOT, NodeClient, PyClient, next_item, node_executable, token_script

SECRET = "test-secret-for-the-protobuf-js-tests-01"
HARNESS = ROOT / "tests" / "node" / "client_protobuf.mjs"
#: The browser build: centrifuge-js's protobuf ES module, self-contained (protobufjs in it).
BROWSER_BUILD = ROOT / "node_modules" / "centrifuge" / "build" / "protobuf" / "index.mjs"
PUBLISH_SCRIPT = """\
body = request.json
response.json({"delivered": broadcast(body["data"], channel=body["channel"])})
"""


def mint(user: str, expire_in: float = 3600) -> str:
    claims = {"sub": user, "exp": int(time.time() + expire_in)}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def rpc_plugin() -> types.ModuleType:
    module = types.ModuleType("test_centrifuge_protobuf_js_rpc")

    @hookimpl
    def rpc(user: str, method: str, data: Any) -> Any:
        return {"user": user, "echo": data} if method == "echo" else None

    module.rpc = rpc  # type: ignore[attr-defined]
    return module


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[int]:
    app_dir = tmp_path / "app"
    (app_dir / "vendor").mkdir(parents=True)
    (app_dir / "publish.py").write_text(PUBLISH_SCRIPT)
    token_script(app_dir)
    shutil.copyfile(BROWSER_BUILD, app_dir / "vendor" / "centrifuge.protobuf.js")
    (app_dir / "protobuf.html").write_text(PAGE)
    plugin = rpc_plugin()
    sys.modules[plugin.__name__] = plugin
    settings = {"token_hmac_secret": SECRET, "channel": DEMO_CHANNEL_TABLE, "script_timeout": 5}
    try:
        app = create_app(app_dir, settings=settings, plugins=[plugin])
        async with hypercorn(app) as port:
            yield port
    finally:
        del sys.modules[plugin.__name__]


@pytest.fixture
async def caddy(server: int, tmp_path: Path) -> AsyncIterator[str]:
    # In a thread: start_caddy waits for an answer that this loop's server gives.
    process, port = await asyncio.to_thread(start_caddy, server, tmp_path / "caddy.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def broadcast(base: str, channel: str, data: Any) -> int:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://{base}/publish.py", json={"channel": channel, "data": data}
        )
    response.raise_for_status()
    delivered: int = response.json()["delivered"]
    return delivered


async def start_node(config: Mapping[str, Any]) -> NodeClient:
    process = await asyncio.create_subprocess_exec(
        node_executable(),
        str(HARNESS),
        json.dumps(config),
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return NodeClient(process)


def ok(reply: Mapping[str, Any]) -> Any:
    assert reply["ok"], reply
    return reply["result"]


# -- Node ------------------------------------------------------------------------------


async def test_node_protobuf_client_does_everything(server: int) -> None:
    base = f"127.0.0.1:{server}"
    url = f"ws://{base}/connection/websocket"
    ada = await start_node(
        {
            "url": url,
            "tokenUrl": f"http://{base}/token.py?user=ada&expire_in=2",
            "subscriptions": [{"channel": "chat:node"}],
        }
    )
    jay = PyClient(url, token=mint("jay"))  # the JSON codec, on the same channel
    try:
        assert (await ada.next("transport_open"))["protocol"] == "centrifuge-protobuf"
        connected = await ada.next("connected")
        assert connected["transport"] == "websocket"
        await ada.next("subscribed", where=lambda e: e["channel"] == "chat:node")
        await jay.connect()
        jay_room = await jay.subscribe("chat:node")

        assert await broadcast(base, "chat:node", {"text": "from a script"}) == 2
        event = await ada.next("publication")
        assert event["data"] == {"json": {"text": "from a script"}} and event["offset"] == 1
        ok(await ada.command("publish", channel="chat:node", data={"text": "from node"}))
        event = await ada.next("publication")
        assert event["data"] == {"json": {"text": "from node"}}
        assert event["info"]["user"] == "ada" and event["info"]["client"] == connected["client"]
        jay_seen = [(await next_item(jay_room.publications)).pub.data for _ in range(2)]
        assert jay_seen == [{"text": "from a script"}, {"text": "from node"}]
        await (jay.subs["chat:node"][0]).publish({"text": "from json"})
        assert (await ada.next("publication"))["data"] == {"json": {"text": "from json"}}

        presence = ok(await ada.command("presence", channel="chat:node"))
        assert {member["user"] for member in presence.values()} == {"ada", "jay"}
        stats = ok(await ada.command("presence_stats", channel="chat:node"))
        assert (stats["numClients"], stats["numUsers"]) == (2, 2)
        history = ok(await ada.command("history", channel="chat:node", limit=10))
        assert [pub["data"]["json"]["text"] for pub in history["publications"]] == [
            "from a script", "from node", "from json",
        ]  # fmt: skip
        assert history["offset"] == 3 and history["epoch"]
        result = ok(await ada.command("rpc", method="echo", data=[1, 2]))
        assert result == {"data": {"json": {"user": "ada", "echo": [1, 2]}}}
        refused = await ada.command("rpc", method="nope", data={})
        assert not refused["ok"] and refused["error"]["code"] == 104

        # The 2-second token is refreshed on the same connection, twice at least.
        await asyncio.sleep(4.5)
        assert len(ada.seen("get_token")) >= 3
        assert ada.seen("disconnected") == [] and len(ada.seen("connected")) == 1

        # Away, then back: what was missed is recovered, in order.
        ok(await ada.command("disconnect"))
        await ada.next("disconnected")
        for n in range(2):
            await broadcast(base, "chat:node", {"missed": n})
        ok(await ada.command("connect"))
        back = await ada.next("subscribed", where=lambda e: e["channel"] == "chat:node")
        assert back["wasRecovering"] and back["recovered"]
        missed = [await ada.next("publication") for _ in range(2)]
        assert [(e["data"]["json"], e["offset"]) for e in missed] == [
            ({"missed": 0}, 4), ({"missed": 1}, 5),
        ]  # fmt: skip
    finally:
        await jay.close()
        await ada.close()


# -- Chromium through Caddy --------------------------------------------------------------

#: A page loading the vendored protobuf build; the test drives it with evaluate().
PAGE = """\
<!doctype html>
<meta charset="utf-8">
<title>protobuf</title>
<script type="module">
import { Centrifuge } from "/vendor/centrifuge.protobuf.js";
const encoder = new TextEncoder();
const decoder = new TextDecoder();
const shown = (bytes) => JSON.parse(decoder.decode(bytes));
// uint64 fields come as protobufjs Long-like objects ({low, high, unsigned}).
const num = (v) =>
  typeof v === "object" && v !== null ? (v.high >>> 0) * 4294967296 + (v.low >>> 0) : v;
window.pubs = [];
window.start = (token) => new Promise((resolve, reject) => {
  const url = `ws://${location.host}/connection/websocket`;
  const client = new Centrifuge(url, { token, minReconnectDelay: 100 });
  window.client = client;
  const sub = client.newSubscription("chat:web");
  window.sub = sub;
  sub.on("publication", (ctx) =>
    window.pubs.push({
      data: shown(ctx.data), offset: num(ctx.offset), user: ctx.info?.user ?? null,
    }));
  sub.on("subscribed", (ctx) => resolve({ recovered: ctx.recovered }));
  sub.on("error", (ctx) => reject(String(ctx.error.message)));
  client.on("error", (ctx) => reject(String(ctx.error.message)));
  sub.subscribe();
  client.connect();
});
window.publish = (value) => window.sub.publish(encoder.encode(JSON.stringify(value)));
window.rpc = async (method, value) =>
  shown((await window.client.rpc(method, encoder.encode(JSON.stringify(value)))).data);
window.presence = async () =>
  Object.values((await window.sub.presence()).clients).map((member) => member.user).sort();
window.readHistory = async () =>
  (await window.sub.history({ limit: 10 })).publications.map((pub) => shown(pub.data));
window.protocol = () => window.client._transport?._transport?.protocol ?? null;
window.ready = true;
</script>
"""


async def test_chromium_protobuf_build_through_caddy(
    browser: Browser, server: int, caddy: str
) -> None:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://{caddy}/protobuf.html")
    await page.wait_for_function("window.ready === true", timeout=10_000)
    started = await page.evaluate("token => window.start(token)", mint("web"))
    assert started["recovered"] is False
    assert await page.evaluate("window.protocol()") == "centrifuge-protobuf"
    jay = PyClient(f"ws://{caddy}/connection/websocket", token=mint("jay"))
    try:
        await jay.connect()
        jay_room = await jay.subscribe("chat:web")
        assert await broadcast(caddy, "chat:web", {"text": "to the browser"}) == 2
        await page.wait_for_function("window.pubs.length >= 1", timeout=10_000)
        await page.evaluate("window.publish({text: 'from chromium'})")
        await page.wait_for_function("window.pubs.length >= 2", timeout=10_000)
        pubs = await page.evaluate("window.pubs")
        assert pubs == [
            {"data": {"text": "to the browser"}, "offset": 1, "user": None},
            {"data": {"text": "from chromium"}, "offset": 2, "user": "web"},
        ]
        seen = [(await next_item(jay_room.publications)).pub for _ in range(2)]
        assert [(pub.data, pub.offset) for pub in seen] == [
            ({"text": "to the browser"}, 1), ({"text": "from chromium"}, 2),
        ]  # fmt: skip
        assert await page.evaluate("window.rpc('echo', {n: 1})") == {
            "user": "web", "echo": {"n": 1},
        }  # fmt: skip
        assert await page.evaluate("window.presence()") == ["jay", "web"]
        assert await page.evaluate("window.readHistory()") == [
            {"text": "to the browser"}, {"text": "from chromium"},
        ]  # fmt: skip
        assert errors == []
    finally:
        await jay.close()
        await page.close()
