"""The fan-out engine under real Hypercorn: the fast path, compression, slow clients."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart
from websockets.asyncio.client import connect

from realtime import create_app, get_host
from realtime_broker import Publication
from realtime_hub import Hub, get_hub

from ..conftest import Server, free_port


async def settle(condition: object, limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


@asynccontextmanager
async def hypercorn(app: Quart, tls: tuple[Path, Path] | None = None) -> AsyncIterator[int]:
    """Serve ``app`` with Hypercorn in this test's own loop, so its pool can be inspected
    (over TLS with ``tls``, a certificate and key file)."""
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    if tls is not None:
        config.certfile, config.keyfile = (str(path) for path in tls)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    scheme = "https" if tls else "http"
    async with httpx.AsyncClient(verify=False) as http:
        for _ in range(200):
            try:
                await http.get(f"{scheme}://127.0.0.1:{port}/")
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.02)
    try:
        yield port
    finally:
        stop.set()
        await task


@pytest.fixture
async def served(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    app = create_app(tmp_path, settings=getattr(request, "param", {}))
    async with hypercorn(app) as port:
        yield app, port


def hub_of(app: Quart) -> Hub:
    return get_hub(get_host(app))


def publish(hub: Hub, data: str | bytes) -> int:
    return hub.publish("default", Publication(data))


async def test_fast_path_attaches_to_hypercorn_and_declines_compression(
    served: tuple[Quart, int],
) -> None:
    app, port = served
    # The websockets client offers permessage-deflate, as browsers do.
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        assert ws.response is not None
        assert "Sec-WebSocket-Extensions" not in ws.response.headers
        pool = hub_of(app)
        await settle(lambda: len(pool) == 1)
        client = next(iter(pool))
        assert client.wire is not None
        assert publish(pool, "héllo") == 1
        assert publish(pool, b"\x00\xff" * 40_000) == 1  # 64-bit length frame
        assert await ws.recv() == "héllo"
        assert await ws.recv() == b"\x00\xff" * 40_000


@pytest.mark.parametrize("served", [{"compression": True}], indirect=True)
async def test_with_compression_on_it_is_negotiated_and_each_client_encodes_its_own(
    served: tuple[Quart, int],
) -> None:
    app, port = served
    async with (
        connect(f"ws://127.0.0.1:{port}/ws") as deflating,
        connect(f"ws://127.0.0.1:{port}/ws", compression=None) as plain,
    ):
        assert deflating.response is not None
        assert "permessage-deflate" in deflating.response.headers["Sec-WebSocket-Extensions"]
        pool = hub_of(app)
        await settle(lambda: len(pool) == 2)
        wires = sorted(client.wire is not None for client in pool)
        assert wires == [False, True]  # only the one without an offer shares frames
        text = "compressible " * 2000
        assert publish(pool, text) == 2
        assert await deflating.recv() == text
        assert await plain.recv() == text


def stalled_client(port: int, rcvbuf: int | None = 4096) -> socket.socket:
    """A WebSocket client that completes the handshake and then does not read."""
    sock = socket.create_connection(("127.0.0.1", port))
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    return handshake(sock, port)


S = TypeVar("S", bound=socket.socket)


def handshake(sock: S, port: int) -> S:
    """The WebSocket upgrade of ``/ws``, by hand, on a connected socket."""
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    assert b" 101 " in sock.recv(1024)
    return sock


def send_buffer_max() -> int:
    """The most a socket's send buffer grows to here (``tcp_wmem``'s maximum)."""
    return int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])


def read_texts(sock: socket.socket, count: int) -> list[str]:
    """``count`` unmasked text frames from the server."""
    sock.settimeout(10)
    buffer = b""
    texts: list[str] = []
    while len(texts) < count:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
        while len(buffer) >= 2:
            assert buffer[0] == 0x81, buffer[:2]  # FIN + text: no frame cut into another
            length, start = buffer[1], 2
            if length == 126:
                if len(buffer) < 4:
                    break
                length, start = int.from_bytes(buffer[2:4], "big"), 4
            if len(buffer) < start + length:
                break
            texts.append(buffer[start : start + length].decode())
            buffer = buffer[start + length :]
    return texts


@pytest.mark.parametrize("served", [{"client_buffer": 64 * 1024 * 1024}], indirect=True)
async def test_a_client_that_falls_behind_gets_every_frame_whole_and_in_order(
    served: tuple[Quart, int],
) -> None:
    """A fan-out writes to a keeping-up client's socket directly. Once the socket takes
    only part of a frame, the transport holds the rest and the client leaves the direct
    path, its next messages queued behind: no byte overtakes another. Caught up, it is
    written to directly again."""
    app, port = served
    pool = hub_of(app)
    sock = await asyncio.to_thread(stalled_client, port, None)  # blocks; the server is here
    try:
        await settle(lambda: len(pool) == 1)
        (client,) = pool
        assert client.direct is not None
        # Twice what the kernel's send buffer may grow to, then as much again.
        burst = 2 * send_buffer_max() // 4000
        sent = [f"{i:05d}" + "y" * 4000 for i in range(2 * burst)]
        for text in sent[:burst]:
            assert publish(pool, text) == 1
        assert client.direct is None and client.queue  # the socket could not take it all
        reader = asyncio.create_task(asyncio.to_thread(read_texts, sock, len(sent)))
        for start in range(burst, 2 * burst, 50):  # more while it catches up
            for text in sent[start : start + 50]:
                assert publish(pool, text) == 1
            await asyncio.sleep(0.002)
        assert await reader == sent
        await settle(lambda: client.direct is not None)
        assert publish(pool, "after") == 1
        assert await asyncio.to_thread(read_texts, sock, 1) == ["after"]
    finally:
        sock.close()


async def test_each_way_a_direct_send_falls_short_leaves_the_stream_whole(
    served: tuple[Quart, int],
) -> None:
    """The socket takes half a frame, nothing (EAGAIN), or fails: each time the
    transport takes the rest, in order, and the client stays on the direct path."""
    app, port = served
    pool = hub_of(app)
    async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
        await settle(lambda: len(pool) == 1)
        (client,) = pool
        wire = client.wire
        assert wire is not None and wire.sends_itself
        real = wire.send_now
        outcomes = iter(["half", "nothing", "error"])

        def short(frame: bytes) -> int:
            outcome = next(outcomes, None)
            if outcome == "half":
                return real(frame[: len(frame) // 2])
            if outcome == "nothing":
                raise BlockingIOError
            if outcome == "error":
                raise ConnectionResetError  # the transport's own send then goes through
            return real(frame)

        wire.send_now = short
        pool._refresh(client)
        sent = [f"{i}:" + "z" * 300 for i in range(6)]
        for text in sent:
            assert publish(pool, text) == 1
        assert [await asyncio.wait_for(ws.recv(), 5) for _ in sent] == sent
        assert client.direct is short


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def test_over_tls_a_client_that_never_sends_gets_everything(tmp_path: Path) -> None:
    """Taken over under TLS too, where the transport's own write stands in for the
    socket's send: a subscriber that only listens gets every message, at once."""
    app = create_app(tmp_path)
    async with (
        hypercorn(app, tls=self_signed(tmp_path)) as port,
        connect(f"wss://127.0.0.1:{port}/ws", ssl=trusting()) as ws,
    ):
        pool = hub_of(app)
        await settle(lambda: len(pool) == 1)
        (client,) = pool
        assert client.wire is not None and not client.wire.sends_itself
        sent = [f"m{i}:" + "t" * 2000 for i in range(300)]
        for text in sent:
            assert publish(pool, text) == 1
        assert [await asyncio.wait_for(ws.recv(), 5) for _ in sent] == sent


