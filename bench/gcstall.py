"""Issue 18 item 9: event-loop stalls from the garbage collector, at 15,000 clients.

Every client speaks the Centrifuge protocol (JSON) and is in two channels: its own
``u<i>`` and a group ``g<i % groups>``. For ``--seconds`` the driver publishes at a
steady ``--rate`` deliveries a second, half to groups (``POST /api/publish``), half to
personal channels (``POST /api/broadcast``, many channels a request), ``--ticks``
times a second. Each publication carries its send time; each client notes the delay
of every push it gets. Per variant, a fresh server (pinned to CPU 0, this driver to
CPU 1) runs the same load:

- ``python-gc``: Python's collector as it was: thresholds (700, 10, 10), nothing
  frozen (``--gc-threshold 0`` and :func:`realtime.gcpolicy.freeze` made a no-op);
- ``policy``: realtime's defaults (``realtime.gcpolicy``);
- ``gc-off``: the collector disabled, the floor.

Run: ``.venv/bin/python bench/gcstall.py`` (about 2 minutes a variant at 15,000).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import re
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SECRET = "gcstall-secret-" * 3
API_KEY = "gcstall-key"
#: How each variant's server is started: a prelude run before realtime's command line.
VARIANTS = {
    "python-gc": ("import realtime.gcpolicy as g; g.freeze = lambda: 0", ["--gc-threshold", "0"]),
    "policy": ("", []),
    "gc-off": ("import gc; gc.disable(); gc.freeze = lambda: None; gc.enable = lambda: None", []),
}
STAMP = re.compile(rb'"t":(\d+)')


def hs256(claims: dict[str, Any]) -> str:
    import hashlib
    import hmac

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def masked(payload: bytes) -> bytes:
    """One client text frame (masked with a zero key: the bytes stay as they are)."""
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x81, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
    return head + b"\0\0\0\0" + payload


class Client(asyncio.Protocol):
    """One Centrifuge client: upgrade, connect + two subscribes, then count pushes."""

    def __init__(self, index: int, groups: int, stats: Stats) -> None:
        self.index, self.groups, self.stats = index, groups, stats
        self.buf = bytearray()
        self.upgraded = False
        self.replies = 0
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        key = base64.b64encode(os.urandom(16)).decode()
        transport.write(
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.upgraded:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buf.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(self.buf[:200]).decode()))
                return
            del self.buf[: end + 4]
            self.upgraded = True
            i = self.index
            commands = [
                {"id": 1, "connect": {"token": self.stats.token}},
                {"id": 2, "subscribe": {"channel": f"u{i}"}},
                {"id": 3, "subscribe": {"channel": f"g{i % self.groups}"}},
            ]
            self.transport.write(masked("\n".join(map(json.dumps, commands)).encode()))
        buf = self.buf
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            at = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n, at = struct.unpack_from("!H", buf, 2)[0], 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n, at = struct.unpack_from("!Q", buf, 2)[0], 10
            if len(buf) < at + n:
                return
            opcode, payload = buf[0] & 0x0F, bytes(buf[at : at + n])
            del buf[: at + n]
            if opcode == 0x9:  # ping: pong back
                self.transport.write(b"\x8a\x80\0\0\0\0")  # (empty payload)
            elif opcode == 0x1:
                self.frame(payload)

    def frame(self, payload: bytes) -> None:
        if self.replies < 3:
            self.replies += payload.count(b'"id":')
            if self.replies >= 3 and not self.ready.done():
                self.ready.set_result(None)
        stamps = STAMP.findall(payload)
        if stamps:
            self.stats.delivered(stamps)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.lost += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"client {self.index} lost: {exc}"))


class Stats:
    """Deliveries by delay, 1 ms buckets (the last holds 10 s and more)."""

    def __init__(self) -> None:
        self.token = hs256({"sub": "gcstall"})
        self.histogram = [0] * 10_001
        self.counting = False
        self.lost = 0

    def delivered(self, stamps: list[bytes]) -> None:
        if not self.counting:
            return
        now = time.time_ns()
        for stamp in stamps:
            self.histogram[min(10_000, (now - int(stamp)) // 1_000_000)] += 1

    def percentile(self, q: float) -> int:
        total = sum(self.histogram)
        seen = 0
        for ms, count in enumerate(self.histogram):
            seen += count
            if seen >= q * total:
                return ms
        return 0

    def maximum(self) -> int:
        return max((ms for ms, c in enumerate(self.histogram) if c), default=0)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish(port: int, args: argparse.Namespace, stats: Stats) -> int:
    """Open loop at ``args.rate`` deliveries/s; how many deliveries were sent."""
    size = args.clients // args.groups
    per_tick = args.rate / args.ticks
    group_pubs = max(1, round(per_tick / 2 / size))
    personal = max(1, round(per_tick - group_pubs * size))
    headers = {"X-API-Key": API_KEY}
    sent = 0
    g = u = 0
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=headers) as http:
        start = time.monotonic()
        ticks = round(args.seconds * args.ticks)
        for k in range(ticks):
            await asyncio.sleep(max(0.0, start + k / args.ticks - time.monotonic()))
            if k == round(args.warmup * args.ticks):
                stats.counting = True
            data = {"t": time.time_ns(), "pad": "x" * 40}
            requests = []
            for _ in range(group_pubs):
                body = {"channel": f"g{g % args.groups}", "data": data}
                requests.append(http.post("/api/publish", json=body))
                g += 1
            channels = [f"u{(u + j) % args.clients}" for j in range(personal)]
            u += personal
            requests.append(http.post("/api/broadcast", json={"channels": channels, "data": data}))
            for answer in await asyncio.gather(*requests):
                answer.raise_for_status()
            if stats.counting:
                sent += group_pubs * size + personal
    return sent


async def connect_all(port: int, args: argparse.Namespace, stats: Stats) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        async with gate:
            _, client = await loop.create_connection(
                lambda: Client(i, args.groups, stats), "127.0.0.1", port
            )
            clients.append(client)
            await asyncio.wait_for(client.ready, 30)

    await asyncio.gather(*(one(i) for i in range(args.clients)))
    return clients


def run_variant(name: str, args: argparse.Namespace) -> dict[str, Any]:
    prelude, flags = VARIANTS[name]
    with socket.socket() as probe:  # the server binds it at once: only a port number
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = f"{prelude}\nimport sys\nfrom realtime.cli import main\nsys.exit(main())"
    cmd = [
        "taskset", "-c", "0", sys.executable, "-c", code, "run", "--app", str(ROOT / "app"),
        "--bind", f"127.0.0.1:{port}", "--token-hmac-secret", SECRET, "--api-key", API_KEY,
        "--client-ping-interval", "0", "--max-connections-per-ip", str(args.clients + 100),
        *flags,
    ]  # fmt: skip
    log = (args.out / f"gcstall-{name}.log").open("w")
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/-/health", timeout=1)
                break
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"{name}: server did not start, see {log.name}")
            time.sleep(0.1)
        stats = Stats()

        async def drive() -> dict[str, Any]:
            t0 = time.monotonic()
            clients = await connect_all(port, args, stats)
            connected = time.monotonic() - t0
            cpu0 = cpu_seconds(server.pid)
            sent = await publish(port, args, stats)
            await asyncio.sleep(1.0)  # the last publications reach their clients
            cpu = cpu_seconds(server.pid) - cpu0
            for client in clients:
                client.transport.abort()
            got = sum(stats.histogram)
            measured = args.seconds - args.warmup
            return {
                "variant": name, "clients": len(clients), "connect_s": round(connected, 1),
                "deliveries_per_s": round(got / measured), "sent": sent, "got": got,
                "cpu_share": round(cpu / (measured + 1.0), 3),
                "p50_ms": stats.percentile(0.5), "p99_ms": stats.percentile(0.99),
                "max_ms": stats.maximum(), "lost": stats.lost,
            }  # fmt: skip

        return asyncio.run(drive())
    finally:
        server.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(20)
        if server.poll() is None:
            server.kill()
        log.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--clients", type=int, default=15_000)
    p.add_argument("--groups", type=int, default=150, help="group channels (clients split evenly)")
    p.add_argument("--rate", type=float, default=7_500, help="deliveries a second")
    p.add_argument("--ticks", type=int, default=10, help="publishing rounds a second")
    p.add_argument("--seconds", type=float, default=60, help="publishing for, s")
    p.add_argument("--warmup", type=float, default=5, help="first seconds not counted")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.sched_setaffinity(0, {1})
    rows = [run_variant(name, args) for name in args.variants.split(",")]
    (args.out / "gcstall.json").write_text(json.dumps(rows, indent=1))
    keys = list(rows[0])
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        print("| " + " | ".join(str(row[k]) for k in keys) + " |")


if __name__ == "__main__":
    main()
