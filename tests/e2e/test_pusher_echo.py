"""Laravel Echo 2.5 over pusher-js 8.6, from npm and unchanged, against the Pusher
plugin: in Node (tests/node/pusher_client.mjs with ``"echo": true``) and in Debian's
Chromium through Caddy (the page of tests/e2e/test_pusher_js.py, Echo's browser build).

What a Laravel page does: ``Echo.channel(...).listen(".name")`` and ``listen("Class")``
(Echo's ``App\\Events\\`` namespace), ``Echo.private(...)``, ``Echo.join(...)`` with
``here``/``joining``/``leaving``, and ``whisper``/``listenForWhisper`` (``client-``
events, which the app enables); the events come from the server SDK (as Laravel's
broadcaster sends them) and from a script's ``broadcast(..., event=...)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page

from realtime import create_app

from ..conftest import start_caddy
from ..integration.test_fanout import hypercorn
from ..sdk import NodeClient
from .test_pusher_js import (
    APPS,
    broadcast,
    connected,
    make_app_dir,
    ok,
    open_tab,
    pusher_js,
    python_sdk,
    seen,
)

SHIPPED = "App\\Events\\OrderShipped"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[int]:
    app = create_app(
        make_app_dir(tmp_path / "app"), settings={"pusher_apps": APPS, "script_timeout": 5}
    )
    async with hypercorn(app) as port:
        yield port


@pytest.fixture
async def caddy(server: int, tmp_path: Path) -> AsyncIterator[str]:
    # In a thread: start_caddy waits for an answer that this loop's server gives.
    process, port = await asyncio.to_thread(start_caddy, server, tmp_path / "caddy.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)


async def echo_subscribed(client: NodeClient, *channels: str) -> None:
    for channel in channels:
        await client.next("echo_subscribed", where=lambda e, c=channel: e["channel"] == c)


async def test_laravel_echo_in_node(server: int) -> None:
    ada = await pusher_js(server, "ada", echo=True)
    bob = await pusher_js(server, "bob", echo=True)
    try:
        await connected(ada)
        await connected(bob)
        ok(await ada.command("echo_listen", kind="channel", name="news", event=".greet"))
        ok(await ada.command("echo_listen", kind="private", name="orders", event="OrderShipped"))
        ok(await ada.command("echo_whisper_listen", kind="private", name="orders", event="typing"))
        ok(await ada.command("echo_whisper_listen", kind="join", name="chat", event="wave"))
        await echo_subscribed(ada, "news", "orders", "chat")
        assert (await ada.next("here"))["members"] == [{"name": "ada"}]

        # Bob joins the presence channel: ada hears him joining; he sees both.
        ok(await bob.command("echo_listen", kind="join", name="chat", event=".noop"))
        ok(await bob.command("echo_listen", kind="private", name="orders", event="OrderShipped"))
        await echo_subscribed(bob, "chat", "orders")
        here = (await bob.next("here"))["members"]
        assert sorted(member["name"] for member in here) == ["ada", "bob"]
        assert (await ada.next("joining"))["member"] == {"name": "bob"}

        # Events as Laravel's Pusher broadcaster sends them (the server SDK), and a
        # script's broadcast() naming its event.
        py = python_sdk(server)
        await asyncio.to_thread(py.trigger, "news", "greet", {"text": "hi"})
        await asyncio.to_thread(py.trigger, "private-orders", SHIPPED, {"order": 7})
        assert await broadcast(server, "private-orders", {"order": 8}, event=SHIPPED) == 2
        greet = await ada.next("echo_event", where=lambda e: e["channel"] == "news")
        assert greet["data"] == {"text": "hi"}
        for client in (ada, bob):
            shipped = [
                (await client.next("echo_event", where=lambda e: e["channel"] == "orders"))["data"]
                for _ in range(2)
            ]
            assert shipped == [{"order": 7}, {"order": 8}]

        # Whispers: client- events to the others, on private and presence channels.
        ok(await bob.command("echo_whisper", kind="private", name="orders", event="typing",
                             data={"name": "bob"}))  # fmt: skip
        ok(await bob.command("echo_whisper", kind="join", name="chat", event="wave", data={}))
        typing = await ada.next("echo_whisper", where=lambda e: e["name"] == "typing")
        assert (typing["channel"], typing["data"]) == ("orders", {"name": "bob"})
        wave = await ada.next("echo_whisper", where=lambda e: e["name"] == "wave")
        assert wave["channel"] == "chat"

        # Bob leaves the room (Echo.leave): ada hears him leaving.
        ok(await bob.command("echo_leave", name="chat"))
        assert (await ada.next("leaving"))["member"] == {"name": "bob"}
        assert ada.seen("echo_error") == [] and bob.seen("echo_error") == []
    finally:
        await bob.close()
        await ada.close()


#: What a Laravel page's bootstrap.js and a Blade view do with Echo, as a function of
#: the page (see PAGE in test_pusher_js.py: ``note`` records what happens).
LARAVEL_PAGE_SCRIPT = """\
() => new Promise((resolve) => {
  echo.channel("news").listen(".greet", (data) => note("echo", {name: "greet", data}));
  echo.private("orders")
    .listen("OrderShipped", (data) => note("echo", {name: "shipped", data}))
    .listenForWhisper("typing", (data) => note("whisper", {name: "typing", data}));
  echo.join("chat")
    .here((members) => { note("here", {members}); resolve(members); })
    .joining((member) => note("joining", {member}))
    .leaving((member) => note("leaving", {member}))
    .listenForWhisper("wave", (data) => note("whisper", {name: "wave", data}));
})
"""


async def laravel_page(browser: Browser, caddy: str, user: str) -> tuple[Page, Any]:
    page = await open_tab(browser, caddy, user, echo=True)
    members = await page.evaluate(LARAVEL_PAGE_SCRIPT)
    # Echo subscribes to the private channel too; wait until pusher-js says so.
    await page.wait_for_function(
        "window.pusher.channel('private-orders')?.subscribed === true", timeout=10_000
    )
    return page, members


async def test_laravel_echo_in_chromium_through_caddy(
    browser: Browser, server: int, caddy: str
) -> None:
    ada, members = await laravel_page(browser, caddy, "ada")
    assert members == [{"name": "ada"}]
    bob, members = await laravel_page(browser, caddy, "bob")
    assert sorted(member["name"] for member in members) == ["ada", "bob"]
    assert (await seen(ada, "joining"))[0]["member"] == {"name": "bob"}

    py = python_sdk(server)
    await asyncio.to_thread(py.trigger, "news", "greet", {"text": "hi"})
    await asyncio.to_thread(py.trigger, "private-orders", SHIPPED, {"order": 7})
    await broadcast(server, "private-orders", {"order": 8}, event=SHIPPED)
    for page in (ada, bob):
        got = await seen(page, "echo", 3)
        assert [(e["name"], e["data"]) for e in got] == [
            ("greet", {"text": "hi"}), ("shipped", {"order": 7}), ("shipped", {"order": 8}),
        ]  # fmt: skip

    await bob.evaluate("echo.private('orders').whisper('typing', {name: 'bob'})")
    await bob.evaluate("echo.join('chat').whisper('wave', {n: 1})")
    whispers = await seen(ada, "whisper", 2)
    assert [(e["name"], e["data"]) for e in whispers] == [
        ("typing", {"name": "bob"}), ("wave", {"n": 1}),
    ]  # fmt: skip
    assert await bob.evaluate("window.ofKind('whisper').length") == 0  # never to the sender

    await bob.context.close()
    assert (await seen(ada, "leaving"))[0]["member"] == {"name": "bob"}
    await ada.context.close()
