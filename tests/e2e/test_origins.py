"""The Origin check: a foreign page gets 403 before the upgrade, directly and through Caddy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from ..conftest import Server, start_caddy


@pytest.fixture
def host(app_dir: Path) -> Iterator[Server]:
    server = Server(
        app_dir, "--allowed-origins", "https://*.example.com,http://trusted.test"
    ).start()
    yield server
    server.stop()


async def status_for(url: str, origin: str | None) -> int:
    """101 when the handshake is accepted, else the HTTP status it got."""
    try:
        async with connect(url, origin=origin, open_timeout=5):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        (None, 101),  # a server-side client sends no Origin
        ("http://127.0.0.1:{port}", 101),  # the page's own host
        ("https://app.example.com", 101),
        ("http://trusted.test", 101),
        ("https://evil.test", 403),
        ("http://127.0.0.1:1", 403),  # same address, another port: another origin
        ("https://example.com.evil.test", 403),
        ("null", 403),
    ],
)
async def test_origins(host: Server, origin: str | None, status: int) -> None:
    if origin is not None:
        origin = origin.format(port=host.port)
    assert await status_for(host.ws_url, origin) == status


async def test_a_foreign_origin_through_caddy_gets_403_and_no_upgrade(
    host: Server, tmp_path: Path
) -> None:
    caddy, port = start_caddy(host.port, tmp_path / "caddy.log")
    try:
        for path in ("/ws", "/connection/websocket"):
            url = f"ws://127.0.0.1:{port}{path}"
            assert await status_for(url, "https://evil.test") == 403
            assert await status_for(url, f"http://127.0.0.1:{port}") == 101
            assert await status_for(url, None) == 101
    finally:
        caddy.terminate()
        caddy.wait(10)
    # Logged once per 10 s, with a count of the rest.
    assert host.log.count("refused a WebSocket from origin") == 1


@pytest.fixture
def named_host(app_dir: Path) -> Iterator[Server]:
    server = Server(app_dir, "--allowed-hosts", "localhost,127.0.0.1,*.example.com").start()
    yield server
    server.stop()


@pytest.mark.parametrize(
    ("host_header", "status"),
    [
        ("127.0.0.1:{port}", 200),
        ("localhost", 200),
        ("app.example.com:8080", 200),
        ("rebound.evil.test:{port}", 400),  # a DNS-rebinding page's own name
        ("example.com.evil.test", 400),
        ("", 400),
    ],
)
async def test_allowed_hosts_refuse_other_host_names(
    named_host: Server, host_header: str, status: int
) -> None:
    """A rebinding page's requests carry its own name in Host: 400, for HTTP too."""
    header = host_header.format(port=named_host.port)
    async with httpx.AsyncClient(timeout=5) as http:
        answer = await http.get(f"{named_host.url}/", headers={"Host": header})
    assert answer.status_code == status
    if status == 400:
        assert "--allowed-hosts" in answer.text


async def rebound_status(port: int, name: str) -> int:
    """A handshake as a rebinding page makes it: the socket to 127.0.0.1, while Host and
    Origin both carry the page's own name."""
    url = f"ws://{name}:{port}/ws"
    try:
        async with connect(url, origin=f"http://{name}:{port}", host="127.0.0.1", port=port):  # type: ignore[arg-type]
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


async def test_a_rebinding_page_cannot_open_a_websocket(named_host: Server, host: Server) -> None:
    """Origin and Host agree, so the Origin check alone takes it for the page's own host
    (the ``host`` server, without --allowed-hosts, shows it); the host list refuses it."""
    assert await rebound_status(host.port, "rebound.evil.test") == 101
    assert await rebound_status(named_host.port, "rebound.evil.test") == 400
    assert await rebound_status(named_host.port, "localhost") == 101
