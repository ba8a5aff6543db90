"""Cleartext HTTP/2 is refused: through Caddy it would be a tunnel with forgeable headers."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest

from ..conftest import Server, start_caddy

UPGRADE_REQUEST = (
    b"GET /who.py HTTP/1.1\r\n"
    b"Host: example.test\r\n"
    b"Connection: Upgrade, HTTP2-Settings\r\n"
    b"Upgrade: h2c\r\n"
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n"
    b"X-Forwarded-For: 6.6.6.6\r\n"
    b"\r\n"
)
FORGED = [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-proto", "https")]


@pytest.fixture
def host(app_dir: Path) -> Iterator[Server]:
    (app_dir / "who.py").write_text("print(request.remote_addr, request.scheme)\n")
    server = Server(app_dir).start()
    yield server
    server.stop()


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def h2_get(sock: socket.socket, conn: h2.connection.H2Connection, stream: int) -> tuple[int, bytes]:
    """Send a GET for /who.py with forged forwarded headers on ``stream``; its status and body."""
    conn.send_headers(
        stream,
        [
            (":method", "GET"),
            (":path", "/who.py"),
            (":scheme", "http"),
            (":authority", "example.test"),
            *FORGED,
        ],
        end_stream=True,
    )
    sock.sendall(conn.data_to_send())
    return h2_response(sock, conn, stream)


def h2_response(
    sock: socket.socket, conn: h2.connection.H2Connection, stream: int, early: bytes = b""
) -> tuple[int, bytes]:
    """The status and body of ``stream``'s response; ``early`` is what was read already
    (after a 101, the answer to the upgraded request may have come with it)."""
    status, body = 0, b""
    while True:
        data, early = early or sock.recv(65536), b""
        assert data, "the host closed the connection before answering"
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream:
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived) and event.stream_id == stream:
                body += event.data
                conn.acknowledge_received_data(event.flow_controlled_length, stream)
            elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream:
                sock.sendall(conn.data_to_send())
                return status, body
        sock.sendall(conn.data_to_send())


def test_prior_knowledge_h2c_with_forged_headers_is_refused(host: Server) -> None:
    with socket.create_connection(("127.0.0.1", host.port), timeout=15) as sock:
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        status, body = h2_get(sock, conn, 1)
    assert status == 400
    assert b"h2c" in body and b"6.6.6.6" not in body


def test_an_h2c_upgrade_straight_to_the_host_serves_nothing_inside(host: Server) -> None:
    with socket.create_connection(("127.0.0.1", host.port), timeout=15) as sock:
        sock.sendall(UPGRADE_REQUEST)
        head = read_head(sock)
        if head.startswith(b"HTTP/1.1 101"):
            # Hypercorn switches before the application sees the request; whatever
            # arrives inside the tunnel is refused, the upgraded request included.
            config = h2.config.H2Configuration(client_side=True)
            conn = h2.connection.H2Connection(config)
            conn.initiate_upgrade_connection()
            sock.sendall(conn.data_to_send())
            early = head.split(b"\r\n\r\n", 1)[1]  # the answer may be in it already
            assert h2_response(sock, conn, 1, early)[0] == 400
            assert h2_get(sock, conn, 3)[0] == 400
        else:
            assert head.startswith(b"HTTP/1.1 4")


@pytest.mark.parametrize("config", ["Caddyfile", "deploy/Caddyfile.cluster"])
@pytest.mark.parametrize(
    "upgrade",
    [
        b"Upgrade: h2c\r\n",
        # Two header lines: a matcher reading only the one that says websocket let
        # this through (red team), and Caddy then tunnelled h2c.
        b"Upgrade: h2c\r\nUpgrade: websocket\r\n",
        b"Upgrade: websocket\r\nUpgrade: h2c\r\n",
        b"Upgrade: h2c, websocket\r\n",
    ],
)
def test_caddy_refuses_upgrades_other_than_websocket(
    host: Server, tmp_path: Path, config: str, upgrade: bytes
) -> None:
    env = {"REALTIME_UPSTREAM_2": f"127.0.0.1:{host.port}"}
    caddy, port = start_caddy(host.port, tmp_path / "caddy.log", config=config, extra_env=env)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(UPGRADE_REQUEST.replace(b"Upgrade: h2c\r\n", upgrade))
            head = read_head(sock)
        assert head.startswith(b"HTTP/1.1 400"), head[:200]
        assert b"Only WebSocket upgrades" in head or b"Content-Length" in head
    finally:
        caddy.terminate()
        caddy.wait(10)
