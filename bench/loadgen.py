"""Load generator for a WebSocket broadcast server; prints one JSON object on stdout.

It opens N clients to ``--url`` from 127.0.0.1..127.0.0.K, triggers M broadcasts with
HTTP GET ``--send-url?message=...`` and measures how long each takes to reach the
last client. The clients are a minimal RFC 6455 implementation on asyncio Protocols
(hand-made upgrade, frame parser, masked pong/close): far cheaper per connection
than a full library, so 10,000 of them fit on one core.

With ``--slow S``, S of the N clients stop reading (``pause_reading`` and a tiny
``SO_RCVBUF``); loss and latency are then reported over the healthy clients only.

With ``--offer-deflate``, every client offers permessage-deflate exactly as Chromium
does (``Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits``). Where
the server accepts it, frames with RSV1 set are inflated (RFC 7692): one raw inflater
per connection, or one per message if the server said ``server_no_context_takeover``,
with ``00 00 ff ff`` appended to each message's payload. Uncompressed frames are taken
as they are. The JSON's ``deflate`` object says how many clients negotiated it.

With ``--protocol centrifuge`` every client speaks the Centrifuge client protocol v2
(JSON codec) instead: after the upgrade it sends one text frame, ``{"id":1,"connect":
{"token":...}}`` and ``{"id":2,"subscribe":{"channel":...}}`` joined by a newline, and
counts as connected once both replies came. Publications are then ``pub`` pushes; the
load generator takes the string in ``"data"`` and handles it as the raw clients do the
whole message. It answers the protocol's ``{}`` pings with ``{}``.

With ``--protocol centrifuge-protobuf`` the clients ask for the ``centrifuge-protobuf``
subprotocol and send the same two commands as protobuf (one binary frame of
varint-delimited ``Command`` messages); ``--protocol centrifuge-http-stream`` opens
each client as ``POST --url`` (``/connection/http_stream``) with the connect command and
subscribes through ``POST --emulation-path`` once the connect reply named its session,
as centrifuge-js's ``http_stream`` transport does. ``clients.py`` has those wire
formats; the deliveries are counted here, as for every protocol.

With ``--protocol pusher`` the clients speak Pusher protocol 7 as pusher-js does
(``--url`` is ``/app/<key>?protocol=7&...``): they wait for
``pusher:connection_established``, send ``pusher:subscribe`` to ``--channel`` and
count as connected once ``pusher_internal:subscription_succeeded`` came; each
channel event's ``data`` is then a publication, and ``pusher:ping`` is answered with
``pusher:pong``. With ``--protocol mercure`` each client is an ``EventSource`` on a
Mercure hub: ``GET --url?topic=<--channel>``, connected once the 200 came, and
each ``data:`` line of the event stream is a publication. ``protocols.py`` has
those wire formats.

With ``--channels C`` client i joins channel ``bench<i % C>`` (``/ws?channel=`` for raw
clients, a subscription for Centrifuge ones), and publication k goes to channel
``bench<(k - 1) % C>`` through the server HTTP API (``--publish-api KEY``: ``POST
--send-url`` with ``{"channel": ..., "data": "<message>"}``); its latency is until the
last client of that channel got it. The warm-up then publishes once to every channel.

With ``--no-count`` the send URL is taken not to say how many clients it reached (the
anchors answer ``ok``): the warm-up ends once every client got one broadcast.

With ``--storm`` the N clients are dialled all at once (no cap on handshakes in
flight, no retry), each with ``--connect-timeout`` for its TCP connect and upgrade;
the JSON's ``storm`` object counts how each dial ended (``connected``, ``timed_out``,
``refused_reset``, ``other``, with ``errors`` by kind) and when (``all_connected_s``:
the last success, when every dial succeeded; ``last_failure_s``; ``last_done_s``).
It then prints ``@phase stormed`` (with ``--wait-stdin``, and waits), checks with
one warm-up that every connected client gets a broadcast, and closes; no broadcast
phase follows.

With ``--sustained`` the broadcast phase is open loop instead: ``--rate`` R send
requests a second for ``--sustained-seconds`` S, each fired on its schedule
(``t0 + (k - 1) / R``) whatever the earlier ones did, each with ``--http-timeout``
(connect to answer). Then it waits for stragglers (every request answered or timed
out, and every broadcast not refused with an HTTP status at every client), at most
``--straggler-wait`` s after the last send. The JSON's ``sustained`` object counts
the broadcasts attempted, accepted (2xx) and failed (``HTTP <status>``,
``timeout``, ``connection <error>``); the deliveries (per client, the lost ones of
accepted broadcasts, those of failed ones); the latency from send to each delivery
(a 1 ms histogram, every delivery counted); the requests' latency; and how late the
schedule ran in the load generator.

With ``--wait-stdin`` it prints ``@phase dialed`` (every client connected, before the
warm-up), ``@phase connected`` and ``@phase broadcast_done`` on
stderr and waits for a line on stdin after each, so a caller can sample the server.

    python bench/loadgen.py --url ws://127.0.0.1:8000/ws \\
        --send-url http://127.0.0.1:8000/send.py --clients 1000 --messages 100
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import json
import os
import re
import resource
import socket
import sys
import threading
import time
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

import clients
import protocols
from protoclient import DATA_KEY, PUSH, ProtocolClient, connect_frame
from wsclient import DEFLATE_OFFER, DEFLATE_TAIL, WS_GUID, client_frame, negotiate_deflate

#: Linux: bind() picks the address now and the port at connect(), so ports scale per target.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SLOW_RCVBUF = 4096
SENT_TO = re.compile(rb"Sent to (\d+) client")
now_ns = time.perf_counter_ns
#: --sustained's latency histogram: 1 ms buckets, the last one holds this and above.
HISTOGRAM_MS = 600_000


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def loopback(host: str) -> str:
    if ipaddress.ip_address(host) not in ipaddress.ip_network("127.0.0.0/24"):
        raise SystemExit(f"loadgen: refusing to target {host}: only 127.0.0.x is allowed")
    return host


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def cpu_time() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Client(ProtocolClient, asyncio.Protocol):
    """One client: upgrade by hand, then parse unmasked server frames (or an HTTP stream).

    What a whole message means for its protocol is ``ProtocolClient``'s (protoclient.py);
    the account of deliveries is :meth:`message`'s, the same for every protocol.
    """

    __slots__ = (
        "accept",
        "buf",
        "channel",
        "counted",
        "deflate",
        "ended",
        "fragments",
        "fragments_compressed",
        "handshake",
        "inflater",
        "last",
        "ooo",
        "open",
        "received",
        "replies",
        "request",
        "reset_context",
        "run",
        "slow",
        "stream",
        "transport",
    )

    def __init__(
        self, run: Run, slow: bool, request: bytes, accept: bytes, channel: int = 0
    ) -> None:
        self.run = run
        self.slow = slow
        self.channel = channel  # index into Run.channel_names
        self.replies = 0  # Centrifuge command replies received (connect, subscribe)
        self.request = request
        self.accept = accept
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.open = False
        self.counted = False  # in Run.clients and its open counts
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.fragments: list[bytes] | None = None
        self.fragments_compressed = False  # RSV1 was set on the message's first frame
        self.deflate = False  # permessage-deflate negotiated
        self.reset_context = False  # the server said server_no_context_takeover
        self.inflater: zlib._Decompress | None = None  # kept across messages
        self.last = 0  # highest sequence number seen
        self.received = 0
        self.ooo = 0
        self.ended: str | None = None  # "close 1008", "eof", "error ..."
        # --protocol centrifuge-http-stream and mercure: the response, not WebSocket frames.
        self.stream = clients.HttpStream() if run.stream or run.mercure else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.ended is None:
            self.ended = "eof" if exc is None else f"error {type(exc).__name__}"
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(f"closed during handshake: {self.ended}"))
        self.run.client_closed(self)

    def fail(self, why: str) -> None:
        self.ended = f"error {why}"
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError(why))
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        if self.stream is not None:
            self.stream_received(data)
            return
        if not self.open:
            self.buf += data
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.fail("oversized handshake response")
                return
            head, data = bytes(self.buf[:end]), bytes(self.buf[end + 4 :])
            self.buf.clear()
            if not head.startswith(b"HTTP/1.1 101") or self.accept not in head:
                self.fail("handshake refused: " + head.split(b"\r\n", 1)[0].decode("latin-1"))
                return
            self.deflate, self.reset_context, error = negotiate_deflate(
                head, self.run.args.offer_deflate
            )
            if (
                error is None
                and self.run.protobuf
                and clients.PROTOBUF_SUBPROTOCOL.encode() not in head
            ):
                error = "server did not accept the centrifuge-protobuf subprotocol"
            if error is not None:
                self.fail(error)
                return
            if self.deflate:
                self.run.deflate_accepted(head)
            self.open = True
            if self.run.centrifuge:
                # Connected once the connect and subscribe replies came (centrifuge_line).
                assert self.transport is not None
                self.transport.write(self.run.connect_frame(self.channel))
            elif not self.run.pusher:  # Pusher: once subscribed (pusher_message)
                self.handshake.set_result(None)
        if self.buf:
            self.buf += data
            data = bytes(self.buf)
            self.buf.clear()
        now = now_ns()
        pos, size = 0, len(data)
        while size - pos >= 2 and self.ended is None:
            b0, b1 = data[pos], data[pos + 1]
            length, header = b1 & 0x7F, 2
            if length == 126:
                if size - pos < 4:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 4]), 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, header = int.from_bytes(data[pos + 2 : pos + 10]), 10
            if b1 & 0x80:
                self.fail("masked server frame")
                return
            end = pos + header + length
            if end > size:
                break
            self.frame(b0, data[pos + header : end], now)
            pos = end
        if pos < size and self.ended is None:
            self.buf += data[pos:]

    def frame(self, b0: int, payload: bytes, now: int) -> None:
        opcode, fin, compressed = b0 & 0x0F, b0 & 0x80, b0 & 0x40
        if b0 & 0x70 and (b0 & 0x30 or not self.deflate or opcode not in (1, 2)):
            # RSV2/RSV3, or RSV1 without permessage-deflate or on a continuation or control frame.
            self.fail(f"unexpected RSV bits 0x{b0 & 0x70:02x} on opcode {opcode}")
            return
        if opcode in (1, 2):
            if fin:
                if compressed:
                    payload = self.inflate(payload)
                    if self.ended is not None:
                        return
                self.whole(payload, now)
            else:
                self.fragments = [payload]
                self.fragments_compressed = bool(compressed)
        elif opcode == 0 and self.fragments is not None:
            self.fragments.append(payload)
            if fin:
                payload, self.fragments = b"".join(self.fragments), None
                if self.fragments_compressed:
                    payload = self.inflate(payload)
                    if self.ended is not None:
                        return
                self.whole(payload, now)
        elif opcode == 9 and self.transport is not None:
            self.transport.write(client_frame(10, payload))
        elif opcode == 8:
            code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
            self.ended = f"close {code}"
            if self.transport is not None:
                self.transport.write(client_frame(8, payload[:2]))
                self.transport.close()

    def inflate(self, payload: bytes) -> bytes:
        """One compressed message's payload, inflated (RFC 7692 §7.2.2)."""
        inflater = self.inflater
        if inflater is None:
            inflater = zlib.decompressobj(wbits=-15)
            if not self.reset_context:
                self.inflater = inflater
        try:
            data: bytes = inflater.decompress(payload + DEFLATE_TAIL)
        except zlib.error as exc:
            self.fail(f"inflate failed: {exc}")
            return b""
        self.run.inflated += 1
        return data

    def message(self, payload: bytes, now: int) -> None:
        """A message: ``m<seq>.<t0 ns>.xxx`` is measured, ``w<k>`` is a warm-up."""
        if payload[:1] != b"m":  # the raw clients' publications go straight on
            if self.run.centrifuge:
                if payload[:8] != PUSH or b"\n" in payload:  # replies, pings, batches
                    for line in payload.split(b"\n"):
                        self.centrifuge_line(line, now)
                    return
                at = payload.find(DATA_KEY)  # a pub push, the common case: inlined
                if at < 0 or payload[at + 7 : at + 8] != b'"':
                    self.run.other_pushes[payload[:80].decode(errors="replace")] += 1
                    return
                start = at + 8
                payload = payload[start : payload.find(b'"', start)]
            elif payload[:1] == b'"':  # a JSON string (published through the server API)
                payload = payload[1:-1]
            if payload[:1] != b"m":
                self.run.warm_received(self, payload)
                return
        dot = payload.find(b".", 1)
        seq = int(payload[1:dot])
        self.received += 1
        if self.slow:
            return
        if seq <= self.last:
            self.ooo += 1
        else:
            self.last = seq
        self.run.delivered(seq, payload, dot, now)

    def goodbye(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            if self.open and self.ended is None and self.stream is None:
                self.transport.write(client_frame(8, (1000).to_bytes(2)))
            self.transport.close()


@dataclass
class Broadcast:
    t0: int
    target: int  # healthy clients expected to receive it
    done: asyncio.Future[None]
    count: int = 0
    last: int = 0  # arrival of the latest delivery, ns
    channel: int = 0  # index into Run.channel_names


class Run:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        ws, send = urlsplit(args.url), urlsplit(args.send_url)
        self.host, self.port = loopback(ws.hostname or ""), ws.port or 80
        self.path = (ws.path or "/") + (f"?{ws.query}" if ws.query else "")
        self.send_host, self.send_port = loopback(send.hostname or ""), send.port or 80
        self.send_path = send.path or "/"
        self.clients: list[Client] = []
        self.broadcasts: dict[int, Broadcast] = {}
        self.healthy_open = 0
        self.centrifuge = args.protocol.startswith("centrifuge")
        self.protobuf = args.protocol == "centrifuge-protobuf"
        self.stream = args.protocol == "centrifuge-http-stream"
        self.pusher = args.protocol == "pusher"
        self.mercure = args.protocol == "mercure"
        self.sessions: dict[Client, tuple[str, str]] = {}  # stream clients' (session, node)
        self.emulations: set[asyncio.Task[None]] = set()
        self.emulation_errors: Counter[str] = Counter()
        self.channel_names = (
            [f"bench{j}" for j in range(args.channels)] if args.channels else [args.channel]
        )
        self.channel_open = [0] * len(self.channel_names)  # healthy clients per channel
        self.pings = 0  # Centrifuge pings answered
        self.other_pushes: Counter[str] = Counter()  # unexpected Centrifuge frames
        self.delivered_total = 0
        self.delivery_ns = 0
        self.histogram: list[int] | None = None  # deliveries by latency, ms (--sustained)
        self.warm: Counter[int] = Counter()
        self.warm_done: dict[int, asyncio.Future[None]] = {}
        self.warm_target = 0
        self.closed_early: Counter[str] = Counter()
        self.broadcasting = False
        self.slow_open = 0
        self.slow_ended = asyncio.Event()
        self.inflated = 0  # compressed messages received
        self.deflate_header: str | None = None  # one Sec-WebSocket-Extensions response
        self.emulations_made = 0  # emulation requests made (their source address rotates)

    def deflate_accepted(self, head: bytes) -> None:
        if self.deflate_header is None:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"sec-websocket-extensions":
                    self.deflate_header = value.strip().decode("latin-1")

    # Client callbacks ---------------------------------------------------------

    def delivered(self, seq: int, payload: bytes, dot: int, now: int) -> None:
        self.delivered_total += 1
        with contextlib.suppress(ValueError):
            took = now - int(payload[dot + 1 : payload.find(b".", dot + 1)])
            self.delivery_ns += took
            if self.histogram is not None:  # --sustained: every delivery, 1 ms buckets
                self.histogram[min(took // 1_000_000, HISTOGRAM_MS)] += 1
        b = self.broadcasts.get(seq)
        if b is not None:
            b.count += 1
            b.last = now
            if b.count >= b.target and not b.done.done():
                b.done.set_result(None)

    def warm_received(self, client: Client, payload: bytes) -> None:
        if client.slow:
            return
        with contextlib.suppress(ValueError):
            k = int(payload[1:])
            self.warm[k] += 1
            future = self.warm_done.get(k)
            if future is not None and self.warm[k] >= self.warm_target and not future.done():
                future.set_result(None)

    def client_closed(self, client: Client) -> None:
        if not client.counted:
            return
        if client.slow:
            self.slow_open -= 1
            if self.slow_open <= 0:
                self.slow_ended.set()
            return
        self.healthy_open -= 1
        self.channel_open[client.channel] -= 1
        if self.broadcasting:
            self.closed_early[client.ended or "?"] += 1
        for seq, b in self.broadcasts.items():  # it will not receive what it has not yet
            if b.channel == client.channel and seq > client.last and not b.done.done():
                b.target -= 1
                if b.count >= b.target:
                    b.done.set_result(None)

    # Connecting ---------------------------------------------------------------

    def connect_frame(self, channel: int) -> bytes:
        """A Centrifuge client's first frame: connect, then subscribe, in one."""
        return connect_frame(self.protobuf, self.args.token, self.channel_names[channel])

    async def connect_one(self, index: int, slow: bool) -> None:
        loop = asyncio.get_running_loop()
        source = f"127.0.0.{1 + index % self.args.sources}"
        key = base64.b64encode(os.urandom(16))
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        offer = f"Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n" if self.args.offer_deflate else ""
        channel = index % len(self.channel_names)
        path = self.path
        if self.mercure:  # the channel is the topic
            path = protocols.mercure_path(path, self.channel_names[channel])
        elif self.args.channels and not (self.centrifuge or self.pusher):  # raw: in the URL
            path += ("&" if "?" in path else "?") + f"channel={self.channel_names[channel]}"
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n"
            f"{offer}\r\n"
        ).encode()
        if self.protobuf:
            request = request.replace(
                b"\r\n\r\n",
                f"\r\nSec-WebSocket-Protocol: {clients.PROTOBUF_SUBPROTOCOL}\r\n\r\n".encode(),
            )
        elif self.stream:
            request = clients.http_stream_request(path, f"{self.host}:{self.port}", self.args.token)
        elif self.mercure:
            request = protocols.mercure_request(path, f"{self.host}:{self.port}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            if slow:  # before connect(), so the advertised window stays tiny
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SLOW_RCVBUF)
            sock.bind((source, 0))
            await loop.sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        _, client = await loop.create_connection(
            lambda: Client(self, slow, request, accept, channel), sock=sock
        )
        try:
            await client.handshake
        except BaseException:
            client.goodbye()
            raise
        self.clients.append(client)
        if client.ended is not None:  # closed before this coroutine resumed
            return
        client.counted = True
        if slow:
            assert client.transport is not None
            client.transport.pause_reading()
            self.slow_open += 1
        else:
            self.healthy_open += 1
            self.channel_open[channel] += 1

    async def connect_all(self) -> dict[str, Any]:
        n, slow = self.args.clients, self.args.slow
        slow_every = n // slow if slow else 0
        indices = iter(range(n))
        errors: Counter[str] = Counter()
        deadline = time.monotonic() + self.args.connect_deadline

        async def worker() -> None:
            for i in indices:
                if time.monotonic() > deadline:
                    errors["deadline"] += 1
                    continue
                is_slow = bool(slow_every) and i % slow_every == 0 and i // slow_every < slow
                try:
                    await asyncio.wait_for(self.connect_one(i, is_slow), self.args.connect_timeout)
                except (TimeoutError, OSError) as exc:
                    detail = f" {exc}" if isinstance(exc, ConnectionError) else ""
                    errors[type(exc).__name__ + detail] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(self.args.concurrency, n))))
        elapsed = time.perf_counter() - t0
        connected = len(self.clients)
        return {
            "connected": connected,
            "connect_errors": dict(errors),
            "connect_s": round(elapsed, 3),
            "connect_rate": round(connected / elapsed, 1) if elapsed > 0 else None,
        }

    async def storm(self) -> dict[str, Any]:
        """Dial every client at once: no cap on handshakes in flight, no retry.

        Each dial has ``--connect-timeout`` for its TCP connect and its upgrade (and,
        for Centrifuge clients, the connect and subscribe replies).
        """
        timeout = self.args.connect_timeout
        outcomes: Counter[str] = Counter()
        errors: Counter[str] = Counter()
        done_at: dict[str, float] = {}  # outcome -> when the last dial ended so, s
        connect_ms: list[float] = []

        async def dial(i: int) -> None:
            start = time.perf_counter()
            try:
                async with asyncio.timeout(timeout):
                    await self.connect_one(i, False)
                outcome = "connected"
                connect_ms.append((time.perf_counter() - start) * 1e3)
            except TimeoutError:
                outcome = "timed_out"
            except OSError as exc:
                detail = f"{type(exc).__name__} {exc}".strip()
                errors[detail] += 1
                # A refusal or reset, at connect or during the upgrade (connection_lost).
                resets = ("ConnectionRefusedError", "ConnectionResetError", "BrokenPipeError")
                refused = isinstance(exc, ConnectionRefusedError | ConnectionResetError)
                outcome = (
                    "refused_reset" if refused or any(r in detail for r in resets) else "other"
                )
            done_at[outcome] = time.perf_counter() - t0
            outcomes[outcome] += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(dial(i) for i in range(self.args.clients)))
        elapsed = time.perf_counter() - t0
        failed = self.args.clients - outcomes["connected"]
        failures = [done_at[k] for k in ("timed_out", "refused_reset", "other") if k in done_at]
        return {
            "connected": len(self.clients),
            "connect_s": round(elapsed, 3),
            "connect_rate": round(len(self.clients) / elapsed, 1) if elapsed > 0 else None,
            "storm": {
                "dials": self.args.clients,
                "timeout_s": timeout,
                "connected": outcomes["connected"],
                "timed_out": outcomes["timed_out"],
                "refused_reset": outcomes["refused_reset"],
                "other": outcomes["other"],
                "errors": dict(errors.most_common(10)),
                "all_connected_s": (
                    round(done_at["connected"], 3)
                    if not failed and "connected" in done_at
                    else None
                ),
                "last_connected_s": round(done_at.get("connected", 0.0), 3),
                "last_failure_s": round(max(failures), 3) if failures else None,
                "last_done_s": round(elapsed, 3),
                "handshake_ms": {
                    "p50": percentile(connect_ms, 50),
                    "p99": percentile(connect_ms, 99),
                    "max": max(connect_ms, default=None),
                },
            },
        }

    def deflate_report(self) -> dict[str, Any]:
        return {
            "offered": self.args.offer_deflate,
            "negotiated": sum(1 for c in self.clients if c.deflate),
            "of": len(self.clients),
            "response": self.deflate_header,
            "compressed_messages": self.inflated,
        }

    # HTTP ---------------------------------------------------------------------

    def emulate(self, client: Client, data: str, session: str = "", node: str = "") -> None:
        """Send ``data`` (commands) to a stream client's session: ``POST /emulation``."""
        if session or node:
            self.sessions[client] = (session, node)
        session, node = self.sessions.get(client, ("", ""))
        request = clients.emulation_request(
            self.args.emulation_path, f"{self.host}:{self.port}", session, node, data
        )
        task = asyncio.ensure_future(self.emulation(client, request))
        self.emulations.add(task)
        task.add_done_callback(self.emulations.discard)

    async def emulation(self, client: Client, request: bytes) -> None:
        """One emulation request, from the client's source address; a failure fails it."""
        source = f"127.0.0.{1 + self.emulations_made % self.args.sources}"
        self.emulations_made += 1
        why: str | None = None
        try:
            async with asyncio.timeout(self.args.connect_timeout):
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, local_addr=(source, 0)
                )
                try:
                    writer.write(request)
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = clients.response_status(head)
                    if not 200 <= status < 300:
                        why = f"emulation HTTP {status}"
                    match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                    await reader.readexactly(min(int(match[1]), 1 << 16) if match else 0)
                finally:
                    writer.close()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            why = f"emulation {type(exc).__name__}"
        if why is not None:
            self.emulation_errors[why] += 1
            if client.ended is None:
                client.fail(why)

    async def http_get(self, message: str, channel: int = 0) -> tuple[int, bytes]:
        """Publish ``message``: ``GET --send-url?message=``, or the server API's publish."""
        reader, writer = await asyncio.open_connection(self.send_host, self.send_port)
        try:
            host = f"Host: {self.send_host}:{self.send_port}\r\nConnection: close\r\n"
            if self.args.publish_api:
                data = json.dumps({"channel": self.channel_names[channel], "data": message})
                writer.write(
                    f"POST {self.send_path} HTTP/1.1\r\n{host}"
                    f"X-API-Key: {self.args.publish_api}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n{data}".encode()
                )
            else:
                writer.write(
                    f"GET {self.send_path}?message={message} HTTP/1.1\r\n{host}\r\n".encode()
                )
            head = await reader.readuntil(b"\r\n\r\n")
            match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
            body = await (reader.readexactly(int(match[1])) if match else reader.read(1 << 20))
            return int(head.split(b" ", 2)[1]), body
        finally:
            writer.close()

    async def warmup(self) -> dict[str, Any]:
        """Broadcast until the server counts every client and all healthy ones got it.

        The count must equal the clients connected. With several processes behind a
        broker, the server adds other processes' counts from their last report (once
        a second), so the count may lag the deliveries by a second or two: once a
        warm-up broadcast reached everyone but the count is short, wait
        ``--count-wait`` seconds before the next one, until ``--warmup-deadline``.
        """
        if self.args.publish_api:
            return await self.warmup_channels()
        expected = len(self.clients)
        server_count, complete, rounds = -1, False, 0
        counts: list[int] = []  # every count the server answered, in order
        t0 = time.monotonic()
        deadline = t0 + self.args.warmup_deadline
        for k in range(1, 1001):
            if time.monotonic() > deadline:
                break
            rounds = k
            self.warm_target = self.healthy_open
            future = self.warm_done[k] = asyncio.get_running_loop().create_future()
            if self.warm_target == 0:
                future.set_result(None)
            try:
                _, body = await asyncio.wait_for(self.http_get(f"w{k}"), self.args.timeout)
                match = SENT_TO.search(body)
                server_count = int(match[1]) if match else -1
                counts.append(server_count)
                await asyncio.wait_for(future, self.args.timeout)
                complete = True
            except (TimeoutError, OSError, asyncio.IncompleteReadError):
                complete = False
            if complete and (server_count == expected or self.args.no_count):
                break
            await asyncio.sleep(self.args.count_wait if complete else 0.25)
        return {
            "server_count": None if self.args.no_count else server_count,
            "expected": expected,
            "complete": complete,
            "rounds": rounds,
            "seconds": round(time.monotonic() - t0, 3),
            "counts": counts[-20:],
        }

    async def warmup_channels(self) -> dict[str, Any]:
        """Through the server API (which answers no count): once to every channel.

        A channel whose clients did not all get it is tried again, until
        ``--warmup-deadline``.
        """
        t0 = time.monotonic()
        deadline = t0 + self.args.warmup_deadline
        pending = list(range(len(self.channel_names)))
        k, errors = 0, Counter[str]()
        while pending and time.monotonic() < deadline:
            missed = []
            for channel in pending:
                k += 1
                self.warm_target = self.channel_open[channel]
                future = self.warm_done[k] = asyncio.get_running_loop().create_future()
                if self.warm_target == 0:
                    future.set_result(None)
                try:
                    status, _ = await asyncio.wait_for(
                        self.http_get(f"w{k}", channel), self.args.timeout
                    )
                    if status != 200:
                        errors[str(status)] += 1
                    await asyncio.wait_for(future, self.args.timeout)
                except (TimeoutError, OSError, asyncio.IncompleteReadError) as exc:
                    errors[type(exc).__name__] += 1
                    missed.append(channel)
            pending = missed
        return {
            "server_count": None,  # the API does not say how many it reached
            "expected": len(self.clients),
            "complete": not pending,
            "channels_incomplete": len(pending),
            "rounds": k,
            "errors": dict(errors),
            "seconds": round(time.monotonic() - t0, 3),
        }

    # Broadcasting -------------------------------------------------------------

    async def broadcast_one(self, seq: int, stats: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        t0 = now_ns()
        prefix = f"m{seq}.{t0}."
        message = prefix + "x" * max(0, self.args.size - len(prefix))
        channel = (seq - 1) % len(self.channel_names)
        target = self.channel_open[channel]
        b = self.broadcasts[seq] = Broadcast(t0, target, loop.create_future(), channel=channel)
        if b.target <= 0:
            b.done.set_result(None)
        http = asyncio.ensure_future(
            asyncio.wait_for(self.http_get(message, channel), self.args.timeout)
        )
        try:
            await asyncio.wait_for(asyncio.shield(b.done), self.args.timeout)
            stats["latency"].append((b.last - t0) / 1e6 if b.count else 0.0)
        except TimeoutError:
            stats["incomplete"] += 1
        try:
            status, body = await http
            stats["http_ms"].append((now_ns() - t0) / 1e6)
            if status != 200:
                stats["http_errors"][str(status)] += 1
            elif self.args.publish_api and b'"error"' in body:  # the API's errors are 200s
                stats["http_errors"][body[:80].decode(errors="replace")] += 1
        except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as exc:
            stats["http_errors"][type(exc).__name__] += 1

    async def broadcast_all(self) -> dict[str, Any]:
        args = self.args
        stats: dict[str, Any] = {
            "latency": [],
            "http_ms": [],
            "incomplete": 0,
            "http_errors": Counter(),
        }
        self.broadcasting = True
        deadline = time.monotonic() + args.deadline
        cpu0, t0 = cpu_time(), time.perf_counter()
        issued = 0
        tasks: list[asyncio.Task[None]] = []
        for seq in range(1, args.messages + 1):
            if time.monotonic() > deadline:
                break
            issued += 1
            if args.rate:
                delay = t0 + (seq - 1) / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(self.broadcast_one(seq, stats)))
            else:
                await self.broadcast_one(seq, stats)
        if tasks:
            await asyncio.gather(*tasks)
        wall = time.perf_counter() - t0
        cpu = cpu_time() - cpu0
        self.broadcasting = False
        healthy = [c for c in self.clients if not c.slow]
        latency = stats["latency"]
        return {
            "issued": issued,
            "complete": len(latency),
            "incomplete": stats["incomplete"],
            "http_errors": dict(stats["http_errors"]),
            "latency_ms": {
                "p50": percentile(latency, 50),
                "p99": percentile(latency, 99),
                "max": max(latency, default=None),
                "mean": sum(latency) / len(latency) if latency else None,
            },
            "latencies_ms": [round(x, 3) for x in latency],
            "http_ms": {
                "p50": percentile(stats["http_ms"], 50),
                "p99": percentile(stats["http_ms"], 99),
            },
            "delivery_mean_ms": (
                self.delivery_ns / self.delivered_total / 1e6 if self.delivered_total else None
            ),
            "deliveries": self.delivered_total,
            "broadcast_wall_s": round(wall, 3),
            "deliveries_per_s": round(self.delivered_total / wall, 1) if wall > 0 else None,
            "lost": sum(max(0, self.issued_to(c.channel, issued) - c.received) for c in healthy),
            "out_of_order": sum(c.ooo for c in healthy),
            "healthy_clients": len(healthy),
            "healthy_closed_during_run": dict(self.closed_early),
            "loadgen_cpu_s": round(cpu, 3),
            "loadgen_cpu_share": round(cpu / wall, 3) if wall > 0 else None,
        }

    async def sustained(self) -> dict[str, Any]:
        """Open loop: ``--rate`` send requests a second for ``--sustained-seconds``.

        Request k is fired at ``t0 + (k - 1) / rate`` without waiting for any
        answer; its broadcast's clock starts when it is fired (``m<k>.<ns>``). A
        request fails by its kind: ``HTTP <status>`` (not 2xx), ``timeout`` (no
        answer within ``--http-timeout``, connect included) or ``connection
        <error>``. Then every request is left to end and every broadcast not
        refused with an HTTP status to reach every client, for at most
        ``--straggler-wait`` s after the last send.
        """
        args = self.args
        loop = asyncio.get_running_loop()
        total = round(args.rate * args.sustained_seconds)
        self.histogram = [0] * (HISTOGRAM_MS + 1)
        outcome: dict[int, str | None] = {}  # seq -> None (accepted) or the failure's kind
        request_ms: list[float] = []  # accepted requests, fired to answered
        lag_ms: list[float] = []  # how late each request was fired, vs its schedule
        started = self.healthy_open

        # Every broadcast's entry exists before the first send: deliveries are counted
        # on this loop, while the requests go out from a thread with a loop of its own,
        # so a receiving loop at full CPU neither delays a send nor times out its answer.
        for seq in range(1, total + 1):
            b = self.broadcasts[seq] = Broadcast(0, self.healthy_open, loop.create_future())
            if b.target <= 0:
                b.done.set_result(None)
        sent_at: list[float] = []

        async def send(seq: int) -> None:
            t0 = now_ns()
            prefix = f"m{seq}.{t0}."
            message = prefix + "x" * max(0, args.size - len(prefix))
            self.broadcasts[seq].t0 = t0
            kind: str | None
            try:
                status, _ = await asyncio.wait_for(self.http_get(message), args.http_timeout)
            except TimeoutError:
                kind = "timeout"
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                kind = f"connection {type(exc).__name__}"
            else:
                kind = None if 200 <= status < 300 else f"HTTP {status}"
                if kind is None:
                    request_ms.append((now_ns() - t0) / 1e6)
            outcome[seq] = kind

        async def fire_all(t0: float) -> None:
            tasks: list[asyncio.Task[None]] = []
            for seq in range(1, total + 1):
                due = t0 + (seq - 1) / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                lag_ms.append(max(0.0, time.perf_counter() - due) * 1e3)
                tasks.append(asyncio.create_task(send(seq)))
            sent_at.append(time.perf_counter())
            end = sent_at[0] + args.straggler_wait
            if tasks:
                await asyncio.wait(tasks, timeout=max(0.0, end - time.perf_counter()))
            for task in tasks:  # past the straggler wait (only if --http-timeout exceeds it)
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.broadcasting = True
        cpu0, t0 = cpu_time(), time.perf_counter()
        sender = threading.Thread(target=asyncio.run, args=(fire_all(t0),), name="sender")
        sender.start()
        await loop.run_in_executor(None, sender.join)
        sent_s = sent_at[0] - t0 if sent_at else time.perf_counter() - t0
        end = t0 + sent_s + args.straggler_wait
        accepted = [seq for seq, kind in outcome.items() if kind is None]
        # Accepted broadcasts, and those whose request timed out or broke (the server
        # may deliver them anyway): not those it refused with an HTTP status.
        pending = [
            b.done
            for seq, b in self.broadcasts.items()
            if not (outcome.get(seq) or "").startswith("HTTP ")
        ]
        if pending:
            await asyncio.wait(pending, timeout=max(0.0, end - time.perf_counter()))
        wall = time.perf_counter() - t0
        cpu = cpu_time() - cpu0
        self.broadcasting = False
        unanswered = total - len(outcome)
        failed = Counter(kind for kind in outcome.values() if kind is not None)
        if unanswered:
            failed["unanswered at the end"] += unanswered
        short = [(seq, self.broadcasts[seq]) for seq in accepted]
        short = [(seq, b) for seq, b in short if b.count < b.target]
        failed_delivered = sum(  # failed or still unanswered
            self.broadcasts[seq].count
            for seq in range(1, total + 1)
            if outcome.get(seq, "unanswered") is not None and seq in self.broadcasts
        )
        healthy = [c for c in self.clients if not c.slow]
        per_client = sorted(c.received for c in healthy)
        hist = self.histogram
        return {
            "sustained": {
                "rate": args.rate,
                "seconds": args.sustained_seconds,
                "http_timeout_s": args.http_timeout,
                "straggler_wait_s": args.straggler_wait,
                "clients": started,
                "attempted": total,
                "accepted": len(accepted),
                "failed": sum(failed.values()),
                "failed_by_kind": dict(failed),
                "sent_s": round(sent_s, 3),
                "wall_s": round(wall, 3),
                "schedule_lag_ms": {
                    "p50": percentile(lag_ms, 50),
                    "p99": percentile(lag_ms, 99),
                    "max": max(lag_ms, default=None),
                },
                "request_ms": {
                    "p50": percentile(request_ms, 50),
                    "p99": percentile(request_ms, 99),
                    "max": max(request_ms, default=None),
                },
                "deliveries": self.delivered_total,
                "expected_deliveries": sum(self.broadcasts[seq].target for seq in accepted),
                # Deliveries of accepted broadcasts some client never got (by the end).
                "lost": sum(b.target - b.count for _, b in short),
                "broadcasts_not_at_all": len(short),
                "failed_but_delivered": failed_delivered,
                "out_of_order": sum(c.ooo for c in healthy),
                "per_client": {
                    "min": per_client[0] if per_client else None,
                    "median": per_client[len(per_client) // 2] if per_client else None,
                    "max": per_client[-1] if per_client else None,
                },
                "healthy_closed_during_run": dict(self.closed_early),
                "latency_ms": histogram_stats(hist),
                "loadgen_cpu_share": round(cpu / wall, 3) if wall > 0 else None,
            },
            # The keys the closed-loop phase reports that run.py reads for every row.
            "issued": total,
            "deliveries": self.delivered_total,
            "loadgen_cpu_s": round(cpu, 3),
            "loadgen_cpu_share": round(cpu / wall, 3) if wall > 0 else None,
            "broadcast_wall_s": round(wall, 3),
        }

    def issued_to(self, channel: int, issued: int) -> int:
        """Publications of the first ``issued`` that went to ``channel`` (round robin)."""
        count = len(self.channel_names)
        return issued // count + (1 if channel < issued % count else 0)

    async def drain_slow(self) -> dict[str, Any]:
        """Let the slow clients read again and see how the server left them."""
        slow = [c for c in self.clients if c.slow]
        for c in slow:
            if c.transport is not None and not c.transport.is_closing():
                c.transport.resume_reading()
        if any(c.transport is not None and not c.transport.is_closing() for c in slow):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.slow_ended.wait(), self.args.drain)
        return {
            "count": len(slow),
            "ended": dict(Counter(c.ended or "still open" for c in slow)),
            "received": [c.received for c in slow],
        }


