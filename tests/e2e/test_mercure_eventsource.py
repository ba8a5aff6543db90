"""Mercure subscribers with real clients: Chromium's ``EventSource`` and Node's ``eventsource@3``.

Both subscribe by URI template through Caddy, as a PHP application's page does: the
browser's subscriber JWT is the ``mercureAuthorization`` cookie of the page's own
origin (Caddy's), Node's the ``authorization`` query parameter. Public updates reach
everyone whose selectors match; private ones only a JWT whose ``mercure.subscribe``
matches a topic. Killing Caddy cuts every stream; the clients reconnect by themselves
when it is back (at the ``retry`` an update set), sending ``Last-Event-ID``, and get
exactly the updates published meanwhile, then live ones.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from quart import Quart

from realtime import create_app, get_host
from realtime_hub import get_hub
from realtime_mercure.wire import TEMPLATES

from ..conftest import ROOT, caddy_process, eventually, start_caddy, wait_for_http
from ..integration.test_fanout import hypercorn

KEY = "mercure-e2e-key-long-enough-for-hs256!!"
PATH = "/.well-known/mercure"
BOOKS = "https://example.com/books/{id}"
SECRETS = "https://example.com/secrets/{id}"
#: The page: an EventSource on the hub, its topics from the page's query; each event a
#: list item (JSON: type, id, data); opens and errors counted on ``window``.
PAGE = """<!doctype html>
<meta charset="utf-8">
<ul id="events"></ul>
<script>
  const params = new URLSearchParams(location.search);
  const url = new URL("/.well-known/mercure", location.origin);
  for (const topic of params.getAll("topic")) url.searchParams.append("topic", topic);
  window.opens = 0;
  window.errors = 0;
  const source = new EventSource(url);
  source.onopen = () => { window.opens += 1; };
  source.onerror = () => { window.errors += 1; };
  for (const type of ["message", ...params.getAll("type")]) {
    source.addEventListener(type, (event) => {
      const item = document.createElement("li");
      const {type, lastEventId: id, data} = event;
      item.textContent = JSON.stringify({type, id, data});
      document.getElementById("events").append(item);
    });
  }
</script>
"""


def token(*, publish: list[str] | None = None, subscribe: list[str] | None = None) -> str:
    mercure: dict[str, list[str]] = {}
    if publish is not None:
        mercure["publish"] = publish
    if subscribe is not None:
        mercure["subscribe"] = subscribe
    return jwt.encode({"mercure": mercure}, KEY, algorithm="HS256")


PUBLISHER = token(publish=["*"])
#: A subscriber's grant: every book, no secret.
READER = token(subscribe=[BOOKS])


def book(n: int) -> str:
    return f"https://example.com/books/{n}"


def secret(n: int) -> str:
    return f"https://example.com/secrets/{n}"


def update(id: str, data: str, type: str = "message") -> dict[str, str]:
    """An event as the clients report it."""
    return {"type": type, "id": id, "data": data}


async def publish(port: int, topic: str, data: str, **fields: str) -> None:
    form = urlencode([("topic", topic), ("data", data), *fields.items()])
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}{PATH}",
            content=form,
            headers={
                "authorization": f"Bearer {PUBLISHER}",
                "content-type": "application/x-www-form-urlencoded",
            },
        )
    assert response.status_code == 200, response.text
    assert response.text == fields["id"]


async def subscribed(app: Quart, count: int) -> None:
    """``count`` template subscribers joined on the host (an open event fires when the
    response starts, which may be just before the stream joins its channels)."""
    hub = get_hub(get_host(app))
    await eventually(lambda: hub.subscribers(TEMPLATES) >= count, timeout=10)


@asynccontextmanager
async def served(tmp_path: Path) -> AsyncIterator[tuple[Quart, int, int, subprocess.Popen[bytes]]]:
    """(the app, its port, Caddy's port in front of it, Caddy's process)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "mercure.html").write_text(PAGE)
    settings = {
        "mercure_jwt_key": KEY,
        "mercure_anonymous": True,
        "mercure_history_size": 50,
    }
    app = create_app(site, settings=settings)
    async with hypercorn(app) as port:
        caddy, caddy_port = await asyncio.to_thread(start_caddy, port, tmp_path / "caddy.log")
        try:
            yield app, port, caddy_port, caddy
        finally:
            caddy.kill()
            caddy.wait(5)


class Pages:
    """Chromium pages on the hub: each its own context (its own cookies)."""

    def __init__(self, browser: Browser, origin: str) -> None:
        self.browser = browser
        self.origin = origin
        self.contexts: list[BrowserContext] = []

    async def open(self, jwt_cookie: str | None, *topics: str, types: tuple[str, ...] = ()) -> Page:
        context = await self.browser.new_context()
        self.contexts.append(context)
        if jwt_cookie is not None:
            # As the Go hub (and Symfony's SetCookieSubscriber) sets it: the hub's path.
            await context.add_cookies(
                [
                    {
                        "name": "mercureAuthorization",
                        "value": jwt_cookie,
                        "domain": "127.0.0.1",
                        "path": PATH,
                        "httpOnly": True,
                        "sameSite": "Strict",
                    }
                ]
            )
        page = await context.new_page()
        query = urlencode([*(("topic", t) for t in topics), *(("type", t) for t in types)])
        await page.goto(f"{self.origin}/mercure.html?{query}")
        return page

    async def close(self) -> None:
        for context in self.contexts:
            await context.close()


