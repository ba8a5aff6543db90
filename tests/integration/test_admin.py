"""The admin page on a real server: only on the internal listener, only with the password,
its live data from a real connection, its actions through the server API, its stream
ended by the drain."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from ..conftest import (
    RedisServer,
    Server,
    eventually,
)

PASSWORD = "an admin password for tests"


class AdminServer(Server):
    """``Server`` with ``--internal-bind`` and the admin password in
    ``REALTIME_ADMIN_PASSWORD``, as an operator would keep it."""

    def __init__(
        self,
        app_dir: Path,
        *args: str,
        password: str = PASSWORD,
        env: Mapping[str, str] | None = None,
    ) -> None:
        env = {"REALTIME_ADMIN_PASSWORD": password, **(env or {})}
        super().__init__(app_dir, *args, env=env, internal=True)


@pytest.fixture
def admin_server(app_dir: Path) -> Iterator[AdminServer]:
    server = AdminServer(app_dir).start()
    yield server
    server.stop()


async def sign_in(http: httpx.AsyncClient, base: str) -> str:
    """Log ``http`` in; the page's CSRF token."""
    response = await http.post(f"{base}/admin/login", data={"password": PASSWORD})
    assert response.status_code == 303, response.text
    page = await http.get(f"{base}/admin")
    found = re.search(r'name="admin-token" content="([0-9a-f]{64})"', page.text)
    assert found is not None, page.text[:200]
    return found.group(1)


async def test_without_the_password_nothing_but_the_form(admin_server: AdminServer) -> None:
    base = admin_server.internal_url
    async with httpx.AsyncClient(timeout=5) as http:
        wrong = await http.post(f"{base}/admin/login", data={"password": "not it"})
        assert wrong.status_code == 401 and wrong.text == "wrong password\n"
        assert "set-cookie" not in wrong.headers
        for path in ("/admin/state", "/admin/events", "/admin/channels"):
            response = await http.get(base + path)
            assert response.status_code == 401 and response.text == "unauthorized\n", path
        api = await http.post(f"{base}/admin/api/publish", json={"channel": "news", "data": 1})
        assert api.status_code == 401
        # The public listener has no admin page at all.
        public = await http.post(f"{admin_server.url}/admin/login", data={"password": PASSWORD})
        assert public.status_code == 404
        assert (await http.get(f"{admin_server.url}/admin/state")).status_code == 404
        await sign_in(http, base)
    assert PASSWORD not in admin_server.log


async def _state(http: httpx.AsyncClient, base: str) -> dict[str, Any]:
    response = await http.get(f"{base}/admin/state")
    assert response.status_code == 200
    data: dict[str, Any] = response.json()
    return data


async def test_it_shows_a_raw_connection_and_publishes_to_it(admin_server: AdminServer) -> None:
    base = admin_server.internal_url
    async with (
        httpx.AsyncClient(timeout=5) as http,
        connect(admin_server.ws_url + "?channel=news") as ws,
    ):
        token = await sign_in(http, base)

        async def connected() -> bool:
            data = await _state(http, base)
            return bool(data["nodes"][0]["num_clients"] == 1 and data["protocols"].get("raw") == 1)

        await eventually(connected, message="the connection on the admin page")
        channels = (await http.get(f"{base}/admin/channels", params={"q": "NEW"})).json()
        assert channels["channels"] == [["news", 1]]

        headers = {"X-Admin-Token": token}
        body = {"channel": "news", "data": {"text": "from the admin page"}}
        response = await http.post(f"{base}/admin/api/publish", json=body, headers=headers)
        assert response.status_code == 200 and response.json() == {"result": {}}
        message = await asyncio.wait_for(ws.recv(), 5)
        assert json.loads(message) == {"text": "from the admin page"}

        info = await http.post(f"{base}/admin/api/info", json={}, headers=headers)
        assert info.json()["result"]["nodes"][0]["num_clients"] == 1

    async def gone() -> list[Any]:
        async with httpx.AsyncClient(timeout=5, cookies=http.cookies) as again:
            disconnects: list[Any] = (await _state(again, base))["disconnects"]
            return disconnects

    recent = await eventually(gone, message="the disconnect on the admin page")
    assert isinstance(recent, list) and recent[0]["protocol"] == "raw"


async def test_the_event_stream_ticks_and_ends_when_the_server_drains(
    admin_server: AdminServer,
) -> None:
    base = admin_server.internal_url
    async with httpx.AsyncClient(timeout=10) as http:
        await sign_in(http, base)
        async with http.stream("GET", f"{base}/admin/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events: list[dict[str, Any]] = []
            lines = stream.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    events.append(json.loads(line[6:]))
                if len(events) == 3:
                    break
            assert "history" in events[0] and "history" not in events[2]
            assert events[2]["sample"][0] > events[1]["sample"][0]
            stopping = asyncio.get_running_loop().run_in_executor(None, admin_server.stop)
            started = time.monotonic()
            async for _ in lines:  # the drain ends the stream: the loop finishes
                pass
            assert time.monotonic() - started < 8
            await stopping


async def test_with_workers_one_login_serves_every_worker_and_the_nodes_are_all_there(
    app_dir: Path, redis_server: RedisServer
) -> None:
    server = AdminServer(app_dir, "--workers", "2", "--broker", redis_server.url).start()
    try:
        base = server.internal_url
        async with httpx.AsyncClient(timeout=5) as http:
            await sign_in(http, base)
            cookies = http.cookies

        async def every_worker_answers() -> set[str]:
            served = set()
            for _ in range(20):
                # A fresh connection each time, so SO_REUSEPORT may pick either worker.
                async with httpx.AsyncClient(timeout=5, cookies=cookies) as fresh:
                    data = await _state(fresh, base)
                served.add(data["node"])
            return served if len(served) == 2 else set()

        served = await eventually(every_worker_answers, timeout=20, message="both workers")

        async def nodes_listed() -> set[str]:
            seen = 0
            async with (
                httpx.AsyncClient(timeout=5, cookies=cookies) as fresh,
                fresh.stream("GET", f"{base}/admin/events") as stream,
            ):
                async for line in stream.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    names = {node["name"] for node in json.loads(line[6:])["nodes"]}
                    seen += 1
                    if names == served or seen == 5:
                        return names if names == served else set()
            return set()

        await eventually(nodes_listed, timeout=20, message="both nodes on the page")
    finally:
        server.stop()