def histogram_stats(hist: list[int]) -> dict[str, Any]:
    """p50, p99 and max of a 1 ms histogram, each as its bucket's upper edge, ms."""
    total = sum(hist)
    if not total:
        return {"p50": None, "p99": None, "max": None, "count": 0}
    found: dict[str, Any] = {"count": total}
    wants = [("p50", total * 0.5), ("p99", total * 0.99)]
    seen = 0
    for ms, n in enumerate(hist):
        seen += n
        while wants and seen >= wants[0][1]:
            found[wants.pop(0)[0]] = ms + 1
        if n:
            found["max"] = ms + 1
    return found


async def phase(name: str, wait: bool, limit: float) -> None:
    log(f"@phase {name}")
    if wait:
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), limit)


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    run = Run(args)
    keys = ("clients", "messages", "size", "sources", "slow", "rate", "protocol", "channels")
    result: dict[str, Any] = {key: getattr(args, key) for key in keys}
    cpu0 = cpu_time()
    if args.storm:
        try:
            result.update(await run.storm())
            result["loadgen_cpu_connect_s"] = round(cpu_time() - cpu0, 3)
            await phase("stormed", args.wait_stdin, args.stdin_timeout)
            result["warmup"] = await run.warmup()  # does every connected client get one?
        finally:
            for c in run.clients:
                c.goodbye()
            await asyncio.sleep(0.2)
        result["loadgen_cpu_total_s"] = round(cpu_time() - cpu0, 3)
        return result
    try:
        result.update(await run.connect_all())
        result["loadgen_cpu_dial_s"] = round(cpu_time() - cpu0, 3)
        await phase("dialed", args.wait_stdin, args.stdin_timeout)
        result["deflate"] = run.deflate_report()
        result["warmup"] = await run.warmup()
        result["loadgen_cpu_connect_s"] = round(cpu_time() - cpu0, 3)
        await phase("connected", args.wait_stdin, args.stdin_timeout)
        if args.sustained:
            result.update(await run.sustained())
        else:
            result.update(await run.broadcast_all())
        await phase("broadcast_done", args.wait_stdin, args.stdin_timeout)
        if args.slow:
            result["slow_clients"] = await run.drain_slow()
        result["deflate"] = run.deflate_report()
        result["centrifuge"] = {
            "emulation_errors": dict(run.emulation_errors),
            "pings_answered": run.pings,
            "other_frames": dict(run.other_pushes.most_common(5)),
        }
    finally:
        for c in run.clients:
            c.goodbye()
        await asyncio.sleep(0.2)
    result["loadgen_cpu_total_s"] = round(cpu_time() - cpu0, 3)
    return result


