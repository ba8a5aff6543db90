"""The load of ``bench/workload.py``: Centrifuge clients, the broadcaster and the churn.

One event loop (this process, pinned to CPU 1) holds every client, sends the server
API's ``broadcast`` calls on a few keep-alive connections, and disconnects and
connects clients; :class:`Load` keeps the account (``workload_parts`` has the pure
parts: payload, rounds, rates, histograms).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import struct
import time
from dataclasses import dataclass, field
from typing import Any, cast

import workload_parts as W
from wsclient import client_frame, client_text

PUSH = b'{"push":'
DATA = b'"data":"'
CLOSE_1000 = client_frame(8, struct.pack("!H", 1000))
#: An API connection idle this long is replaced (Hypercorn's keep-alive timeout is 5 s).
IDLE = 3.0


def hs256(secret: str, claims: dict[str, Any]) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


@dataclass
class Config:
    port: int
    clients: int
    secret: str
    api_key: str
    group_size: int = 10
    batch: int = 50
    api_connections: int = 64
    sources: tuple[str, ...] = ("127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4")
    connect_timeout: float = 30.0


@dataclass
class Kind:
    """One kind of channel: how many, the call's size, positions sent so far."""

    channels: int
    batch: int
    positions: int = 0


@dataclass
class Window:
    """What one step counts: deliveries sent inside [start, end) (monotonic ns)."""

    start: int = 0
    end: int = 1 << 62
    delivered: int = 0
    hist: W.Histogram = field(default_factory=W.Histogram)
    worst: dict[int, int] = field(default_factory=dict)  # second of the step: max ns


