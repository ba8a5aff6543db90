"""The memory one frame of ``history`` commands costs a server (issue 18, item 2).

    python bench/history_flood.py [--commands 40] [--size 60000]

Serves the app in this process (Hypercorn, memory broker, on loopback), fills the
``chat:flood`` room with 100 publications of ``--size`` bytes, then a client that
connects and never reads again sends one frame of ``--commands`` history commands
(``limit: 100``). Prints the process's RSS growth and peak while the server works
that frame out, and how many history reads it made before giving the client up.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt
from hypercorn.asyncio import serve

from realtime import create_app, get_host
from realtime.cli import server_config
from realtime_broker import Publication, get_broker
from realtime_centrifuge.plugin import get_node
from realtime_hub.channels import DEMO_CHANNEL_TABLE

SECRET = "history-flood-secret-at-least-32-bytes"


def rss() -> tuple[int, int]:
    """This process's resident and peak resident memory, bytes."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def masked(text: str) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0xFE, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0xFF, n)
    return head + mask + body


def stalled(port: int, commands: int) -> socket.socket:
    """Connect, send the frame of history commands, then read nothing more."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.sendall(
        (
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(65536) or b"!"
    token = jwt.encode({"sub": "mallory"}, SECRET, algorithm="HS256")
    sock.sendall(masked(json.dumps({"id": 1, "connect": {"token": token}})))
    while b'"connect"' not in got:
        got += sock.recv(65536) or b"!"
    # A subscriber may read a chat room's history; then the history commands.
    lines = [json.dumps({"id": 2, "subscribe": {"channel": "chat:flood"}})]
    lines += (
        json.dumps({"id": i, "history": {"channel": "chat:flood", "limit": 100}})
        for i in range(3, commands + 3)
    )
    sock.sendall(masked("\n".join(lines)))
    return sock


async def measure(commands: int, size: int) -> None:
    settings = {"token_hmac_secret": SECRET, "channel": DEMO_CHANNEL_TABLE}  # chat:* rooms
    app = create_app(tempfile.mkdtemp(), settings=settings)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(100)
    port = listener.getsockname()[1]
    config = server_config(app)
    config.bind = [f"fd://{listener.fileno()}"]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))
    await asyncio.sleep(0.5)
    host = get_host(app)
    broker, hub = get_broker(host), get_node(host).hub
    for n in range(100):
        data = json.dumps({"n": n, "pad": "x" * size})
        await broker.publish("chat:flood", Publication(data, json=True))
    reads = 0
    read = broker.history

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal reads
        reads += 1
        return await read(*args, **kwargs)

    broker.history = counted  # type: ignore[method-assign]
    gc.collect()
    before, _ = rss()
    sock = await asyncio.to_thread(stalled, port, commands)
    peak_rss = before
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        peak_rss = max(peak_rss, rss()[0])
        if len(hub) == 0 or reads > commands:  # the subscribe reads the top too
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.5)
    peak_rss = max(peak_rss, rss()[0])
    closed = len(hub) == 0
    print(
        f"{commands} history commands of 100 x {size:,} B, client not reading: "
        f"RSS +{(peak_rss - before) / 2**20:,.0f} MiB at most, {reads - 1} history reads, "
        f"client {'closed (buffer overflow)' if closed else 'still connected'}; "
        f"hub overflows {hub.stats.overflows}"
    )
    sock.close()
    stop.set()
    await server
    listener.detach()  # Hypercorn closed it


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=40)
    parser.add_argument("--size", type=int, default=60_000)
    args = parser.parse_args()
    asyncio.run(measure(args.commands, args.size))


if __name__ == "__main__":
    main()
