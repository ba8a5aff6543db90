"""What a client may send: message size, frame rate, compressed size, under real Hypercorn.

The attackers talk raw sockets (the ``websockets`` library will not misbehave on
request); a healthy ``websockets`` client is connected meanwhile and must keep getting
broadcasts. Server memory is read from ``/proc/<pid>/status``.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import socket
import struct
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..conftest import FAN_OUT_MODES, Server, free_port

CONTINUATION, TEXT, BINARY, CLOSE, PING = 0x0, 0x1, 0x2, 0x8, 0x9
MiB = 1 << 20
#: How much server memory an attack may add (peak RSS over RSS before it). Without the
#: guard each of these attacks took hundreds of MB within a second or two.
RSS_ALLOWANCE = 30 * MiB
#: More than socket buffers hold on loopback (a few MiB each way): the server read it.
STOPPED_READING = 64 * MiB
#: A broadcast must reach the healthy client this fast, even on a loaded 2-core machine.
PROMPT = 3.0


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False) -> bytes:
    """A client frame: masked, as RFC 6455 requires, with an all-zero key (so, cheaply)."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    return header + b"\x00\x00\x00\x00" + payload


class RawClient:
    """A WebSocket client on a bare socket that sends what it is told, and reads frames."""

    def __init__(self, port: int, *, deflate: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.settimeout(0.5)
        key = base64.b64encode(os.urandom(16)).decode()
        offer = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
            ).encode()
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.sock.recv(4096)
            assert chunk, "the server hung up during the handshake"
            data += chunk
        head, _, self.buffer = data.partition(b"\r\n\r\n")
        self.head = head.decode("latin1").lower()
        assert self.head.startswith("http/1.1 101"), self.head

    def stream(self, chunk: bytes, seconds: float) -> tuple[int, bool]:
        """Send ``chunk`` over and over for up to ``seconds``.

        Returns the bytes sent and whether the server dropped the connection.
        """
        sent = 0
        view = memoryview(chunk)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                sent += self.sock.send(view[sent % len(chunk) :])  # whole frames, in order
            except TimeoutError:
                continue  # the server is not reading (yet); go on until the deadline
            except OSError:
                return sent, True
        return sent, False

    def close_code(self, seconds: float) -> int | None:
        """Read frames until the server's close frame: its code, or ``None`` if it just hung up.

        Raises ``TimeoutError`` when neither happens within ``seconds``.
        """
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            parsed = self._parse()
            if parsed is not None:
                opcode, payload = parsed
                if opcode == CLOSE:
                    code: int = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    return code
                continue
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        raise TimeoutError(f"no close frame and no hang-up within {seconds} s")

    def _parse(self) -> tuple[int, bytes] | None:
        buffer = self.buffer
        if len(buffer) < 2:
            return None
        opcode, length = buffer[0] & 0x0F, buffer[1] & 0x7F
        offset = 2
        if length == 126:
            if len(buffer) < 4:
                return None
            (length,) = struct.unpack("!H", buffer[2:4])
            offset = 4
        elif length == 127:
            if len(buffer) < 10:
                return None
            (length,) = struct.unpack("!Q", buffer[2:10])
            offset = 10
        if len(buffer) < offset + length:
            return None
        self.buffer = buffer[offset + length :]
        return opcode, buffer[offset : offset + length]

    def close(self) -> None:
        self.sock.close()


