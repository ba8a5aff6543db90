"""In a real browser: Debian's Chromium, driven by Playwright, through Caddy."""

from __future__ import annotations

import httpx
from playwright.async_api import Browser, Page, expect

from ..conftest import Server


async def open_tab(browser: Browser, url: str) -> Page:
    page = await browser.new_page()
    await page.goto(url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "open", timeout=10_000)
    return page


async def test_two_tabs_see_a_broadcast_and_reconnect_after_a_host_restart(
    browser: Browser, server: Server, caddy: str
) -> None:
    tabs = [await open_tab(browser, f"http://{caddy}/") for _ in range(2)]
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{caddy}/send.py", params={"message": "hello"})
    assert response.text.strip() == "Sent to 2 clients."
    for tab in tabs:
        await expect(tab.locator("#messages .message").first).to_have_text("hello")
        await expect(tab.locator("#messages time").first).not_to_be_empty()

    server.stop()
    for tab in tabs:
        # It notices: "closed", then "connecting" again while it backs off and retries.
        await expect(tab.locator("#status")).not_to_have_attribute("data-state", "open")
    server.start()  # same port: Caddy's upstream comes back
    for tab in tabs:
        await expect(tab.locator("#status")).to_have_attribute("data-state", "open", timeout=20_000)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://{caddy}/send.py", params={"message": "after restart"})
    assert response.text.strip() == "Sent to 2 clients."
    for tab in tabs:
        await expect(tab.locator("#messages .message").first).to_have_text("after restart")
        await expect(tab.locator("#messages .message")).to_have_count(2)


async def test_the_page_form_posts_to_send_py(browser: Browser, server: Server, caddy: str) -> None:
    sender = await open_tab(browser, f"http://{caddy}/")
    watcher = await open_tab(browser, f"http://{caddy}/")
    await sender.fill("#message", "<img src=x onerror=alert(1)> typed")
    await sender.click("button[type=submit]")
    await expect(sender.locator("#send-result")).to_have_text("Sent to 2 clients.")
    for tab in (sender, watcher):
        # Shown as text, never as markup.
        await expect(tab.locator("#messages .message").first).to_have_text(
            "<img src=x onerror=alert(1)> typed"
        )
        await expect(tab.locator("#messages img")).to_have_count(0)
