"""A WebSocket over a bare socket, against a real server: handshake, control frames, failures.

With the fast path on, the hub takes the socket over from Hypercorn after the handshake
and reads it itself (:mod:`realtime_hub.fastpath`); with ``--no-fast-path`` Hypercorn
and wsproto keep reading it. Both must behave the same to a client, so the client here
is hand-written (asyncio streams, its own handshake and framing) to send what a
well-behaved library never would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..conftest import FAN_OUT_MODES, Server
from ..unit.test_frames import frame

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
#: How long anything the server should do at once may take on a loaded machine.
TIMEOUT = 5.0


class Closed(Exception):
    """The server ended the TCP connection (EOF or reset) where a frame was expected."""


class RawClient:
    """A client WebSocket on asyncio streams that sends exactly what it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.status = 0
        self.headers: dict[str, str] = {}
        self.key = ""  # the handshake's Sec-WebSocket-Key
        #: Server pings answered so far.
        self.pings = 0

    @classmethod
    async def open(cls, port: int, path: str = "/ws") -> RawClient:
        """Connect and send the handshake; ``status`` and ``headers`` are the response's."""
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), TIMEOUT)
        client = cls(reader, writer)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        except BaseException:
            await client.aclose()
            raise
        status_line, *lines = head.decode("latin-1").split("\r\n")
        client.status = int(status_line.split()[1])
        for line in lines:
            name, sep, value = line.partition(":")
            if sep:
                client.headers[name.strip().lower()] = value.strip()
        client.key = key
        return client

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send(self, opcode: int, payload: bytes = b"", *, fin: bool = True) -> None:
        await self.write(frame(opcode, payload, fin=fin))

    async def recv(self, timeout: float = TIMEOUT, answer_pings: bool = True) -> tuple[int, bytes]:
        """The server's next frame (answering its pings on the way unless told not to)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    first, second = await self.reader.readexactly(2)
                    length = second & 0x7F
                    if length == 126:
                        (length,) = struct.unpack("!H", await self.reader.readexactly(2))
                    elif length == 127:
                        (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
                    payload = await self.reader.readexactly(length)
                except (asyncio.IncompleteReadError, ConnectionError) as exc:
                    raise Closed from exc
                assert not second & 0x80, "a server frame must not be masked"
                assert not first & 0x70, "no extension was negotiated: RSV bits must be clear"
                assert first & 0x80, "the server sends no fragments"
                opcode = first & 0x0F
                if opcode == PING and answer_pings:
                    self.pings += 1
                    await self.send(PONG, payload)
                    continue
                return opcode, payload

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Read frames until the server's close frame: its code (1005 for none).

        ``None`` if the server ended TCP without sending one.
        """
        async with asyncio.timeout(timeout):
            while True:
                try:
                    opcode, payload = await self.recv(answer_pings=False)
                except Closed:
                    return None
                if opcode == CLOSE:
                    if not payload:
                        return 1005
                    code: int = struct.unpack("!H", payload[:2])[0]
                    payload[2:].decode()  # the reason, if any, is UTF-8
                    return code

    async def ended(self, timeout: float = TIMEOUT) -> bool:
        """True once the server ended TCP (EOF or reset) within ``timeout``; False if not."""
        try:
            async with asyncio.timeout(timeout):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except ConnectionError:
            pass
        return True

    async def text(self, expected: str, timeout: float = TIMEOUT) -> None:
        """Read until a text frame with ``expected`` arrives; only text frames may come."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, payload = await self.recv()
                assert opcode == TEXT, (opcode, payload)
                if payload.decode() == expected:
                    return

    async def aclose(self) -> None:
        self.writer.close()
        with suppress(OSError):
            await self.writer.wait_closed()


@asynccontextmanager
async def raw_client(port: int, path: str = "/ws") -> AsyncIterator[RawClient]:
    client = await RawClient.open(port, path)
    try:
        yield client
    finally:
        await client.aclose()


async def broadcast(server: Server, message: str) -> str:
    """Publish through the drop-in script; its answer ("Sent to N clients.")."""
    async with httpx.AsyncClient(timeout=TIMEOUT) as http:
        response = await http.get(f"{server.url}/send.py", params={"message": message})
    assert response.status_code == 200, response.text
    return response.text.strip()


async def still_served(server: Server, ws: ClientConnection) -> None:
    """A broadcast made now reaches a healthy client."""
    message = f"still here {time.monotonic_ns()}"
    await broadcast(server, message)
    async with asyncio.timeout(TIMEOUT):
        while await ws.recv() != message:
            pass


def fast_path(server: Server) -> bool:
    return "--no-fast-path" not in server.args


@asynccontextmanager
async def running(app_dir: Path, *args: str) -> AsyncIterator[Server]:
    server = Server(app_dir, *args)
    try:
        await asyncio.to_thread(server.start)
        yield server
    finally:
        await asyncio.to_thread(server.stop)


modes = pytest.mark.parametrize("mode", list(FAN_OUT_MODES.values()), ids=list(FAN_OUT_MODES))


# A well-formed session ----------------------------------------------------------


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept a server must answer ``key`` with."""
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def test_accept_key_matches_the_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_the_handshake_answer_has_the_right_accept_key(server: Server) -> None:
    async with raw_client(server.port) as client:
        assert client.status == 101
        assert client.headers["sec-websocket-accept"] == accept_key(client.key)
        assert client.headers["upgrade"].lower() == "websocket"
        assert "upgrade" in client.headers["connection"].lower()
        assert "sec-websocket-extensions" not in client.headers  # none offered, none taken
        # And it is open: a broadcast arrives as a text frame.
        await broadcast(server, "after the handshake")
        await client.text("after the handshake")


