"""Through real Caddy (Debian's package) with the project's own Caddyfile."""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from .. import conftest
from ..conftest import Server


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


def test_a_port_held_on_another_loopback_address_is_never_reserved() -> None:
    """After a load run from 127.0.0.2-4 a port free on 127.0.0.1 may be held there."""
    with socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.listen()
        with socket.socket() as reservation:
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            with pytest.raises(OSError, match="in use"):
                reservation.bind(("0.0.0.0", held.getsockname()[1]))
        assert conftest.reserve_port("0.0.0.0") != held.getsockname()[1]


def test_caddy_on_a_port_taken_anyway_is_started_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    with upstream, socket.socket() as held:
        held.bind(("127.0.0.2", 0))
        held.listen()
        ports = iter([held.getsockname()[1], conftest.reserve_port("0.0.0.0")])
        monkeypatch.setattr(conftest, "reserve_port", lambda host: next(ports))
        process, port = conftest.start_caddy(upstream.server_port, tmp_path / "caddy.log")
        try:
            assert port != held.getsockname()[1]
            assert "address already in use" in (tmp_path / "caddy.log").read_text()
        finally:
            process.terminate()
            process.wait(10)
            upstream.shutdown()


def test_caddy_started_again_gets_its_reserved_port_back(tmp_path: Path) -> None:
    """Killed, its port refuses connections (the reservation never listens); started
    again on it, it serves there: nothing else could take the port in between."""
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    log = tmp_path / "caddy.log"
    with upstream:
        process, port = conftest.start_caddy(upstream.server_port, log)
        try:
            process.kill()
            process.wait(10)
            with socket.socket() as probe:
                assert probe.connect_ex(("127.0.0.1", port)) != 0
            with socket.socket() as other, pytest.raises(OSError, match="in use"):
                other.bind(("127.0.0.1", port))
            process = conftest.caddy_process(upstream.server_port, port, log)
            conftest.wait_for_http(f"http://127.0.0.1:{port}/", process=process)
        finally:
            process.terminate()
            process.wait(10)
            upstream.shutdown()
