"""app/chat.html in Debian's Chromium through Caddy: centrifuge-js in a real page.

The page loads the vendored browser build (/vendor/centrifuge.js, copied by
scripts/setup), gets its tokens from app/chat_token.py and talks the Centrifuge
protocol to /connection/websocket.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Locator, Page, expect

from ..conftest import Server, caddy_process, start_caddy, wait_for_http

#: Publishes ``{"channel": ..., "data": ...}`` (a JSON body) with broadcast().
PUBLISH_SCRIPT = """\
body = request.json
response.json({"delivered": broadcast(body["data"], channel=body["channel"])})
"""


@pytest.fixture(autouse=True)
def vendored_sdk(app_dir: Path) -> None:
    """The page's centrifuge-js, copied from node_modules by scripts/setup."""
    if not (app_dir / "vendor" / "centrifuge.js").is_file():
        raise RuntimeError("app/vendor/centrifuge.js is missing: run scripts/setup '' npm")


@pytest.fixture
def publish_script(app_dir: Path) -> None:
    (app_dir / "publish.py").write_text(PUBLISH_SCRIPT)


async def sign_in(browser: Browser, caddy: str, name: str, query: str = "") -> Page:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://{caddy}/chat.html{query}")
    await page.fill("#name", name)
    await page.click("#login button[type=submit]")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "connected", timeout=10_000)
    # chat_token.py signs guests only: the id is "guest-" + the name typed.
    await expect(status).to_have_text(f"connected as guest-{name}")
    await expect(page.locator("#login")).to_be_hidden()
    assert errors == []
    return page


def room(page: Page, channel: str) -> Locator:
    return page.locator(f'.room[data-channel="{channel}"]')


async def join(page: Page, name: str, state: str = "subscribed") -> None:
    channel = name if ":" in name else f"chat:{name}"
    await page.fill("#room", name)
    await page.click("#join button[type=submit]")
    await expect(room(page, channel)).to_have_attribute("data-state", state)


async def post(page: Page, channel: str, text: str) -> None:
    section = room(page, channel)
    await section.locator(".post .text").fill(text)
    await section.locator(".post button[type=submit]").click()
    await expect(section.locator(".post .text")).to_have_value("")


async def test_two_users_in_two_rooms_each_see_only_their_room(
    browser: Browser, server: Server, caddy: str
) -> None:
    ada = await sign_in(browser, caddy, "ada")
    bob = await sign_in(browser, caddy, "bob")
    cleo = await sign_in(browser, caddy, "cleo")
    await join(ada, "lobby")
    await join(bob, "kitchen")
    for name in ("lobby", "kitchen"):
        await join(cleo, name)

    await post(ada, "chat:lobby", "hello lobby <b>bold?</b>")
    await post(bob, "chat:kitchen", "hello kitchen")

    # cleo is in both rooms: each message lands in its own room, with its author.
    lobby = room(cleo, "chat:lobby").locator(".message")
    kitchen = room(cleo, "chat:kitchen").locator(".message")
    await expect(lobby).to_have_count(1)
    await expect(lobby.locator(".user")).to_have_text("guest-ada")
    await expect(lobby.locator(".text")).to_have_text("hello lobby <b>bold?</b>")
    await expect(kitchen).to_have_count(1)
    await expect(kitchen.locator(".user")).to_have_text("guest-bob")
    # ada and bob each got their own message back, and nothing from the other room.
    await expect(ada.locator(".message .text")).to_have_text(["hello lobby <b>bold?</b>"])
    await expect(bob.locator(".message .text")).to_have_text(["hello kitchen"])
    for page in (ada, bob):
        await expect(page.locator(".room")).to_have_count(1)
    await expect(cleo.locator(".message b")).to_have_count(0)  # text, never markup


async def test_a_room_shows_who_is_here_as_they_come_and_go(
    browser: Browser, server: Server, caddy: str
) -> None:
    ada = await sign_in(browser, caddy, "ada")
    await join(ada, "den")
    here = room(ada, "chat:den").locator(".members li")
    await expect(here).to_have_text(["guest-ada"])
    bob = await sign_in(browser, caddy, "bob")
    await join(bob, "den")
    await expect(here).to_have_text(["guest-ada", "guest-bob"])  # bob's join, pushed
    await expect(room(bob, "chat:den").locator(".members li")).to_have_text(
        ["guest-ada", "guest-bob"]
    )
    await expect(room(bob, "chat:den").locator(".members li[data-me]")).to_have_text("guest-bob")
    tab = await sign_in(browser, caddy, "bob")  # bob's second tab: still two people
    await join(tab, "den")
    await expect(room(tab, "chat:den").locator(".members li")).to_have_text(
        ["guest-ada", "guest-bob"]
    )
    await bob.close()
    await tab.close()
    await expect(here).to_have_text(["guest-ada"])  # both of bob's leaves, pushed
    await expect(room(ada, "chat:den")).to_have_attribute("data-members", "1")