async def test_a_ping_gets_a_pong_with_its_payload(server: Server) -> None:
    async with raw_client(server.port) as client:
        for payload in (b"", b"hello", bytes(range(125))):
            await client.send(PING, payload)
            assert await client.recv() == (PONG, payload)


async def test_a_client_close_is_echoed_and_the_server_ends_tcp(server: Server) -> None:
    async with raw_client(server.port) as client:
        await client.send(CLOSE, struct.pack("!H", 1000) + b"bye")
        assert await client.close_code() == 1000
        assert await client.ended(), "the server kept TCP open after the close handshake"
    # Gone from the hub as well: the next broadcast reaches nobody.
    deadline = time.monotonic() + TIMEOUT
    while await broadcast(server, "anyone?") != "Sent to 0 clients.":
        assert time.monotonic() < deadline, "the closed client was never removed"
        await asyncio.sleep(0.05)


async def test_a_close_without_a_code_is_answered_without_one(server: Server) -> None:
    async with raw_client(server.port) as client:
        await client.send(CLOSE)
        assert await client.close_code() == 1005  # an empty close frame back
        assert await client.ended()


async def test_a_fragmented_message_with_a_ping_between_is_accepted(server: Server) -> None:
    encoded = "frag é mented".encode()
    cut = encoded.index(b"\xc3") + 1  # inside the é
    async with raw_client(server.port) as client:
        await client.send(TEXT, encoded[:cut], fin=False)
        await client.send(PING, b"between")
        await client.send(CONTINUATION, encoded[cut:-3], fin=False)
        await client.send(CONTINUATION, encoded[-3:])
        assert await client.recv() == (PONG, b"between")
        await client.send(BINARY, b"\xff" * 10, fin=False)
        await client.send(CONTINUATION, b"\x00" * 10)
        await broadcast(server, "still open")
        await client.text("still open")


# Clients that break the protocol ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (frame(TEXT, b"hi", masked=False), 1002),
        (frame(TEXT, "ok é".encode()[:-1] + b"\xff"), 1007),
        (frame(TEXT, b"x", fin=False) + frame(CONTINUATION, b"\xc3\x28"), 1007),
        (frame(0x3, b"?"), 1002),
        (frame(CONTINUATION, b"orphan"), 1002),
        (frame(PING, b"p" * 126), 1002),
        (frame(CLOSE, struct.pack("!H", 1005)), 1002),
    ],
    ids=[
        "unmasked",
        "invalid-utf8",
        "invalid-utf8-fragmented",
        "unknown-opcode",
        "orphan-continuation",
        "long-ping",
        "bad-close-code",
    ],
)
async def test_a_protocol_error_closes_only_that_client(
    server: Server, data: bytes, code: int
) -> None:
    async with connect(server.ws_url) as healthy, raw_client(server.port) as client:
        assert client.status == 101
        await still_served(server, healthy)
        await client.write(data)
        received = await client.close_code()
        if fast_path(server):
            assert received == code
        else:
            # Hypercorn drops a connection wsproto fails to parse without a close frame
            # (wsproto leaves it OPEN, so Hypercorn sends no reply): EOF, never a wrong code.
            assert received in (code, None)
        assert await client.ended(), "the server kept TCP open after the failure"
        await still_served(server, healthy)
        assert healthy.close_code is None


@modes
async def test_an_oversized_frame_is_refused_on_its_header(
    app_dir: Path, mode: tuple[str, ...]
) -> None:
    async with (
        running(app_dir, "--max-incoming-size", "1024", *mode) as server,
        connect(server.ws_url) as healthy,
        raw_client(server.port) as client,
    ):
        await still_served(server, healthy)
        await client.write(frame(BINARY, length=1 << 20))  # 1 MiB announced, nothing of it sent
        if not fast_path(server):
            # wsproto hands Hypercorn's guard no event for a bare header: it counts the
            # payload as it arrives, so a little more than the limit has to come.
            await client.write(b"x" * 1500)
        assert await client.close_code() == 1009
        assert await client.ended(), "the server kept TCP open after refusing the frame"
        await still_served(server, healthy)
    assert "closed with 1009" in server.log


@modes
async def test_a_message_at_the_size_limit_is_accepted(
    app_dir: Path, mode: tuple[str, ...]
) -> None:
    async with (
        running(app_dir, "--max-incoming-size", "1024", *mode) as server,
        raw_client(server.port) as client,
    ):
        await client.send(TEXT, b"x" * 1000, fin=False)
        await client.send(CONTINUATION, "é".encode() * 12)
        await broadcast(server, "within the limit")
        await client.text("within the limit")


