"""The admin page's routes on the internal app, through Quart's test client (no sockets):
login, the cookie on every route, CSRF, the bounds, the event stream."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from quart import Quart
from quart.typing import TestClientProtocol as Client

from realtime import create_app, get_host
from realtime_admin import get_admin
from realtime_admin.views import MAX_ACTION_BODY, MAX_STREAMS

PASSWORD = "correct horse battery staple"
INTERNAL = "127.0.0.1:9"
GUARDED_GETS = ["/admin/state", "/admin/events", "/admin/channels", "/admin/admin.js"]
ACTIONS = ["publish", "presence", "history", "disconnect", "info", "channels"]


def build(disabled: list[str] | None = None, **settings: Any) -> Quart:
    given = {"internal_bind": INTERNAL, "admin_password": PASSWORD, **settings}
    return create_app(settings=given, disabled=disabled)


@pytest.fixture
async def app() -> AsyncIterator[Quart]:
    app = build()
    async with app.test_app():
        yield app


def internal(app: Quart) -> Client:
    inside = get_host(app).internal_app
    assert inside is not None
    return inside.test_client()


def session_cookie(client: Client) -> str:
    """The session cookie the client holds."""
    assert client.cookie_jar is not None
    values = [c.value for c in client.cookie_jar if c.name == "realtime_admin" and c.value]
    assert len(values) == 1
    return values[0]


def with_cookie(app: Quart, value: str) -> Client:
    """A fresh client presenting ``value`` as the session cookie."""
    client = internal(app)
    client.set_cookie("localhost", "realtime_admin", value, path="/admin")
    return client


async def sign_in(client: Client) -> str:
    """Log in; the page's CSRF token."""
    response = await client.post("/admin/login", form={"password": PASSWORD})
    assert response.status_code == 303
    page = await (await client.get("/admin")).get_data(as_text=True)
    found = re.search(r'name="admin-token" content="([0-9a-f]{64})"', page)
    assert found is not None
    return found.group(1)


async def test_without_a_session_there_is_only_the_login_form(app: Quart) -> None:
    client = internal(app)
    page = await client.get("/admin")
    assert page.status_code == 200
    body = await page.get_data()
    assert b'action="/admin/login"' in body and b"admin-token" not in body
    assert page.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    for path in GUARDED_GETS:
        response = await client.get(path)
        assert response.status_code == 401, path
        assert await response.get_data() == b"unauthorized\n"
    for method in ACTIONS:
        response = await client.post(f"/admin/api/{method}", json={"channel": "news"})
        assert response.status_code == 401, method


async def test_a_wrong_password_gets_401_and_no_cookie(
    app: Quart, caplog: pytest.LogCaptureFixture
) -> None:
    client = internal(app)
    caplog.set_level(logging.DEBUG)
    response = await client.post("/admin/login", form={"password": "guess"})
    assert response.status_code == 401
    assert await response.get_data() == b"wrong password\n"
    assert "Set-Cookie" not in response.headers
    assert (await client.get("/admin/state")).status_code == 401
    await sign_in(client)
    assert PASSWORD not in caplog.text and "guess" not in caplog.text


async def test_the_session_cookie_is_httponly_strict_and_for_admin_only(app: Quart) -> None:
    client = internal(app)
    response = await client.post("/admin/login", form={"password": PASSWORD})
    assert response.status_code == 303 and response.headers["Location"] == "/admin"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("realtime_admin=v1.")
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/admin", "Max-Age=43200"):
        assert attribute in cookie
    state = await client.get("/admin/state")
    assert state.status_code == 200
    data = json.loads(await state.get_data())
    assert data["api"] == {"available": True, "reason": ""}
    assert data["nodes"][0]["name"] == data["node"]


async def test_a_tampered_cookie_is_refused(app: Quart) -> None:
    client = internal(app)
    await sign_in(client)
    good = session_cookie(client)
    version, expiry, nonce, mac = good.split(".")
    for forged in (
        f"{version}.{int(expiry) + 3600}.{nonce}.{mac}",
        f"{version}.{expiry}.{nonce[::-1]}.{mac}",
        f"{version}.{expiry}.{nonce}.{mac[::-1]}",
    ):
        assert (await with_cookie(app, forged).get("/admin/state")).status_code == 401
    assert (await with_cookie(app, good).get("/admin/state")).status_code == 200


