"""Through real Caddy (Debian's package) with the project's own Caddyfile."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from websockets.asyncio.client import connect

from .conftest import Server


async def test_a_client_behind_caddy_receives_a_broadcast_made_through_caddy(
    server: Server, caddy: str
) -> None:
    async with (
        connect(f"ws://{caddy}/ws") as behind_caddy,
        connect(server.ws_url) as direct,
        httpx.AsyncClient() as http,
    ):
        response = await http.get(f"http://{caddy}/send.py", params={"message": "via caddy"})
        assert response.status_code == 200
        assert response.text.strip() == "Sent to 2 clients."
        assert await asyncio.wait_for(behind_caddy.recv(), 5) == "via caddy"
        assert await asyncio.wait_for(direct.recv(), 5) == "via caddy"


async def test_caddy_serves_the_page_and_passes_the_real_client_address(
    server: Server, caddy: str
) -> None:
    (server.app_dir / "whoami.py").write_text("print(request.remote_addr, request.scheme)\n")
    async with httpx.AsyncClient() as http:
        page = await http.get(f"http://{caddy}/")
        assert "new WebSocket" in page.text
        # A client cannot forge its address: Caddy replaces X-Forwarded-For.
        spoofed = await http.get(
            f"http://{caddy}/whoami.py", headers={"X-Forwarded-For": "203.0.113.9"}
        )
        assert spoofed.text.split() == ["127.0.0.1", "http"]
        # Straight to the host from a trusted address, the header is honoured...
        direct = await http.get(
            f"{server.url}/whoami.py", headers={"X-Forwarded-For": "198.51.100.7"}
        )
        assert direct.text.split()[0] == "198.51.100.7"


async def test_an_untrusted_peer_cannot_set_forwarded_headers(app_dir: Path) -> None:
    (app_dir / "whoami.py").write_text("print(request.remote_addr)\n")
    srv = Server(app_dir, "--forwarded-allow-ips", "10.9.9.9").start()
    try:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                f"{srv.url}/whoami.py", headers={"X-Forwarded-For": "198.51.100.7"}
            )
        assert response.text.strip() == "127.0.0.1"
    finally:
        srv.stop()