class Client(asyncio.Protocol):
    """A Centrifuge client (JSON, WebSocket): connect with a token, subscribe to its group."""

    def __init__(self, load: Load, user: int) -> None:
        self.load, self.user = load, user
        self.buf = bytearray()
        self.upgraded = False
        self.replies = 0
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.ready_at = 0
        self.seqs = {W.GROUP: W.Sequence(), W.PERSONAL: W.Sequence()}
        self.index = {W.GROUP: user // load.cfg.group_size, W.PERSONAL: user}
        self.closing = False
        self.resubscribes = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )

    def fail(self, why: str) -> None:
        if not self.ready.done():
            self.ready.set_exception(RuntimeError(why))
        else:
            self.load.errors[why[:60]] = self.load.errors.get(why[:60], 0) + 1
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.upgraded and not self.buf and len(data) >= 2 and data[1] < 126:
            # The common case: one whole small text frame, parsed with no copy into buf.
            end = 2 + data[1]
            if len(data) == end and data[0] == 0x81:
                self.frame(data[2:])
                return
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not buf.startswith(b"HTTP/1.1 101"):
                self.fail(bytes(buf[:80]).decode(errors="replace").split("\r\n")[0])
                return
            del buf[: end + 4]
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(self.load.connect_frame(self.user))
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
            opcode = buf[0] & 0x0F
            payload = bytes(buf[at : at + n])
            del buf[: at + n]
            if opcode == 0x1:
                self.frame(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(client_frame(0xA, payload))
            elif opcode == 0x8:
                self.load.errors["server closed"] = self.load.errors.get("server closed", 0) + 1

    def frame(self, payload: bytes) -> None:
        if payload.startswith(PUSH) and b"\n" not in payload:
            self.push(payload)
            return
        for line in payload.split(b"\n"):
            if line.startswith(PUSH):
                self.push(line)
            elif line == b"{}":
                if self.transport is not None:
                    self.transport.write(client_text(b"{}"))
            elif line:
                self.reply(line)

    def push(self, line: bytes) -> None:
        at = line.find(DATA)
        if at < 0:
            if b'"unsubscribe":' in line:
                self.unsubscribed(line)
            else:
                self.load.other += 1  # a push with no string data (a join, a disconnect...)
            return
        start = at + 8
        data = line[start : line.find(b'"', start)]
        try:
            kind, position, sent = W.decode(data)
        except ValueError:
            self.load.other += 1
            return
        load = self.load
        meta = load.kinds[kind]
        try:
            rnd = W.round_of(position, self.index[kind], meta.channels, meta.batch)
        except ValueError:
            self.fail(f"a publication for another channel: {line[:80]!r}")
            return
        self.seqs[kind].add(rnd)
        win = load.window
        if win.start <= sent < win.end:
            win.delivered += 1
            took = time.monotonic_ns() - sent
            win.hist.add(took)
            second = (sent - win.start) // 1_000_000_000
            if took > win.worst.get(second, 0):
                win.worst[second] = took

    def unsubscribed(self, line: bytes) -> None:
        """The server's "you may have missed" (2500): told, and subscribed again as an SDK
        does (``personal:#USER`` too: a user-limited channel its user may subscribe to)."""
        try:
            push = json.loads(line)["push"]
            kind, index = W.channel_index(push["channel"])
        except (ValueError, KeyError, TypeError):
            self.load.other += 1
            return
        load = self.load
        load.told += 1
        old = self.seqs[kind]
        load.lost += old.lost
        load.ooo += old.ooo
        self.seqs[kind] = W.Sequence()  # rounds start over with the new subscription
        self.resubscribes += 1
        if self.transport is not None and index == self.index[kind]:
            command = {"id": 2 + self.resubscribes, "subscribe": {"channel": push["channel"]}}
            self.transport.write(client_text(json.dumps(command).encode()))

    def reply(self, line: bytes) -> None:
        try:
            reply = json.loads(line)
        except ValueError:
            self.fail(f"bad frame {line[:60]!r}")
            return
        if "error" in reply:
            if reply.get("id", 0) > 2:  # a subscribe again refused: noted, not fatal
                why = f"resubscribe: {reply['error']}"[:60]
                self.load.errors[why] = self.load.errors.get(why, 0) + 1
                return
            self.fail(f"Centrifuge error {reply['error']}")
            return
        if reply.get("id") == 1:
            subs = reply.get("connect", {}).get("subs", {})
            if W.channel_name(W.PERSONAL, self.user) not in subs:
                self.fail(f"no server-side personal channel in {line[:120]!r}")
                return
        self.replies += 1
        if self.replies == 2 and not self.ready.done():
            self.ready_at = time.monotonic_ns()
            self.ready.set_result(None)

    def close(self) -> None:
        """Disconnect as a browser tab does: a close frame, then the socket."""
        self.closing = True
        if self.transport is not None:
            self.transport.write(CLOSE_1000)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"user {self.user}: lost ({exc})"))
        elif not self.closing:
            self.load.dropped += 1  # the server closed it: the user connects again
            self.load.forget(self)
            task = asyncio.get_running_loop().create_task(self.load.reconnect(self.user))
            self.load.tasks.add(task)
            task.add_done_callback(self.load.tasks.discard)


