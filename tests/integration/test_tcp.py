"""Hypercorn's connection with fewer tasks (host/realtime/tcp.py): the same timeouts.

Against a real ``realtime run``: an idle connection is closed after Hypercorn's
keep-alive timeout (5 s), before and after a request; idle connections do not hold
up a stop; a request body that stops coming is cut at the read timeout.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import hypercorn.asyncio.run as hypercorn_run
import pytest

from realtime import tcp

from ..conftest import Server

#: Hypercorn's default keep_alive_timeout, which realtime leaves as it is.
KEEP_ALIVE = 5.0


def closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the server closed ``sock`` (reading and dropping what it sent)."""
    with sock:
        sock.settimeout(limit)
        began = time.monotonic()
        while sock.recv(65536):
            pass
        return time.monotonic() - began


def test_install_swaps_hypercorns_class_and_leaves_another_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(hypercorn_run, "TCPServer", tcp.HYPERCORN_TCP_SERVER)
    assert tcp.install() is True
    assert hypercorn_run.TCPServer is tcp.TCPServer
    assert tcp.install() is True  # twice: the same

    class Other:
        pass

    monkeypatch.setattr(hypercorn_run, "TCPServer", Other)
    assert tcp.install() is False
    assert hypercorn_run.TCPServer is Other


async def test_idle_connections_close_after_the_keep_alive_timeout(app_dir: Path) -> None:
    server = Server(app_dir).start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.port))
        after_request = socket.create_connection(("127.0.0.1", server.port))
        after_request.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        took = await asyncio.gather(
            asyncio.to_thread(closed_after, silent, KEEP_ALIVE + 5),
            asyncio.to_thread(closed_after, after_request, KEEP_ALIVE + 5),
        )
        for seconds in took:
            assert KEEP_ALIVE - 0.5 < seconds < KEEP_ALIVE + 2, took
    finally:
        server.stop()


def test_idle_connections_do_not_hold_up_a_stop(app_dir: Path) -> None:
    server = Server(app_dir).start()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(3)]
    time.sleep(0.3)
    began = time.monotonic()
    server.stop()
    assert time.monotonic() - began < 3.0
    for sock in idle:
        assert closed_after(sock, 2.0) < 2.0


def test_a_request_body_that_stops_coming_is_cut_at_the_read_timeout(app_dir: Path) -> None:
    # --ping-interval 1 --pong-timeout 1 and --script-timeout 1: a read timeout of 2 s.
    server = Server(
        app_dir, "--ping-interval", "1", "--pong-timeout", "1", "--script-timeout", "1"
    ).start()
    try:
        sock = socket.create_connection(("127.0.0.1", server.port))
        sock.sendall(b"POST /send.py HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nhalf")
        seconds = closed_after(sock, 10)
        assert 1.5 < seconds < 4.5, seconds
    finally:
        server.stop()
