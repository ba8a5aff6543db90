"""A plain ``EventSource``, no SDK, on the one-way SSE transport (``/connection/uni_sse``).

Debian's Chromium (Playwright) through Caddy, and Node's ``eventsource`` package
(tests/node/uni_eventsource.mjs), each get a script's ``broadcast()`` on a channel
their connection token grants; a session cookie stands for the token through an
``authorize_connect`` hook (a test plugin), so the page's URL carries no secret.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Page, expect

from realtime import create_app, hookimpl
from realtime_centrifuge import ConnectAuth

from ..conftest import ROOT, start_caddy
from ..integration.test_fanout import hypercorn

SECRET = "test-secret-long-enough-for-hs256-32b"
SEND = "from realtime_broadcast import broadcast\nbroadcast(request.values['m'], channel='news')\n"
#: The page: an EventSource on the one-way endpoint, each push's JSON a list item.
PAGE = """<!doctype html>
<meta charset="utf-8">
<ul id="pushes"></ul>
<script>
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?cf_connect=" + encodeURIComponent(JSON.stringify({token})) : "";
  const source = new EventSource("/connection/uni_sse" + query);
  source.onmessage = (event) => {
    const item = document.createElement("li");
    item.textContent = event.data;
    document.getElementById("pushes").append(item);
    if (JSON.parse(event.data).disconnect) source.close();
  };
</script>
"""


def token(user: str, **claims: Any) -> str:
    return jwt.encode({"sub": user, **claims}, SECRET, algorithm="HS256")


def cookie_plugin() -> types.ModuleType:
    module = types.ModuleType("test_centrifuge_eventsource_hooks")

    @hookimpl
    def authorize_connect(headers: dict[str, str]) -> Any:
        cookies = dict(
            part.strip().split("=", 1)
            for part in headers.get("cookie", "").split(";")
            if "=" in part
        )
        if cookies.get("session") == "letmein":
            return ConnectAuth(user="cookie-user", channels=("news",))
        return None

    module.authorize_connect = authorize_connect  # type: ignore[attr-defined]
    return module


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[int]:
    """The host in this loop with a hook plugin, the page and the sender script."""
    (tmp_path / "send.py").write_text(SEND)
    (tmp_path / "uni.html").write_text(PAGE)
    plugin = cookie_plugin()
    sys.modules[plugin.__name__] = plugin
    try:
        app = create_app(tmp_path, settings={"token_hmac_secret": SECRET}, plugins=[plugin])
        async with hypercorn(app) as port:
            yield port
    finally:
        del sys.modules[plugin.__name__]


@pytest.fixture
async def through_caddy(tmp_path: Path) -> AsyncIterator[tuple[int, int]]:
    """(the host's port, Caddy's port in front of it, with the repo's Caddyfile)."""
    site = tmp_path / "site"
    site.mkdir()
    async with served(site) as port:
        caddy, caddy_port = await asyncio.to_thread(start_caddy, port, tmp_path / "caddy.log")
        try:
            yield port, caddy_port
        finally:
            caddy.terminate()
            # Polled, not waited for: Caddy's graceful stop needs this loop to serve. It
            # waits for streams whose browser left until a write fails (the next ping):
            # a short grace, then killed.
            for _ in range(40):
                if caddy.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            else:
                caddy.kill()
                caddy.wait(5)


async def send(port: int, message: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/send.py", params={"m": message})
    assert response.status_code == 200, response.text


async def pushes(page: Page, count: int) -> list[Any]:
    items = page.locator("#pushes li")
    await expect(items).to_have_count(count, timeout=10_000)
    return [json.loads(text) for text in await items.all_text_contents()]


async def test_chromium_s_event_source_gets_a_broadcast_on_its_token_s_channel(
    browser: Browser, through_caddy: tuple[int, int]
) -> None:
    port, caddy_port = through_caddy
    page = await browser.new_page()
    await page.goto(
        f"http://127.0.0.1:{caddy_port}/uni.html?token={token('ann', channels=['news'])}"
    )
    (connected,) = await pushes(page, 1)
    assert connected["connect"]["subs"] == {"news": {}}
    await send(port, "to the browser")
    assert (await pushes(page, 2))[1] == {"channel": "news", "pub": {"data": "to the browser"}}


async def test_a_session_cookie_authorizes_an_event_source_with_no_token(
    browser: Browser, through_caddy: tuple[int, int]
) -> None:
    port, caddy_port = through_caddy
    origin = f"http://127.0.0.1:{caddy_port}"
    context = await browser.new_context()
    try:
        await context.add_cookies([{"name": "session", "value": "letmein", "url": origin}])
        page = await context.new_page()
        await page.goto(f"{origin}/uni.html")
        (connected,) = await pushes(page, 1)
        assert connected["connect"]["subs"] == {"news": {}}
        await send(port, "for the cookie")
        assert (await pushes(page, 2))[1]["pub"]["data"] == "for the cookie"
    finally:
        await context.close()
    # No cookie, no token: refused (3501), and the page stops on the disconnect push.
    page = await browser.new_page()
    try:
        await page.goto(f"{origin}/uni.html")
        assert await pushes(page, 1) == [{"disconnect": {"code": 3501, "reason": "bad request"}}]
    finally:
        await page.close()


class NodeEventSource:
    """tests/node/uni_eventsource.mjs: Node's ``eventsource`` package, line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def open(cls, url: str, cookie: str = "") -> NodeEventSource:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed: run scripts/test (it installs Node.js and npm)")
        script = ROOT / "tests" / "node" / "uni_eventsource.mjs"
        args = [str(script), url, *([cookie] if cookie else [])]
        process = await asyncio.create_subprocess_exec(
            node, *args, cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
        )
        return cls(process)

    async def line(self, timeout: float = 10.0) -> str:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, "the Node client exited"
        return raw.decode().strip()

    async def push(self) -> Any:
        while (text := await self.line()) in ("open",) or text.startswith("error"):
            assert text == "open", text
        return json.loads(text)

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


async def test_node_s_eventsource_package_gets_a_broadcast(tmp_path: Path) -> None:
    async with served(tmp_path) as port:
        query = httpx.QueryParams(
            {"cf_connect": json.dumps({"token": token("bo", channels=["news"])})}
        )
        source = await NodeEventSource.open(f"http://127.0.0.1:{port}/connection/uni_sse?{query}")
        try:
            assert (await source.push())["connect"]["subs"] == {"news": {}}
            await send(port, "to node")
            assert await source.push() == {"channel": "news", "pub": {"data": "to node"}}
        finally:
            await source.close()
        cookie = await NodeEventSource.open(
            f"http://127.0.0.1:{port}/connection/uni_sse", "session=letmein"
        )
        try:
            assert (await cookie.push())["connect"]["subs"] == {"news": {}}
            await send(port, "to node's cookie")
            assert (await cookie.push())["pub"]["data"] == "to node's cookie"
        finally:
            await cookie.close()