class ApiConnection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection to the server API, one call at a time."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.waiting: asyncio.Future[tuple[int, bytes]] | None = None
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.used = 0.0  # monotonic time of the last answer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        self.buf += data
        for answer in W.http_responses(self.buf):
            if self.waiting is not None and not self.waiting.done():
                self.waiting.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True  # Hypercorn ends a keep-alive connection idle for 5 s
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(ConnectionError(f"API connection lost: {exc}"))

    async def call(self, request: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiting = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        try:
            return await self.waiting
        finally:
            self.used = time.monotonic()


class Load:
    """Every client, the broadcaster and the churn, with the account of deliveries."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        groups = W.group_count(cfg.clients, cfg.group_size)
        self.kinds = {
            W.GROUP: Kind(groups, min(cfg.batch, groups)),
            W.PERSONAL: Kind(cfg.clients, min(cfg.batch, cfg.clients)),
        }
        self.window = Window(start=1 << 62)
        self.live: dict[int, Client] = {}
        self.tokens: dict[int, str] = {}
        self.errors: dict[str, int] = {}
        self.other = self.dropped = 0
        self.lost = self.ooo = 0  # from connections closed by the churn, and tails
        self.silent = 0
        self.calls_failed = 0
        self.told = 0  # unsubscribe pushes: "you may have missed" on a channel
        self.tasks: set[asyncio.Task[None]] = set()
        self.refused = 0  # deliveries of channels a broadcast answered with an error
        self.api: asyncio.LifoQueue[ApiConnection] = asyncio.LifoQueue()  # hot ones first
        self.api_ms = W.Histogram()  # call answer times (ns in, ms out)
        self.late = W.Histogram()  # how late a call started against its schedule
        self.connect_ms = W.Histogram()
        self.connect_failed = 0
        self.churned = 0

    def connect_frame(self, user: int) -> bytes:
        token = self.tokens.get(user)
        if token is None:
            token = self.tokens[user] = hs256(self.cfg.secret, {"sub": str(user)})
        group = W.channel_name(W.GROUP, user // self.cfg.group_size)
        commands = [
            {"id": 1, "connect": {"token": token}},
            {"id": 2, "subscribe": {"channel": group}},
        ]
        return client_text(
            "\n".join(json.dumps(c, separators=(",", ":")) for c in commands).encode()
        )

    def forget(self, client: Client) -> None:
        """A connection ends: its gaps join the account (what was in flight is not a loss)."""
        if self.live.get(client.user) is client:
            del self.live[client.user]
        for seq in client.seqs.values():
            self.lost += seq.lost
            self.ooo += seq.ooo
            seq.lost = seq.ooo = 0

    # Connecting ---------------------------------------------------------------------

    async def dial(self, user: int) -> Client:
        loop = asyncio.get_running_loop()
        source = self.cfg.sources[user % len(self.cfg.sources)]
        _, client = await loop.create_connection(
            lambda: Client(self, user), "127.0.0.1", self.cfg.port, local_addr=(source, 0)
        )
        await asyncio.wait_for(client.ready, self.cfg.connect_timeout)
        self.live[user] = client
        return client

    async def connect_all(self, in_flight: int = 64) -> float:
        """Every user connected, ``in_flight`` handshakes at a time; the seconds it took."""
        gate = asyncio.Semaphore(in_flight)
        started = time.monotonic()

        async def one(user: int) -> None:
            async with gate:
                await self.dial(user)

        await asyncio.gather(*(one(u) for u in range(self.cfg.clients)))
        for _ in range(self.cfg.api_connections):
            self.api.put_nowait(ApiConnection())  # connected when first used
        return time.monotonic() - started

    async def api_connection(self) -> ApiConnection:
        """An idle API connection of the pool, connected again if the server closed it."""
        conn = await self.api.get()
        if conn.transport is not None and time.monotonic() - conn.used > IDLE:
            conn.transport.close()  # before the server's keep-alive timeout can race a call
            conn.closed = True
        if conn.transport is None or conn.closed:
            _, conn = await asyncio.get_running_loop().create_connection(
                ApiConnection, "127.0.0.1", self.cfg.port
            )
        return conn

    async def reconnect(self, user: int) -> None:
        """The churn's connect: dial to both replies into ``connect_ms``."""
        started = time.monotonic_ns()
        try:
            await self.dial(user)
        except (TimeoutError, OSError, RuntimeError) as exc:
            self.connect_failed += 1
            self.errors[f"reconnect: {exc}"[:60]] = self.errors.get(f"reconnect: {exc}"[:60], 0) + 1
            return
        self.connect_ms.add(time.monotonic_ns() - started)

    async def churn(
        self, seconds: float, per_second: float, tasks: set[asyncio.Task[None]]
    ) -> None:
        """Disconnect a random live client and connect its user again, ``per_second``."""
        start = time.monotonic()
        rng = random.Random(23)
        for at in W.churn_times(seconds, per_second):
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            if not self.live:
                continue
            user = rng.choice(list(self.live)) if len(self.live) < 64 else self.pick(rng)
            client = self.live.pop(user)
            client.close()
            self.forget(client)
            self.churned += 1
            task = asyncio.create_task(self.reconnect(user))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def pick(self, rng: random.Random) -> int:
        """A random live user, without listing them all (users are 0..clients-1)."""
        while True:
            user = rng.randrange(self.cfg.clients)
            if user in self.live:
                return user

    # Broadcasting -------------------------------------------------------------------

    async def call(self, kind: str, scheduled: float, calls: set[asyncio.Task[None]]) -> None:
        conn = await self.api_connection()
        meta = self.kinds[kind]
        position = meta.positions
        meta.positions += meta.batch
        names = [W.channel_name(kind, c) for c in W.batch(position, meta.batch, meta.channels)]
        sent = time.monotonic_ns()
        self.late.add(int((time.monotonic() - scheduled) * 1e9))
        # Stamped with the time it was due, not sent: a call queued behind slow answers
        # adds its wait to the deliveries' latency (no coordinated omission).
        due_ns = int(scheduled * 1e9)
        body = W.broadcast_body(names, W.encode(kind, position, due_ns))
        try:
            status, answer = await conn.call(
                W.http_request("/api/broadcast", body, self.cfg.api_key)
            )
        except ConnectionError as exc:
            self.calls_failed += 1
            self.errors[str(exc)[:60]] = self.errors.get(str(exc)[:60], 0) + 1
            self.api.put_nowait(ApiConnection())  # a fresh one in its place
            return
        self.api_ms.add(time.monotonic_ns() - sent)
        if status != 200 or b'"error"' in answer:
            self.calls_failed += 1
            count, text = W.api_errors(answer)
            if status != 200:
                count = len(names)
            # What the server refused is not delivered (and counts as lost too).
            self.refused += count * (self.cfg.group_size if kind == W.GROUP else 1)
            why = f"broadcast {status}: {text}"[:120]
            self.errors[why] = self.errors.get(why, 0) + 1
        self.api.put_nowait(conn)

    async def broadcast(self, seconds: float, plan: W.Plan, tick: float = 0.002) -> int:
        """Calls of both kinds, spread evenly, for ``seconds``; the calls made."""
        start = time.monotonic()
        made = {W.GROUP: 0, W.PERSONAL: 0}
        rates = {W.GROUP: plan.group_calls, W.PERSONAL: plan.personal_calls}
        calls: set[asyncio.Task[None]] = set()
        while (elapsed := time.monotonic() - start) < seconds:
            for kind, per_second in rates.items():
                while made[kind] < W.due(elapsed, per_second):
                    scheduled = start + made[kind] / per_second
                    made[kind] += 1
                    task = asyncio.create_task(self.call(kind, scheduled, calls))
                    calls.add(task)
                    task.add_done_callback(calls.discard)
            await asyncio.sleep(tick)
        if calls:
            await asyncio.wait(calls, timeout=30)
        return sum(made.values())

    # Accounting ---------------------------------------------------------------------

    async def drain(self, quiet: float = 1.0, most: float = 20.0) -> None:
        """Wait until no counted delivery has come for ``quiet`` s (``most`` s at most)."""
        deadline = time.monotonic() + most
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            now = self.window.delivered
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            await asyncio.sleep(0.1)

    def settle(self, ready_before: int, positions: dict[str, int]) -> tuple[int, int]:
        """Tails and gaps of the live connections into the account; (lost, silent) added.

        A live connection's rounds after the last one it saw were lost at the tail; a
        connection ready before ``ready_before`` (ns, when each kind had sent
        ``positions``) that saw nothing on a channel sent to since then is *silent*.
        Each sequence then starts over from the last round sent, so the next step does
        not count the same loss again.
        """
        lost = silent = 0
        for client in list(self.live.values()):
            for kind, seq in client.seqs.items():
                meta = self.kinds[kind]
                index = client.index[kind]
                final = W.last_round(index, meta.positions, meta.channels)
                if seq.last < 0:
                    since = W.last_round(index, positions[kind], meta.channels)
                    if client.ready_at < ready_before and final > since:
                        silent += 1
                    continue
                lost += seq.tail(final) + seq.lost
                self.ooo += seq.ooo
                seq.lost = seq.ooo = 0
                seq.last = max(seq.last, final)
        self.lost += lost
        self.silent += silent
        return lost, silent

    def snapshot(self) -> dict[str, Any]:
        return {
            "lost": self.lost,
            "ooo": self.ooo,
            "silent": self.silent,
            "dropped": self.dropped,
            "other": self.other,
            "calls_failed": self.calls_failed,
            "refused": self.refused,
            "told": self.told,
            "churned": self.churned,
            "connect_failed": self.connect_failed,
            "errors": dict(self.errors),
        }


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system