async def test_logins_are_rate_limited_per_address(app: Quart) -> None:
    client = internal(app)
    statuses = [
        (await client.post("/admin/login", form={"password": "nope"})).status_code for _ in range(8)
    ]
    assert statuses[:5] == [401] * 5 and 429 in statuses[5:]
    # Over the budget, even the right password is not compared.
    right = await client.post("/admin/login", form={"password": PASSWORD})
    assert right.status_code == 429 and "Set-Cookie" not in right.headers


async def test_an_oversized_login_is_refused(app: Quart) -> None:
    client = internal(app)
    response = await client.post("/admin/login", form={"password": "x" * 10_000})
    assert response.status_code == 413


async def test_actions_need_the_token_json_and_the_same_origin(app: Quart) -> None:
    client = internal(app)
    token = await sign_in(client)
    body = {"channel": "news", "data": {"text": "hi"}}
    without = await client.post("/admin/api/publish", json=body)
    assert without.status_code == 403
    wrong = await client.post("/admin/api/publish", json=body, headers={"X-Admin-Token": "0" * 64})
    assert wrong.status_code == 403
    headers = {"X-Admin-Token": token}
    foreign = await client.post(
        "/admin/api/publish", json=body, headers={**headers, "Origin": "http://evil.example"}
    )
    assert foreign.status_code == 403
    form = await client.post("/admin/api/publish", form={"channel": "news"}, headers=headers)
    assert form.status_code == 415
    ok = await client.post("/admin/api/publish", json=body, headers=headers)
    assert ok.status_code == 200, await ok.get_data()
    assert json.loads(await ok.get_data()) == {"result": {}}
    history = await client.post("/admin/api/info", json={}, headers=headers)
    assert json.loads(await history.get_data())["result"]["nodes"]


async def test_only_the_listed_methods_and_bounded_bodies(app: Quart) -> None:
    client = internal(app)
    headers = {"X-Admin-Token": await sign_in(client)}
    for method in ("broadcast", "unsubscribe", "history_remove", "refresh", "x" * 40):
        response = await client.post(f"/admin/api/{method}", json={}, headers=headers)
        assert response.status_code == 404, method
    big = {"channel": "news", "data": "x" * MAX_ACTION_BODY}
    response = await client.post("/admin/api/publish", json=big, headers=headers)
    assert response.status_code == 413


async def test_logout_ends_the_session(app: Quart) -> None:
    client = internal(app)
    token = await sign_in(client)
    cookie = session_cookie(client)
    assert (await with_cookie(app, cookie).get("/admin/state")).status_code == 200
    response = await client.post("/admin/logout", json={}, headers={"X-Admin-Token": token})
    assert response.status_code == 200
    assert (await with_cookie(app, cookie).get("/admin/state")).status_code == 401


async def test_without_centrifuge_actions_answer_503_with_the_reason() -> None:
    app = build(disabled=["centrifuge"])
    async with app.test_app():
        client = internal(app)
        headers = {"X-Admin-Token": await sign_in(client)}
        response = await client.post("/admin/api/publish", json={"channel": "x"}, headers=headers)
        assert response.status_code == 503
        assert b"centrifuge plugin is not running" in await response.get_data()
        state = json.loads(await (await client.get("/admin/state")).get_data())
        assert state["api"]["available"] is False and "centrifuge" in state["api"]["reason"]


async def test_the_public_app_serves_no_admin_route(app: Quart) -> None:
    public = app.test_client()
    assert (await public.get("/admin")).status_code == 404
    assert (await public.post("/admin/login", form={"password": PASSWORD})).status_code != 303


async def test_no_password_no_admin_page() -> None:
    app = create_app(settings={"internal_bind": INTERNAL})
    async with app.test_app():
        assert get_admin(get_host(app)) is None
        assert (await internal(app).get("/admin")).status_code == 404


def test_a_short_password_is_refused_at_start() -> None:
    from realtime import PluginError

    with pytest.raises(PluginError, match="at least 8 characters") as caught:
        build(admin_password="short")
    assert "short" not in str(caught.value).replace("at least", "")