def memory(pid: int) -> dict[str, int]:
    """The ``Vm*`` lines of ``/proc/<pid>/status``, in bytes."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name.startswith("Vm"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def reset_peak(pid: int) -> None:
    """Reset the peak RSS (VmHWM) to the current RSS, so VmHWM is this test's peak."""
    with suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def server_pid(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


async def broadcast_latency(server: Server, ws: ClientConnection) -> float:
    """Seconds a broadcast made now takes to reach ``ws`` (``inf`` past :data:`PROMPT`)."""
    text = f"x{time.monotonic_ns()}"
    start = time.monotonic()
    try:
        async with asyncio.timeout(PROMPT), httpx.AsyncClient() as http:
            response = await http.get(f"{server.url}/send.py", params={"message": text})
            assert response.status_code == 200
            while await ws.recv() != text:
                pass
    except TimeoutError:
        return math.inf
    return time.monotonic() - start


@dataclass
class Attack:
    sent: int  # bytes the attacker got out
    dropped: bool  # the server hung up on it
    code: int | None  # the close code it got (None: hung up without one; -1: neither)
    growth: int  # the server's peak RSS over its RSS before, bytes
    latencies: list[float]  # a healthy client's broadcasts: before, during, after

    def check(self, code: int | None) -> None:
        """Refused with ``code``, dropped, memory bounded, the healthy client served."""
        assert self.dropped, (
            f"still connected after sending {self.sent / MiB:.0f} MiB "
            f"(server memory grew {self.growth / MiB:.0f} MiB)"
        )
        assert self.code == code, f"closed with {self.code}, not {code}"
        # It stopped reading: the attacker got out only what the two kernels buffer.
        assert self.sent < STOPPED_READING, f"the server took {self.sent / MiB:.0f} MiB"
        assert self.growth < RSS_ALLOWANCE, f"server memory grew {self.growth / MiB:.0f} MiB"
        assert max(self.latencies) < PROMPT, f"healthy client's latencies: {self.latencies}"


async def attack(server: Server, attacker: RawClient, chunk: bytes, seconds: float = 3.0) -> Attack:
    """Stream ``chunk`` for up to ``seconds`` while a healthy client gets broadcasts."""
    pid = server_pid(server)
    try:
        async with connect(server.ws_url) as ws:
            latencies = [await broadcast_latency(server, ws)]  # connected, warmed up
            before = memory(pid)["VmRSS"]
            reset_peak(pid)
            streaming = asyncio.create_task(asyncio.to_thread(attacker.stream, chunk, seconds))
            closing = asyncio.create_task(asyncio.to_thread(attacker.close_code, seconds + 1))
            latencies.append(await broadcast_latency(server, ws))  # during the attack
            sent, dropped = await streaming
            with suppress(TimeoutError):
                await closing
            code = closing.result() if closing.exception() is None else -1
            growth = memory(pid)["VmHWM"] - before
            latencies.append(await broadcast_latency(server, ws))  # and after it
    finally:
        attacker.close()
    return Attack(sent, dropped, code, growth, latencies)


def one_warning(server: Server, text: str) -> None:
    """The drop was logged, once."""
    lines = [line for line in server.log.splitlines() if text in line]
    assert len(lines) == 1, server.log[-3000:]


async def test_a_message_that_never_ends_is_refused_and_its_sender_dropped(
    server: Server,
) -> None:
    attacker = RawClient(server.port)
    attacker.sock.sendall(frame(BINARY, b"x" * 16384, fin=False))
    continuation = frame(CONTINUATION, b"x" * 16384, fin=False) * 64  # 1 MiB per send
    (await attack(server, attacker, continuation)).check(1009)
    one_warning(server, "closed with 1009")


async def test_one_oversized_frame_then_streaming_is_refused_and_its_sender_dropped(
    server: Server,
) -> None:
    attacker = RawClient(server.port)
    header = frame(BINARY, b"")[:1] + struct.pack("!BQ", 0x80 | 127, 1 << 40) + b"\x00" * 4
    attacker.sock.sendall(header)  # a frame of 1 TiB, payload to follow
    (await attack(server, attacker, b"y" * MiB)).check(1009)
    one_warning(server, "closed with 1009")


async def test_a_ping_flood_is_closed_with_1008(server: Server) -> None:
    attacker = RawClient(server.port)
    pings = frame(PING, b"p" * 125) * 500
    (await attack(server, attacker, pings)).check(1008)
    one_warning(server, "closed with 1008")


@asynccontextmanager
async def running(app_dir: Path, *args: str) -> AsyncIterator[Server]:
    server = Server(app_dir, *args).start()
    try:
        yield server
    finally:
        server.stop()


modes = pytest.mark.parametrize("mode", list(FAN_OUT_MODES.values()), ids=list(FAN_OUT_MODES))


@modes
async def test_a_compressed_message_that_inflates_past_the_limit_is_refused_unexpanded(
    app_dir: Path, mode: tuple[str, ...]
) -> None:
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    bomb = deflate.compress(b"\x00" * (128 * MiB)) + deflate.flush(zlib.Z_SYNC_FLUSH)
    async with running(app_dir, "--compression", *mode) as server:
        attacker = RawClient(server.port, deflate=True)
        assert "permessage-deflate" in attacker.head
        # 127 KiB on the wire, 128 MiB inflated; sent over and over.
        bomb_frame = frame(BINARY, bomb[:-4], rsv1=True)
        (await attack(server, attacker, bomb_frame, seconds=2.5)).check(1009)
        one_warning(server, "closed with 1009")


@modes
async def test_clients_within_the_limits_are_untouched(
    app_dir: Path, mode: tuple[str, ...]
) -> None:
    async with (
        running(
            app_dir, "--compression", "--max-incoming-rate", "50",
            "--max-incoming-size", "65536", *mode,
        ) as server,
        connect(server.ws_url) as deflating,
        connect(server.ws_url, compression=None) as plain,
    ):  # fmt: skip
        assert deflating.response is not None
        assert "permessage-deflate" in deflating.response.headers["Sec-WebSocket-Extensions"]
        clients = (deflating, plain)
        for ws in clients:
            await ws.send("x" * 65536)  # exactly the limit
            await ws.send("é" * 32768)  # 65536 bytes of UTF-8
            await ws.send(os.urandom(65536))  # incompressible
            await ws.send(["a" * 1000, "b" * 1000, "c" * 1000])  # fragmented: 3 frames
            await ws.ping()
        for i in range(40):  # then 25 messages a second; 47 frames in all, under the burst
            for ws in clients:
                await ws.send(f"typing {i}")
            await asyncio.sleep(0.04)
        await asyncio.sleep(0.5)  # time to refuse them, were they refused
        for ws in clients:
            assert await broadcast_latency(server, ws) < PROMPT
            assert ws.close_code is None
    assert "closed with" not in server.log


def test_the_limits_must_make_sense(app_dir: Path) -> None:
    command = [sys.executable, "-m", "realtime", "run", "--app", str(app_dir)]
    command += ["--bind", f"127.0.0.1:{free_port()}"]
    for flag, value in (("--max-incoming-rate", "-1"), ("--max-incoming-size", "0")):
        result = subprocess.run([*command, flag, value], capture_output=True, text=True, timeout=30)
        assert result.returncode != 0
        assert flag in result.stderr + result.stdout


def test_outside_hypercorn_the_guard_stands_aside() -> None:
    from realtime_hub.fastpath import IncomingLimits, decline_compression, guard

    async def send(message: object) -> None:
        pass

    limits = IncomingLimits(1024, 10)
    assert guard(send, limits, 1) is None
    assert guard(None, limits, 1) is None
    decline_compression(send)  # nothing to decline: no error either
    with pytest.raises(ValueError, match="rate"):
        IncomingLimits(1024, -1)