# Takeover only: keepalive and the connection count ------------------------------


async def pump(client: RawClient, seconds: float) -> None:
    """Read (and answer pings) for ``seconds``; fails if the server drops the client."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        with suppress(TimeoutError):
            opcode, payload = await client.recv(timeout=left)
            assert opcode == TEXT, (opcode, payload)


async def test_keepalive_keeps_a_client_that_answers_and_drops_a_silent_one(
    app_dir: Path,
) -> None:
    async with (
        running(app_dir, "--ping-interval", "1", "--pong-timeout", "1") as server,
        raw_client(server.port) as answering,
        raw_client(server.port) as silent,
    ):
        assert answering.status == silent.status == 101
        assert await broadcast(server, "both here") == "Sent to 2 clients."
        try:
            await pump(answering, 4.0)
        except Closed:
            pytest.fail("a client answering every ping was dropped")
        assert answering.pings >= 2, f"{answering.pings} ping(s) in 4 s at 1 s intervals"
        # The silent client never read a byte: gone, its pings unanswered.
        assert await broadcast(server, "who is left") == "Sent to 1 client."
        assert await silent.ended(timeout=2.0), "the silent client still has its socket"
        await answering.text("who is left")


async def test_a_silent_client_is_dropped_within_a_few_seconds(app_dir: Path) -> None:
    async with (
        running(app_dir, "--ping-interval", "1", "--pong-timeout", "1") as server,
        raw_client(server.port) as silent,
    ):
        assert silent.status == 101
        started = time.monotonic()
        while await broadcast(server, "anyone?") != "Sent to 0 clients.":
            assert time.monotonic() - started < 5.0, "the silent client was never dropped"
            await asyncio.sleep(0.1)
        # Pinged within 1 s, dropped 1 s after that: about 2 s when the machine is idle.
        assert await silent.ended(timeout=2.0)


async def accepted_within(port: int, seconds: float) -> RawClient:
    """A connection accepted (101) within ``seconds``, refusals retried meanwhile."""
    deadline = time.monotonic() + seconds
    while True:
        client = await RawClient.open(port)
        if client.status == 101:
            return client
        await client.aclose()
        assert client.status == 429, client.status
        assert time.monotonic() < deadline, "the connection's place was never released"
        await asyncio.sleep(0.1)


async def refused(port: int) -> bool:
    """True if a handshake made now is refused with 429 and no upgrade."""
    async with raw_client(port) as client:
        if client.status == 101:
            return False
        assert client.status == 429, client.status
        assert "sec-websocket-accept" not in client.headers
        return True


async def test_the_per_address_limit_counts_taken_over_sockets_until_they_end(
    app_dir: Path,
) -> None:
    held: list[RawClient] = []
    async with running(app_dir, "--max-connections-per-ip", "3") as server:
        try:
            held.extend([await RawClient.open(server.port) for _ in range(3)])
            assert [client.status for client in held] == [101, 101, 101]
            await asyncio.sleep(0.5)  # their ASGI calls have returned: only the takeover holds
            assert await broadcast(server, "three") == "Sent to 3 clients."
            assert await refused(server.port)

            # One leaves with the close handshake: its place is free once TCP has ended.
            leaving = held.pop(0)
            await leaving.send(CLOSE, struct.pack("!H", 1000))
            assert await leaving.close_code() == 1000
            assert await leaving.ended()
            await leaving.aclose()
            held.append(await RawClient.open(server.port))
            assert held[-1].status == 101
            assert await refused(server.port)  # and the count is back at the limit

            # One is failed for a protocol error: released once the server drops it.
            failing = held.pop(0)
            await failing.write(frame(TEXT, b"x", masked=False))
            assert await failing.close_code() == 1002
            assert await failing.ended()
            await failing.aclose()
            held.append(await accepted_within(server.port, TIMEOUT))
            assert await refused(server.port)

            # One just hangs up, no close frame: released once the server sees the EOF.
            await held.pop(0).aclose()
            held.append(await accepted_within(server.port, TIMEOUT))
            assert await refused(server.port)

            assert await broadcast(server, "still three") == "Sent to 3 clients."
            for client in held:
                await client.text("still three")
        finally:
            for client in held:
                await client.aclose()
    assert "too many connections from 127.0.0.1 (limit 3)" in server.log


# How a connection ends ----------------------------------------------------------


async def test_a_client_that_half_closes_is_disconnected(server: Server) -> None:
    async with raw_client(server.port) as client:
        assert await broadcast(server, "one") == "Sent to 1 client."
        client.writer.write_eof()  # a FIN, no close frame
        assert await client.ended(), "the server kept TCP open after the client's FIN"
    deadline = time.monotonic() + TIMEOUT
    while await broadcast(server, "anyone?") != "Sent to 0 clients.":
        assert time.monotonic() < deadline, "the half-closed client was never removed"
        await asyncio.sleep(0.05)
