"""End to end against a real Hypercorn process, with the `websockets` library as the peer."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from ..conftest import Server


async def recv(ws: ClientConnection, timeout: float = 5.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


async def send(client: httpx.AsyncClient, server: Server, message: str) -> httpx.Response:
    return await client.get(f"{server.url}/send.py", params={"message": message})


async def test_every_client_gets_every_broadcast_in_order(server: Server) -> None:
    clients = [await connect(server.ws_url) for _ in range(5)]
    try:
        async with httpx.AsyncClient() as http:
            for i in range(30):
                response = await send(http, server, f"message {i}")
                assert response.status_code == 200
                assert response.text.strip() == "Sent to 5 clients."
        for ws in clients:
            assert [await recv(ws) for _ in range(30)] == [f"message {i}" for i in range(30)]
    finally:
        for ws in clients:
            await ws.close()


async def test_concurrent_scripts_give_every_client_the_same_order(server: Server) -> None:
    clients = [await connect(server.ws_url) for _ in range(3)]
    try:
        async with httpx.AsyncClient() as http:
            responses = await asyncio.gather(*(send(http, server, f"m{i}") for i in range(40)))
        assert all(r.status_code == 200 for r in responses)
        seen = [[await recv(ws) for _ in range(40)] for ws in clients]
        assert sorted(seen[0]) == sorted(f"m{i}" for i in range(40))
        assert seen[0] == seen[1] == seen[2]
    finally:
        for ws in clients:
            await ws.close()


async def test_posted_form_and_json_and_default_greeting(server: Server) -> None:
    async with connect(server.ws_url) as ws, httpx.AsyncClient() as http:
        assert (await http.post(f"{server.url}/send.py", data={"message": "form"})).is_success
        assert await recv(ws) == "form"
        assert (await http.post(f"{server.url}/send.py", json={"message": "json"})).is_success
        assert await recv(ws) == "json"
        assert (await http.get(f"{server.url}/send.py")).is_success
        assert await recv(ws) == "Hello from send.py!"


async def test_messages_arrive_exactly_as_sent(server: Server) -> None:
    text = 'héllo 👋 <b>&amp;</b>\n\ttabs and "quotes"' + "x" * 60_000
    async with connect(server.ws_url) as ws, httpx.AsyncClient() as http:
        assert (await http.post(f"{server.url}/send.py", data={"message": text})).is_success
        assert await recv(ws) == text


async def test_oversized_message_is_refused_and_nothing_is_sent(server: Server) -> None:
    async with connect(server.ws_url) as ws, httpx.AsyncClient() as http:
        big = "x" * (64 * 1024 + 1)
        response = await http.post(f"{server.url}/send.py", data={"message": big})
        assert response.status_code == 413
        assert "limit" in response.text
        assert (await send(http, server, "after")).is_success
        assert await recv(ws) == "after"  # the oversized one never arrived


async def test_client_that_disconnects_does_not_break_the_next_broadcast(server: Server) -> None:
    async with connect(server.ws_url) as stay, httpx.AsyncClient() as http:
        leave = await connect(server.ws_url)
        assert (await send(http, server, "one")).text.strip() == "Sent to 2 clients."
        assert await recv(stay) == "one"
        await leave.close()
        # The server reads every client, so it notices the close at once.
        probes = 0
        while (await send(http, server, "probe")).text.strip() != "Sent to 1 client.":
            probes += 1
            assert probes < 100, "the closed client was never removed"
            await asyncio.sleep(0.05)
        assert (await send(http, server, "two")).text.strip() == "Sent to 1 client."
        received = [await recv(stay) for _ in range(probes + 2)]
        assert received == ["probe"] * (probes + 1) + ["two"]


async def test_client_that_vanishes_without_close_is_dropped_by_keepalive(server: Server) -> None:
    """A peer that never answers pings (no close frame, socket left open) is removed."""
    sock = socket.create_connection(("127.0.0.1", server.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            "GET /ws HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{server.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b"101" in sock.recv(1024)
    try:
        async with httpx.AsyncClient() as http:
            assert (await send(http, server, "hi")).text.strip() == "Sent to 1 client."
            # Ping interval 1 s, pong timeout 1 s: gone within a few seconds.
            deadline = time.monotonic() + 10
            while (await send(http, server, "hi")).text.strip() != "Sent to 0 clients.":
                assert time.monotonic() < deadline, "silent client was never dropped"
                await asyncio.sleep(0.2)
    finally:
        sock.close()


async def test_binary_messages_are_binary_frames(server: Server) -> None:
    (server.app_dir / "binary.py").write_bytes(b"print(broadcast(bytes(range(256))))\n")
    async with connect(server.ws_url) as ws, httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/binary.py")
        assert response.text.strip() == "1"
        assert await recv(ws) == bytes(range(256))


async def test_raising_script_gives_500_and_the_server_keeps_serving(server: Server) -> None:
    async with connect(server.ws_url) as ws, httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/boom.py")
        assert response.status_code == 500
        assert "ValueError" in response.text
        assert "Traceback" not in response.text  # not in debug mode
        assert (await send(http, server, "still here")).is_success
        assert await recv(ws) == "still here"
    assert "script failed on purpose" in server.log  # the traceback went to the log


async def test_broadcast_with_a_wrong_type_is_a_clear_error(server: Server) -> None:
    (server.app_dir / "wrong.py").write_text(
        "try:\n    broadcast({1, 2})\nexcept TypeError as exc:\n    print(exc)\n"
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{server.url}/wrong.py")
    assert response.text.strip() == (
        "broadcast() takes str, bytes or a JSON value (dict, list, number, bool), got set"
    )


async def test_slow_script_does_not_stall_websocket_traffic(server: Server) -> None:
    (server.app_dir / "slow.py").write_text("import time\ntime.sleep(1.5)\nprint('done')\n")
    async with connect(server.ws_url) as ws, httpx.AsyncClient(timeout=10) as http:
        slow = asyncio.create_task(http.get(f"{server.url}/slow.py"))
        await asyncio.sleep(0.3)
        assert (await send(http, server, "fast")).is_success
        assert await recv(ws) == "fast"
        assert not slow.done()  # the broadcast went out while the slow script still ran
        assert (await slow).text.strip() == "done"


async def test_script_over_its_time_limit_gets_504(server: Server) -> None:
    (server.app_dir / "stuck.py").write_text("import time\ntime.sleep(4)\n")
    async with httpx.AsyncClient(timeout=10) as http:
        started = time.monotonic()
        response = await http.get(f"{server.url}/stuck.py")
        assert response.status_code == 504
        assert time.monotonic() - started < 4  # answered before the script ended
        assert (await http.get(f"{server.url}/admin/tool.py")).text.strip() == "admin tool GET"


@pytest.mark.parametrize(
    "raw_path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2E%2E%2Fpyproject.toml",
        "/admin/../../pyproject.toml",
        "//etc/passwd",
        "/%2Fetc%2Fpasswd",
        "/.secret.py",
        "/admin/.hidden.html",
        "/escape.py",
        "/escape.html",
        "/send.py%00.html",
        "/nope.py",
    ],
)
def test_paths_outside_app_or_hidden_are_404(server: Server, raw_path: str) -> None:
    root = server.app_dir.parent
    (root / "outside.py").write_text("print('EXECUTED OUTSIDE')\n")
    (root / "outside.html").write_text("SECRET OUTSIDE")
    (server.app_dir / ".secret.py").write_text("print('EXECUTED HIDDEN')\n")
    (server.app_dir / "admin" / ".hidden.html").write_text("SECRET HIDDEN")
    for link, target in (("escape.py", "outside.py"), ("escape.html", "outside.html")):
        if not (server.app_dir / link).is_symlink():
            (server.app_dir / link).symlink_to(root / target)
    status, body = raw_get(server.port, raw_path)
    assert status == 404, body
    assert b"EXECUTED" not in body and b"SECRET" not in body and b"[project]" not in body


def raw_get(port: int, raw_path: str) -> tuple[int, bytes]:
    """Send the path exactly as written: HTTP clients would normalise it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_static_files_and_nested_scripts(server: Server) -> None:
    index = httpx.get(server.url + "/")
    assert index.status_code == 200
    assert "text/html" in index.headers["content-type"]
    assert "new WebSocket" in index.text
    tool = httpx.post(server.url + "/admin/tool.py")
    assert tool.text.strip() == "admin tool POST"
    # A script's source is never served, whatever the spelling.
    for path in ("/send.py", "/SEND.PY", "/send.py/"):
        response = httpx.get(server.url + path)
        assert "broadcast(message)" not in response.text


def test_script_edit_takes_effect_without_restart(server: Server) -> None:
    script = server.app_dir / "version.py"
    script.write_text("print('v1')\n")
    assert httpx.get(server.url + "/version.py").text.strip() == "v1"
    script.write_text("print('version two')\n")
    assert httpx.get(server.url + "/version.py").text.strip() == "version two"


def test_debug_mode_shows_the_traceback(app_dir: Path) -> None:

    srv = Server(app_dir, "--debug").start()
    try:
        response = httpx.get(srv.url + "/boom.py")
        assert response.status_code == 500
        assert "Traceback" in response.text
        assert "script failed on purpose" in response.text
    finally:
        srv.stop()


async def test_ctrl_c_closes_clients_with_going_away_and_exits_0(app_dir: Path) -> None:
    srv = Server(app_dir).start()
    ws = await connect(srv.ws_url)
    assert srv.process is not None
    process = srv.process
    process.send_signal(signal.SIGINT)
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == 1001
    assert ws.close_reason == "server shutting down"
    assert await asyncio.to_thread(process.wait, 10) == 0
