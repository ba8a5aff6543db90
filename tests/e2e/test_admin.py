"""The admin page in a real browser (Debian's Chromium, driven by Playwright): it shows
the connections the test opened, and a publish from its form reaches a Centrifuge
client; a wrong password shows nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from websockets.asyncio.client import connect

from ..integration.test_admin import PASSWORD, AdminServer
from ..sdk import PyClient, centrifuge_url, fetch_token, next_item, token_script


@pytest.fixture
def admin_server(app_dir: Path) -> Iterator[AdminServer]:
    token_script(app_dir)
    server = AdminServer(app_dir).start()
    yield server
    server.stop()


async def sign_in(browser: Browser, server: AdminServer, password: str = PASSWORD) -> Page:
    page = await browser.new_page()
    await page.goto(f"{server.internal_url}/admin")
    await page.fill("#password", password)
    await page.click("button[type=submit]")
    return page


async def test_the_page_shows_connections_and_publishes_to_a_centrifuge_client(
    browser: Browser, admin_server: AdminServer
) -> None:
    token = fetch_token(admin_server.url, user="alice")
    alice = PyClient(centrifuge_url(admin_server.url), token=token)
    await alice.connect()
    try:
        events = await alice.subscribe("news")
        async with connect(admin_server.ws_url + "?channel=news") as raw:
            page = await sign_in(browser, admin_server)
            await expect(page.locator("#status")).to_have_attribute("data-state", "open")
            # Two connections: the raw /ws one and alice's, both in "news".
            await expect(page.locator("#now-connections")).to_have_text("2", timeout=10_000)
            await expect(page.locator("#protocols")).to_contain_text("raw: 1")
            await expect(page.locator("#protocols")).to_contain_text("centrifuge: 1")
            row = page.locator("#channels tbody tr", has_text="news")
            await expect(row.locator("td").nth(1)).to_have_text("2", timeout=10_000)
            await expect(page.locator("#nodes tbody tr")).to_have_count(1)
            await expect(page.locator("#nodes tbody td").nth(1)).to_have_text("2")

            await page.fill("#channel-search", "zzz-none")
            await expect(page.locator("#channels tbody tr")).to_have_count(0)
            await page.fill("#channel-search", "NEW")
            await expect(page.locator("#channels tbody tr")).to_have_count(1)

            form = page.locator("#publish-form")
            await form.locator("[name=channel]").fill("news")
            await form.locator("[name=data]").fill('{"text": "from the admin page"}')
            await form.locator("button").click()
            await expect(page.locator("#action-result")).to_have_attribute("data-state", "ok")
            publication = await next_item(events.publications)
            assert publication.pub.data == {"text": "from the admin page"}
            assert json.loads(await asyncio.wait_for(raw.recv(), 5)) == {
                "text": "from the admin page"
            }

            presence = page.locator("#presence-form")
            await presence.locator("[name=channel]").fill("news")
            await presence.locator("button").click()
            await expect(page.locator("#action-result")).to_contain_text("presence → 200")
        # The raw connection closed: its reason is on the page.
        await expect(page.locator("#disconnects tbody tr").first).to_contain_text("raw")
    finally:
        await alice.close()


async def test_a_wrong_password_shows_nothing(browser: Browser, admin_server: AdminServer) -> None:
    page = await sign_in(browser, admin_server, password="not the password")
    await expect(page.locator("body")).to_have_text("wrong password")
    assert await page.locator("#nodes").count() == 0
    statuses = await page.evaluate(
        """async () => {
            const paths = ["/admin/state", "/admin/events", "/admin/channels", "/admin/admin.js"];
            const gets = await Promise.all(paths.map((p) => fetch(p)));
            const post = await fetch("/admin/api/publish", {
                method: "POST",
                headers: {"Content-Type": "application/json", "X-Admin-Token": "0".repeat(64)},
                body: JSON.stringify({channel: "news", data: 1}),
            });
            return [...gets.map((r) => r.status), post.status];
        }"""
    )
    assert statuses == [401, 401, 401, 401, 401]


async def test_without_centrifuge_the_page_says_why_actions_are_off(
    browser: Browser, app_dir: Path
) -> None:
    server = AdminServer(app_dir, env={"REALTIME_DISABLE_PLUGINS": "centrifuge"}).start()
    try:
        page = await sign_in(browser, server)
        status = page.locator("#api-status")
        await expect(status).to_contain_text("centrifuge plugin is not running", timeout=10_000)
        await expect(page.locator("#publish-form button")).to_be_disabled()
    finally:
        server.stop()