async def events(page: Page, count: int) -> list[dict[str, str]]:
    items = page.locator("#events li")
    await expect(items).to_have_count(count, timeout=10_000)
    return [json.loads(text) for text in await items.all_text_contents()]


class NodeSubscriber:
    """tests/node/mercure_eventsource.mjs: eventsource@3 in Node, one JSON line an event."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.opens = 0
        self.errors: list[str] = []

    @classmethod
    async def open(cls, url: str, *types: str) -> NodeSubscriber:
        node = shutil.which("node")
        if node is None:
            pytest.fail("node is not installed: run scripts/test (it installs Node.js and npm)")
        script = ROOT / "tests" / "node" / "mercure_eventsource.mjs"
        process = await asyncio.create_subprocess_exec(
            node,
            str(script),
            url,
            *types,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def line(self, timeout: float = 10.0) -> dict[str, Any]:
        assert self.process.stdout is not None
        raw = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        assert raw, "the Node subscriber exited"
        value: dict[str, Any] = json.loads(raw)
        if "open" in value:
            self.opens += 1
        if "error" in value:
            self.errors.append(value["error"])
        return value

    async def until_open(self, opens: int) -> None:
        while self.opens < opens:
            value = await self.line()
            assert "type" not in value, f"an event before the stream opened: {value}"

    async def until_error(self) -> None:
        seen = len(self.errors)
        while len(self.errors) == seen:
            value = await self.line()
            assert "type" not in value, f"an event where an error was awaited: {value}"

    async def events(self, count: int) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        while len(found) < count:
            value = await self.line()
            if "type" in value:
                found.append(value)
        return found

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


def hub_url(port: int, *topics: str, jwt_token: str | None = None) -> str:
    query = [("topic", t) for t in topics]
    if jwt_token is not None:
        query.append(("authorization", jwt_token))
    return f"http://127.0.0.1:{port}{PATH}?{urlencode(query)}"


async def test_browser_and_node_get_public_and_private_updates_by_uri_template(
    browser: Browser, tmp_path: Path
) -> None:
    async with served(tmp_path) as (app, port, caddy_port, _caddy):
        pages = Pages(browser, f"http://127.0.0.1:{caddy_port}")
        granted_node = await NodeSubscriber.open(
            hub_url(caddy_port, BOOKS, SECRETS, jwt_token=READER), "review"
        )
        public_node = await NodeSubscriber.open(hub_url(caddy_port, BOOKS, SECRETS), "review")
        try:
            granted = await pages.open(READER, BOOKS, SECRETS, types=("review",))
            public = await pages.open(None, BOOKS, SECRETS, types=("review",))
            await granted_node.until_open(1)
            await public_node.until_open(1)
            await subscribed(app, 4)
            await publish(port, book(1), "public one", id="u1")
            await publish(port, book(2), "private two", id="u2", private="on", type="review")
            # Private, on a topic the subscribers select but their grant does not name.
            await publish(port, secret(3), "private three", id="u3", private="on")
            await publish(port, secret(4), "public four", id="u4")
            everything = [
                update("u1", "public one"),
                update("u2", "private two", "review"),
                update("u4", "public four"),
            ]
            anyone = [update("u1", "public one"), update("u4", "public four")]
            # The last public update came after the private ones: what is not there by
            # then never comes (one stream, in order).
            assert await events(granted, 3) == everything
            assert await events(public, 2) == anyone
            assert await granted_node.events(3) == everything
            assert await public_node.events(2) == anyone
        finally:
            await granted_node.close()
            await public_node.close()
            await pages.close()


async def test_a_reconnect_with_last_event_id_gets_exactly_what_it_missed(
    browser: Browser, tmp_path: Path
) -> None:
    async with served(tmp_path) as (app, port, caddy_port, caddy):
        pages = Pages(browser, f"http://127.0.0.1:{caddy_port}")
        node = await NodeSubscriber.open(hub_url(caddy_port, BOOKS, SECRETS, jwt_token=READER))
        try:
            page = await pages.open(READER, BOOKS, SECRETS)
            await node.until_open(1)
            await subscribed(app, 2)
            # retry: both clients reconnect 200 ms after losing the stream (not 3 s).
            await publish(port, book(1), "before one", id="u1", retry="200")
            await publish(port, book(2), "before two", id="u2", private="on")
            before = [update("u1", "before one"), update("u2", "before two")]
            assert await events(page, 2) == before
            assert await node.events(2) == before

            caddy.kill()
            caddy.wait(5)
            await node.until_error()
            await page.wait_for_function("window.errors >= 1", timeout=10_000)
            await publish(port, book(3), "missed three", id="u3")
            await publish(port, secret(4), "not granted four", id="u4", private="on")
            await publish(port, book(5), "missed five", id="u5", private="on")

            log = tmp_path / "caddy.log"
            again = caddy_process(port, caddy_port, log)
            try:
                await asyncio.to_thread(
                    wait_for_http, f"http://127.0.0.1:{caddy_port}/", process=again
                )
                await node.until_open(2)
                await page.wait_for_function("window.opens >= 2", timeout=10_000)
                await subscribed(app, 2)
                await publish(port, book(6), "live six", id="u6")
                after = [
                    *before,
                    update("u3", "missed three"),
                    update("u5", "missed five"),
                    update("u6", "live six"),
                ]
                assert await events(page, 5) == after
                assert [*before, *await node.events(3)] == after
            finally:
                again.kill()
                again.wait(5)
        finally:
            await node.close()
            await pages.close()