async def test_channels_are_searched_and_bounded(
    app: Quart, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = internal(app)
    await sign_in(client)
    from realtime_broker import get_broker

    counts = {f"room:{i}": i for i in range(3000)} | {"news": 5000}
    broker = get_broker(get_host(app))

    async def cluster_channels() -> dict[str, int]:
        return counts

    monkeypatch.setattr(broker, "cluster_channels", cluster_channels)
    data = json.loads(await (await client.get("/admin/channels")).get_data())
    assert data["total"] == 3001 and len(data["channels"]) == 1000
    assert data["channels"][0] == ["news", 5000] and data["channels"][1] == ["room:2999", 2999]
    found = json.loads(await (await client.get("/admin/channels?q=ROOM:12")).get_data())
    assert [name for name, _ in found["channels"]][:3] == ["room:1299", "room:1298", "room:1297"]
    assert all("room:12" in name for name, _ in found["channels"])
    too_long = await client.get("/admin/channels", query_string={"q": "x" * 129})
    assert too_long.status_code == 400


async def _events(client: Client) -> Any:
    connection = client.request("/admin/events")
    await connection.__aenter__()
    await connection.send_complete()
    return connection


async def test_the_event_stream_sends_history_then_samples_and_is_bounded(app: Quart) -> None:
    client = internal(app)
    await sign_in(client)
    admin = get_admin(get_host(app))
    assert admin is not None
    first = await _events(client)
    opened = [first]
    try:
        chunk = await asyncio.wait_for(first.receive(), 5)
        assert chunk.startswith(b"retry: 3000\ndata: ")
        event = json.loads(chunk.split(b"data: ", 1)[1])
        assert "history" in event and event["api"]["available"] is True
        admin.monitor.sample()
        chunk = await asyncio.wait_for(first.receive(), 5)
        event = json.loads(chunk.split(b"data: ", 1)[1])
        assert "history" not in event and len(event["sample"]) == 4
        for _ in range(MAX_STREAMS - 1):
            opened.append(await _events(client))
        await asyncio.wait_for(opened[-1].receive(), 5)
        assert admin.monitor.watchers == MAX_STREAMS
        over = await client.get("/admin/events")
        assert over.status_code == 503
    finally:
        for connection in opened:
            await connection.disconnect()
            await connection.__aexit__(None, None, None)
    assert admin.monitor.watchers == 0


async def test_the_event_stream_ends_when_the_server_drains(app: Quart) -> None:
    client = internal(app)
    await sign_in(client)
    admin = get_admin(get_host(app))
    assert admin is not None
    connection = await _events(client)
    try:
        await asyncio.wait_for(connection.receive(), 5)
        await get_host(app).drain()
        ended = False
        for _ in range(3):  # a snapshot may be on its way; then the end (an empty chunk)
            if not await asyncio.wait_for(connection.receive(), 5):
                ended = True
                break
        assert ended, "the stream goes on after the drain"
    finally:
        await connection.disconnect()
        await connection.__aexit__(None, None, None)
    assert admin.monitor.watchers == 0
    assert (await client.get("/admin/events")).status_code == 503


async def test_a_login_from_another_origin_or_null_is_refused(app: Quart) -> None:
    client = internal(app)
    for origin in ("http://evil.example", "null"):
        response = await client.post(
            "/admin/login", form={"password": PASSWORD}, headers={"Origin": origin}
        )
        assert response.status_code == 403 and "Set-Cookie" not in response.headers
    same = await client.post(
        "/admin/login", form={"password": PASSWORD}, headers={"Origin": "http://localhost"}
    )
    assert same.status_code == 303


async def test_signing_out_ends_the_open_stream(app: Quart) -> None:
    client = internal(app)
    token = await sign_in(client)
    admin = get_admin(get_host(app))
    assert admin is not None
    connection = await _events(client)
    try:
        await asyncio.wait_for(connection.receive(), 5)
        response = await client.post("/admin/logout", json={}, headers={"X-Admin-Token": token})
        assert response.status_code == 200
        ended = False
        for _ in range(3):
            admin.monitor.sample()
            if not await asyncio.wait_for(connection.receive(), 5):
                ended = True
                break
        assert ended, "the stream goes on after signing out"
    finally:
        await connection.disconnect()
        await connection.__aexit__(None, None, None)