async def test_a_private_room_is_refused(browser: Browser, server: Server, caddy: str) -> None:
    ada = await sign_in(browser, caddy, "ada")
    await join(ada, "$chat:staff", state="refused")
    staff = room(ada, "$chat:staff")
    await expect(staff.locator(".room-state")).to_have_text("refused: permission denied (103)")
    await expect(staff.locator(".post")).to_be_hidden()
    # The refusal is the room's alone: the connection and the other rooms carry on.
    await join(ada, "lobby")
    await post(ada, "chat:lobby", "still connected")
    await expect(room(ada, "chat:lobby").locator(".message .text")).to_have_text(
        ["still connected"]
    )
    await expect(ada.locator("#status")).to_have_attribute("data-connects", "1")


async def test_short_lived_tokens_are_refreshed_without_a_gap(
    browser: Browser, server: Server, caddy: str, publish_script: None
) -> None:
    ada = await sign_in(browser, caddy, "ada", query="?expire_in=2")
    await join(ada, "lobby")
    sent = [f"message {n}" for n in range(24)]  # 6 s: three 2-second tokens
    async with httpx.AsyncClient() as http:
        for text in sent:
            response = await http.post(
                f"http://{caddy}/publish.py", json={"channel": "chat:lobby", "data": text}
            )
            assert response.json() == {"delivered": 1}
            await asyncio.sleep(0.25)
    messages = room(ada, "chat:lobby").locator(".message .text")
    await expect(messages).to_have_text(sent)
    await expect(room(ada, "chat:lobby").locator(".message .user")).to_have_text(
        ["server"] * len(sent)
    )
    status = ada.locator("#status")
    await expect(status).to_have_attribute("data-connects", "1")  # never reconnected
    assert int(await status.get_attribute("data-tokens") or 0) >= 3
    # Still signed in as ada after the refreshes: her post carries her name.
    await post(ada, "chat:lobby", "still here")
    await expect(room(ada, "chat:lobby").locator(".message .user").last).to_have_text("guest-ada")


async def test_a_room_shows_its_last_messages_and_a_tab_back_from_a_drop_gets_what_it_missed(
    browser: Browser, server: Server, tmp_path: Path, publish_script: None
) -> None:
    """Issue 8's scenario: 10 published, the connection dropped (Caddy killed), 5 more,
    Caddy back: exactly those 5, once, in order, then live ones."""
    log = tmp_path / "caddy.log"
    process, port = start_caddy(server.port, log)
    caddy = f"127.0.0.1:{port}"

    async def publish(n: int) -> None:
        async with httpx.AsyncClient(base_url=server.url) as http:  # straight, not via Caddy
            body = {"channel": "chat:lobby", "data": {"text": f"m{n}"}}
            assert (await http.post("/publish.py", json=body)).is_success

    try:
        ada = await sign_in(browser, caddy, "ada")
        for n in range(10):
            await publish(n)
        await join(ada, "lobby")
        lobby = room(ada, "chat:lobby")
        messages = lobby.locator(".message .text")
        await expect(messages).to_have_text([f"m{n}" for n in range(10)])  # the room's history
        await expect(lobby).to_have_attribute("data-recovered", "")
        process.kill()  # the network drops: no close frame, no goodbye
        process.wait(10)
        status = ada.locator("#status")
        await expect(status).not_to_have_attribute("data-state", "connected", timeout=10_000)
        for n in range(10, 15):
            await publish(n)
        process = caddy_process(server.port, port, log)
        wait_for_http(f"http://{caddy}/", process=process)
        await expect(status).to_have_attribute("data-state", "connected", timeout=30_000)
        await expect(lobby).to_have_attribute("data-recovered", "true")
        await expect(lobby.locator(".room-state")).to_have_text("back: nothing missed")
        await expect(messages).to_have_text([f"m{n}" for n in range(15)])
        await publish(15)
        await expect(messages).to_have_text([f"m{n}" for n in range(16)])
        assert await lobby.get_attribute("data-duplicates") is None  # none sent twice
        offsets = await lobby.locator(".message").evaluate_all(
            "items => items.map(li => Number(li.dataset.offset))"
        )
        assert offsets == list(range(1, 17))
    finally:
        process.terminate()
        process.wait(10)
