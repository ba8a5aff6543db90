"""centrifuge-js in Chromium on a network that refuses WebSockets: the fallback transports.

Caddy answers 400 to every Upgrade request (as some proxies and networks do), so the
SDK, configured with websocket, http_stream and sse in that order, falls back to
HTTP-streaming (or SSE) with its commands in ``POST /emulation``. Behind Caddy's
``least_conn`` with two hosts, those requests land on the host not holding the
stream and are routed to it through Redis.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from playwright.async_api import Browser, Page

from ..conftest import RedisServer, Server, eventually, start_caddy

SECRET = "fallback-test-secret-long-enough-32b"
API_KEY = "fallback-api-key"
ARGS = ("--token-hmac-secret", SECRET, "--api-key", API_KEY)
CHANNEL = "chat:fallback"

#: Caddy refusing WebSocket upgrades, in front of one or more hosts.
CADDYFILE = """\
{{
	admin off
	# A stream is a request Caddy waits for when stopping: not for long here.
	grace_period 1s
}}

:{{$REALTIME_HTTP_PORT}} {{
	@upgrade header Upgrade *
	respond @upgrade "WebSockets are blocked on this network." 400 {{
		close
	}}
	reverse_proxy {upstreams} {{
		# As deploy/Caddyfile.cluster: a host that is down is left out for a while.
		lb_policy least_conn
		lb_try_duration 5s
		lb_try_interval 250ms
		health_uri /-/health
		health_interval 1s
		fail_duration 10s
		header_up X-Forwarded-Proto {{scheme}}
		flush_interval -1
	}}
}}
"""

#: The page: centrifuge-js, and what the test drives it with.
PAGE = """\
<!doctype html>
<meta charset="utf-8">
<script src="/vendor/centrifuge.js"></script>
<script>
window.events = [];
window.start = (token, transports, channel) => {
  const host = location.host;
  const endpoints = {
    websocket: `ws://${host}/connection/websocket`,
    http_stream: `http://${host}/connection/http_stream`,
    sse: `http://${host}/connection/sse`,
  };
  const client = new Centrifuge(
    transports.map((transport) => ({transport, endpoint: endpoints[transport]})),
    {token, emulationEndpoint: `http://${host}/emulation`, minReconnectDelay: 100,
     maxReconnectDelay: 500},
  );
  client.on("connected", (ctx) => events.push({type: "connected", transport: ctx.transport}));
  client.on("connecting", (ctx) => events.push({type: "connecting", code: ctx.code}));
  const sub = client.newSubscription(channel);
  sub.on("subscribed", (ctx) => events.push(
    {type: "subscribed", recovered: ctx.recovered, wasRecovering: ctx.wasRecovering}));
  sub.on("publication", (ctx) => events.push({type: "pub", data: ctx.data}));
  sub.subscribe();
  client.connect();
  window.client = client;
  window.sub = sub;
};
</script>
"""


def token(user: str) -> str:
    return jwt.encode({"sub": user}, SECRET, algorithm="HS256")


@pytest.fixture
def page_app(app_dir: Path) -> Path:
    if not (app_dir / "vendor" / "centrifuge.js").is_file():
        raise RuntimeError("app/vendor/centrifuge.js is missing: run scripts/setup '' npm")
    (app_dir / "fallback.html").write_text(PAGE)
    return app_dir


def caddy_in_front(tmp_path: Path, *hosts: Server) -> tuple[Any, int]:
    config = tmp_path / "Caddyfile.fallback"
    upstreams = " ".join(f"127.0.0.1:{host.port}" for host in hosts)
    config.write_text(CADDYFILE.format(upstreams=upstreams))
    return start_caddy(hosts[0].port, tmp_path / "caddy-fallback.log", config=str(config))


@pytest.fixture
def one_host(page_app: Path, tmp_path: Path) -> Iterator[tuple[Server, int]]:
    server = Server(page_app, *ARGS).start()
    caddy, port = caddy_in_front(tmp_path, server)
    try:
        yield server, port
    finally:
        server.stop()
        caddy.terminate()
        caddy.wait(10)


async def events(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await page.evaluate("window.events")
    return found


async def wait_event(page: Page, kind: str, count: int = 1, timeout: float = 15.0) -> list[Any]:
    async def seen() -> list[dict[str, Any]] | None:
        matching = [event for event in await events(page) if event["type"] == kind]
        return matching if len(matching) >= count else None

    found = await eventually(seen, timeout=timeout, message=f"{count} {kind} events")
    assert isinstance(found, list)
    return found


async def publish(base: str, data: Any) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{base}/api/publish",
            json={"channel": CHANNEL, "data": data},
            headers={"x-api-key": API_KEY},
        )
    assert response.status_code == 200 and "error" not in response.json(), response.text


async def opened_page(browser: Browser, port: int, transports: list[str]) -> Page:
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    await page.goto(f"http://127.0.0.1:{port}/fallback.html")
    await page.evaluate(
        "([token, transports, channel]) => start(token, transports, channel)",
        [token("ada"), transports, CHANNEL],
    )
    assert errors == []
    return page


@pytest.mark.parametrize(
    ("transports", "expected"),
    [(["websocket", "http_stream", "sse"], "http_stream"), (["websocket", "sse"], "sse")],
)
async def test_the_sdk_falls_back_subscribes_publishes_and_recovers(
    browser: Browser, one_host: tuple[Server, int], transports: list[str], expected: str
) -> None:
    server, port = one_host
    page = await opened_page(browser, port, transports)
    connected = await wait_event(page, "connected")
    assert connected[0]["transport"] == expected
    await wait_event(page, "subscribed")
    await publish(server.url, {"text": "from the server"})
    await page.evaluate("sub.publish({text: 'from the page'})")
    pubs = await wait_event(page, "pub", 2)
    assert [pub["data"] for pub in pubs] == [{"text": "from the server"}, {"text": "from the page"}]
    # The stream drops (the device goes offline); what is published meanwhile is
    # recovered once it is back.
    await page.context.set_offline(True)
    await wait_event(page, "connecting", 2)  # the first was connect() itself
    await publish(server.url, {"text": "while away"})
    await page.context.set_offline(False)
    subscribed = await wait_event(page, "subscribed", 2)
    assert subscribed[-1]["wasRecovering"] and subscribed[-1]["recovered"], subscribed
    pubs = await wait_event(page, "pub", 3)
    assert pubs[-1]["data"] == {"text": "while away"}
    assert [event["transport"] for event in await wait_event(page, "connected", 2)] == [
        expected,
        expected,
    ]
    await page.close()


async def test_two_hosts_route_emulation_requests_to_the_stream(
    browser: Browser, page_app: Path, redis_server: RedisServer, tmp_path: Path
) -> None:
    hosts = [Server(page_app, *ARGS, "--broker", redis_server.url).start() for _ in range(2)]
    caddy, port = caddy_in_front(tmp_path, *hosts)
    try:
        page = await opened_page(browser, port, ["websocket", "http_stream", "sse"])
        assert (await wait_event(page, "connected"))[0]["transport"] == "http_stream"
        await wait_event(page, "subscribed")
        holder = next(h for h in hosts if "POST /connection/http_stream 200" in h.log)
        other = next(h for h in hosts if h is not holder)
        for number in range(4):
            await page.evaluate(f"sub.publish({{n: {number}}})")
        pubs = await wait_event(page, "pub", 4)
        assert sorted(pub["data"]["n"] for pub in pubs) == [0, 1, 2, 3]
        # least_conn: the stream holds a connection to its host, so the commands went
        # to the other one, which routed them through Redis.
        assert other.log.count("POST /emulation 204") >= 1, other.log[-2000:]
        # The stream's host goes away; the SDK reconnects through Caddy to the other
        # one and recovers what was published meanwhile.
        holder.stop()
        await wait_event(page, "connecting", 2)
        await publish(other.url, {"n": "while away"})
        subscribed = await wait_event(page, "subscribed", 2, timeout=20)
        assert subscribed[-1]["recovered"], subscribed
        pubs = await wait_event(page, "pub", 5)
        assert pubs[-1]["data"] == {"n": "while away"}
        await page.close()
    finally:
        for host in hosts:
            host.stop()
        caddy.terminate()
        caddy.wait(10)
