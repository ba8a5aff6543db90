"""A client that pings but never reads: its pongs stay bounded and it does not live forever.

Issue 18 item 5. Every ping used to get its own pong, piling up in the kernel and
then in the transport's buffer, and any frame from the client (a ping too) counted
as an answer to the keepalive, so a client that sent pings and read nothing was kept
with its pongs growing without bound.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import time
from pathlib import Path

from realtime_hub.fastpath import IncomingLimits, Keepalive, Socket
from realtime_hub.frames import OP_PING, OP_PONG, control_frame
from realtime_hub.keepalive import SLICES

from ..unit.test_frames import _Transport, frame
from .test_takeover import running

#: How long anything the server should do at once may take on a loaded machine.
TIMEOUT = 5.0


async def test_a_paused_socket_keeps_one_pong_for_any_number_of_pings() -> None:
    """While the client takes nothing, only the latest ping is answered, once it does."""
    transport = _Transport()
    sock = Socket(transport, IncomingLimits(1000), client=1)
    sock.start(None, lambda _: None)
    sock.data_received(frame(OP_PING, b"first"))
    assert transport.written == [control_frame(OP_PONG, b"first")]  # not paused: at once
    sock.pause_writing()  # the transport holds data back: the client is not reading
    pings = b"".join(frame(OP_PING, b"%d" % i) for i in range(10_000))
    sock.data_received(pings)
    assert len(transport.written) == 1, "pongs piled up while the client took nothing"
    sock.resume_writing()
    assert transport.written[1:] == [control_frame(OP_PONG, b"9999")]  # the latest only
    sock.data_received(frame(OP_PING, b"again"))
    assert transport.written[2:] == [control_frame(OP_PONG, b"again")]


async def test_pings_from_a_socket_that_takes_nothing_are_no_answer_to_the_keepalive() -> None:
    transport = _Transport()
    transport.abort = lambda: setattr(transport, "aborted", True)  # type: ignore[attr-defined]
    sock = Socket(transport, IncomingLimits(1000), client=1)
    sock.start(None, lambda _: None)
    keepalive = Keepalive(interval=0.05, timeout=0.05)
    keepalive.sockets.add(sock)
    sock.pause_writing()
    keepalive.start()
    try:
        async with asyncio.timeout(TIMEOUT):
            while not getattr(transport, "aborted", False):
                sock.data_received(frame(OP_PING))  # busy pinging, never reading
                await asyncio.sleep(0.01)
    finally:
        keepalive.stop()
    assert keepalive.dropped == 1


def _handshake(port: int) -> socket.socket:
    """A blocking client socket with a tiny receive buffer, upgraded on ``/ws``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills fast
    sock.settimeout(TIMEOUT)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        assert chunk, "the server closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _ping_without_reading(sock: socket.socket, seconds: float) -> float | None:
    """Send 125-byte pings at 4,000 a second (within the rate limit set), never reading.

    Returns how long until the server ended the connection, or None if it never did.
    """
    ping = frame(OP_PING, b"p" * 125)
    started = time.monotonic()
    sock.settimeout(0.2)
    while (elapsed := time.monotonic() - started) < seconds:
        try:
            sock.sendall(ping * 400)
        except TimeoutError:
            pass  # the server stopped reading us: keep trying
        except OSError:
            return elapsed  # reset or closed: dropped
        time.sleep(0.1)
    return None


async def test_a_client_that_pings_and_never_reads_is_dropped(app_dir: Path) -> None:
    """Over a real socket, taken over: its pings do not keep it alive past the keepalive."""
    limits = ("--ping-interval", "1", "--pong-timeout", "1", "--max-incoming-rate", "5000")
    async with running(app_dir, *limits) as server:
        sock = await asyncio.to_thread(_handshake, server.port)
        try:
            dropped_after = await asyncio.to_thread(_ping_without_reading, sock, 30.0)
        finally:
            sock.close()
    assert dropped_after is not None, "a client that never reads was kept for 30 s"


def _pings_until_refused(sock: socket.socket, seconds: float) -> int | None:
    """Ping without reading until the server stops reading us or drops us: the bytes it
    took by then, or None if it kept taking them for ``seconds``."""
    ping = frame(OP_PING, b"p" * 125)
    sock.settimeout(1.0)
    sent = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            sent += sock.send(ping * 400)
        except TimeoutError:
            return sent  # a second and not a byte taken: the server stopped reading
        except OSError:
            return sent  # reset: dropped
        time.sleep(0.05)
    return None


async def test_with_no_fast_path_a_pinger_that_never_reads_is_cut_off(
    app_dir: Path,
) -> None:
    """Hypercorn answers pings itself and waits for each pong to drain before reading on:
    the pongs held for a client that never reads stop at its transport's high-water mark,
    and Hypercorn then drops it (or stops reading it)."""
    limits = ("--no-fast-path", "--max-incoming-rate", "5000")
    async with running(app_dir, *limits) as server:
        sock = await asyncio.to_thread(_handshake, server.port)
        try:
            taken = await asyncio.to_thread(_pings_until_refused, sock, 30.0)
        finally:
            sock.close()
    assert taken is not None, "the server kept reading (and answering) for 30 s"
    assert taken < 64 << 20, taken


async def test_the_keepalive_spreads_its_pings_over_the_interval() -> None:
    """One slice of the sockets a turn, each pinged once an interval: 15,000 pings (and
    their pongs) at once held the loop for half a second."""
    socks = []
    for client in range(200):
        sock = Socket(_Transport(), IncomingLimits(1000), client=client)
        sock.start(None, lambda _: None)
        socks.append(sock)
    keepalive = Keepalive(interval=20, timeout=20)
    keepalive.sockets.update(socks)
    pinged = []
    for _ in range(SLICES):
        keepalive._tick()  # what the timer runs, SLICES times an interval
        pinged.append(sum(sock.pinged_at is not None for sock in socks))
    keepalive.stop()
    assert pinged[0] == 200 // SLICES
    assert pinged == [200 // SLICES * turn for turn in range(1, SLICES + 1)]