def raise_nofile() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", required=True, help="ws://127.0.0.x:PORT/ws")
    p.add_argument("--send-url", required=True, help="http://127.0.0.x:PORT/send.py")
    p.add_argument("--clients", type=int, default=1000, help="WebSocket clients (N)")
    p.add_argument("--messages", type=int, default=100, help="broadcasts (M)")
    p.add_argument("--size", type=int, default=64, help="message size, bytes")
    p.add_argument("--sources", type=int, default=4, help="source addresses 127.0.0.1..K")
    p.add_argument("--concurrency", type=int, default=64, help="handshakes in flight")
    p.add_argument("--rate", type=float, default=0.0, help="broadcasts/s (0: one at a time)")
    p.add_argument("--timeout", type=float, default=10.0, help="per broadcast, seconds")
    p.add_argument("--deadline", type=float, default=300.0, help="whole broadcast phase, s")
    p.add_argument("--connect-timeout", type=float, default=10.0, help="per connection, s")
    p.add_argument("--connect-deadline", type=float, default=180.0, help="connect phase, s")
    p.add_argument("--warmup-deadline", type=float, default=30.0, help="warm-up phase, s")
    p.add_argument(
        "--count-wait",
        type=float,
        default=0.5,
        help="pause between warm-ups once delivered but the server's count is short, s",
    )
    p.add_argument("--slow", type=int, default=0, help="clients that stop reading (S)")
    p.add_argument("--drain", type=float, default=5.0, help="time for slow clients to end, s")
    p.add_argument(
        "--offer-deflate",
        action="store_true",
        help="offer permessage-deflate as Chromium does; inflate RSV1 frames if accepted",
    )
    p.add_argument(
        "--protocol",
        choices=(
            "raw",
            "centrifuge",
            "centrifuge-protobuf",
            "centrifuge-http-stream",
            "pusher",
            "mercure",
        ),
        default="raw",
        help="raw: every message is a publication; centrifuge: connect + subscribe, pub pushes "
        "(JSON; protobuf over WebSocket; JSON over HTTP streaming, see clients.py); pusher: "
        "protocol 7, subscribe, channel events; mercure: an SSE subscription (protocols.py)",
    )
    p.add_argument(
        "--emulation-path",
        default="/emulation",
        help="centrifuge-http-stream: where commands after connect are POSTed",
    )
    p.add_argument("--token", default="", help="Centrifuge connection token (none: anonymous)")
    p.add_argument(
        "--channel",
        default="default",
        help="channel a Centrifuge or Pusher client subscribes to (a Mercure client's topic)",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=0,
        help="C > 0: client i joins bench<i %% C>, publication k goes to bench<(k-1) %% C>",
    )
    p.add_argument(
        "--publish-api",
        default="",
        metavar="KEY",
        help="publish with the server API (POST --send-url, X-API-Key KEY), not GET",
    )
    p.add_argument(
        "--no-count",
        action="store_true",
        help="the send URL says no 'Sent to N': the warm-up ends once every client got one",
    )
    p.add_argument(
        "--storm",
        action="store_true",
        help="dial all clients at once (no cap, no retry, --connect-timeout each), "
        "check with one warm-up, no broadcasts",
    )
    p.add_argument(
        "--sustained",
        action="store_true",
        help="open loop: --rate requests/s for --sustained-seconds, none waiting for another",
    )
    p.add_argument("--sustained-seconds", type=float, default=60.0, help="--sustained: for, s")
    p.add_argument(
        "--http-timeout", type=float, default=15.0, help="--sustained: per send request, s"
    )
    p.add_argument(
        "--straggler-wait",
        type=float,
        default=30.0,
        help="--sustained: after the last send, wait at most this for answers and deliveries, s",
    )
    p.add_argument("--wait-stdin", action="store_true", help="wait for a line after phases")
    p.add_argument("--stdin-timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 1 <= args.sources <= 254:
        p.error("--sources must be 1..254")
    if not 0 <= args.slow <= args.clients or args.clients < 1 or args.messages < 0:
        p.error("need --clients >= 1, 0 <= --slow <= --clients, --messages >= 0")
    if args.sustained and (args.rate <= 0 or args.sustained_seconds <= 0 or args.channels):
        p.error("--sustained needs --rate > 0 and --sustained-seconds > 0, and no --channels")
    if args.channels < 0 or (args.channels and not args.publish_api):
        p.error("--channels needs --publish-api (send.py publishes to one channel only)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit = raise_nofile()
    if limit < args.clients + 100:
        log(f"loadgen: warning: RLIMIT_NOFILE hard limit {limit} < clients + 100")
    try:
        import uvloop

        runner: Any = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(main_async(args))
    result["event_loop"] = "uvloop" if runner is not asyncio.run else "asyncio"
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