def trusting() -> ssl.SSLContext:
    """A client context that takes the test's self-signed certificate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def stalled_tls_client(port: int) -> ssl.SSLSocket:
    """A WebSocket client over TLS that completes the handshake and then does not read."""
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", port))
    return handshake(trusting().wrap_socket(raw), port)


async def test_over_tls_a_stalled_client_holds_no_more_than_its_buffer(tmp_path: Path) -> None:
    """Where the transport's write stands in for the socket's send, the transport
    still holds at most a chunk before messages go to the backlog, where the
    client's buffer bounds them."""
    app = create_app(tmp_path, settings={"overflow_policy": "drop-oldest"})
    async with hypercorn(app, tls=self_signed(tmp_path)) as port:
        sock = await asyncio.to_thread(stalled_tls_client, port)
        try:
            pool = hub_of(app)
            await settle(lambda: len(pool) == 1)
            (client,) = pool
            assert client.wire is not None
            text = "s" * 6000
            for _ in range(1500):  # 9 MB: past the kernel's buffers and the client's
                publish(pool, text)
                await asyncio.sleep(0)
            held = client.wire.transport.get_write_buffer_size() + client.queued_bytes
            assert client.queue and held <= pool.max_buffer + 2 * len(text)
        finally:
            sock.close()


@pytest.mark.parametrize("policy", ["close", "drop-oldest"])
@pytest.mark.parametrize("mode", [(), ("--no-fast-path",)], ids=["fast-path", "plain"])
async def test_clients_that_stop_reading_hold_nobody_back(
    app_dir: Path, policy: str, mode: tuple[str, ...]
) -> None:
    srv = Server(app_dir, "--client-buffer", "65536", "--overflow-policy", policy, *mode).start()
    stalled = [stalled_client(srv.port) for _ in range(3)]
    try:
        async with connect(srv.ws_url) as healthy, httpx.AsyncClient() as http:
            message = "x" * 6000
            sent = [f"{i:04d}{message}" for i in range(1500)]  # 9 MB: past every buffer
            received: list[str | bytes] = []

            async def read() -> None:
                while len(received) < len(sent):
                    received.append(await healthy.recv())

            reader = asyncio.create_task(read())
            for text in sent:
                response = await http.post(f"{srv.url}/send.py", data={"message": text})
                assert response.status_code == 200
            await asyncio.wait_for(reader, 30)
            assert received == sent  # nothing lost, nothing reordered
            final = await http.get(f"{srv.url}/send.py", params={"message": "last"})
            if policy == "close":
                # The stalled clients were disconnected; only the healthy one is left.
                assert final.text.strip() == "Sent to 1 client."
            else:
                assert final.text.strip() == "Sent to 4 clients."
        assert "buffer overflowed" in srv.log
    finally:
        for sock in stalled:
            sock.close()
        srv.stop()


async def test_two_hosts_in_one_process_share_no_hub(tmp_path: Path) -> None:
    first, second = create_app(tmp_path), create_app(tmp_path)
    async with hypercorn(first) as port_one, hypercorn(second) as port_two:
        pool_one, pool_two = hub_of(first), hub_of(second)
        assert pool_one is not pool_two
        async with connect(f"ws://127.0.0.1:{port_one}/ws") as ws:
            await settle(lambda: len(pool_one) == 1)
            assert len(pool_two) == 0
            assert publish(pool_two, "only second") == 0
            assert publish(pool_one, "only first") == 1
            assert await ws.recv() == "only first"
        assert port_one != port_two
