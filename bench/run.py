"""Benchmark realtime against the naive design and the ``websockets`` library.

    python bench/run.py [--clients 1000,5000,10000] [--messages M] [--size BYTES] [--quick]

For every server and client count it starts the server pinned to CPU 0 on a free
127.0.0.1 port, runs ``bench/loadgen.py`` pinned to CPU 1, samples the server's CPU
time and RSS from /proc around the phases, and prints Markdown tables; then the
slow-client scenario against realtime. Raw JSON goes to ``bench/results/``.
Besides the two baselines, realtime runs with one of its choices changed at a time
(``realtime-uvloop``, ``realtime-plain``, ``realtime-deflate``) and with clients
that offer permessage-deflate (``realtime+offer``), so one run shows what each pays.

The ``realtime-centrifuge`` row is the same server with Centrifuge-protocol clients
(``/connection/websocket``, connect with a token + subscribe), set against the raw
``realtime`` row of the same run in the "Centrifuge protocol vs raw /ws" table;
``realtime-centrifuge-protobuf`` (the protobuf codec) and
``realtime-centrifuge-http-stream`` (HTTP streaming with ``/emulation``) are set
against it in "Centrifuge codecs and transports" (issue 21's targets).
``realtime-pusher`` (Pusher protocol 7 clients, as pusher-js) and
``realtime-mercure`` (Mercure SSE subscribers, as EventSource) are set against the
raw row in "Pusher and Mercure vs raw /ws" (issue 22's targets). The
channels scenario puts 10,000 clients in 1,000 channels of 10 and publishes to one
channel at a time, against a server holding only 10 clients (``--channels 0`` skips it).

The anchors (``go-seed``, the seed's design in Go with gorilla/websocket, built here
with Debian's Go; ``py-floor``, bare asyncio protocols) come from ``--anchors``
(default ``../shared/anchors`` beside the repository) and join the fan-out table as
baselines, with the issue 9 targets judged against them. The reconnect storm
(``--storm 10000``; ``--storm 0`` skips it) dials every client at once, with no cap
and no retry, against each server of ``STORM_ROWS`` in ``--servers``.

Sustained publishing (``--sustained 10,20``; off by default): for each rate, a fresh
server of ``SUSTAINED_ROWS`` in ``--servers`` with ``--sustained-clients`` clients, and
send requests fired open loop at that rate for ``--sustained-seconds``, each with a
client timeout; ``--clients 0`` leaves the fan-out rows out.

Then the multi-process scenario: it starts ``redis-server`` on a free loopback port
(pinned to CPU 0 with the server) and runs realtime with the memory broker, with the
Redis broker, and with two workers on the Redis broker: three interleaved rounds at
100 clients (where the Redis hop shows), then 10,000 (``--skip-redis`` leaves it out).
See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import json
import os
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import protocols

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_BOUND = 0.9
OTHER_BUSY = 0.15
HAS_SCHEDSTAT = Path("/proc/self/schedstat").exists()
#: Log lines of a Redis-broker server that mention these are counted in its notes.
BROKER_WORDS = ("redis", "broker")
#: HMAC secret the Centrifuge rows start the server with (32 bytes: no short-key warning).
TOKEN_SECRET = "bench-secret-0123456789abcdef0123"
#: Server API key of the channels scenario (it publishes with POST /api/publish).
API_KEY = "bench-api-key"


def hs256_token(secret: str, claims: dict[str, Any]) -> str:
    """A JWT signed with HS256, as PyJWT's ``jwt.encode(claims, secret, "HS256")``."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    def part(value: dict[str, Any]) -> bytes:
        return b64(json.dumps(value, separators=(",", ":")).encode())

    signing = part({"alg": "HS256", "typ": "JWT"}) + b"." + part(claims)
    signature = hmac.new(secret.encode(), signing, hashlib.sha256).digest()
    return (signing + b"." + b64(signature)).decode()


#: One connection token every Centrifuge client of a run reuses.
TOKEN = hs256_token(TOKEN_SECRET, {"sub": "bench-user"})
#: The Pusher app of the Pusher row: the first (only) app, so its channel names are
#: the bus's and send.py's broadcast to ``default`` reaches its ``default`` subscribers.
PUSHER_APP = ("bench", "bench-key", "bench-pusher-secret-0123456789abcdef")
#: The Mercure row's JWT key: it turns the hub on; its subscribers are anonymous.
MERCURE_KEY = "bench-mercure-key-0123456789abcdef0123"


@dataclass(frozen=True)
class Server:
    """One row name: which program serves, with which flags, for which clients."""

    name: str
    program: str  # "realtime", or a script in bench/servers/
    what: str
    flags: tuple[str, ...] = ()  # added to the server's command line
    loadgen: tuple[str, ...] = ()  # added to loadgen's command line
    redis: bool = False  # add --broker redis://... (the Redis run.py started)
    workers: int = 1  # server processes (--workers) the flags ask for
    path: str = "/ws"  # where the load generator's clients connect
    send: str = "/send.py"  # where it broadcasts (GET ?message=)
    fanout: bool = True  # a row of the fan-out table (False: the storm only)

    @property
    def wants_uvloop(self) -> bool:
        """realtime's loop is asyncio unless its flags say ``--loop uvloop``."""
        return "uvloop" in self.flags


#: Channel rules for the history row: top-level channels as by default, keeping history.
HISTORY_CHANNELS = json.dumps(
    {
        "without_namespace": {
            "allow_subscribe_for_client": True,
            "allow_subscribe_for_anonymous": True,
            "history_size": 1000,
            "history_ttl": "300s",
        }
    }
)
SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("realtime", "realtime", "defaults: fast path, asyncio loop, no deflate"),
        Server(
            "realtime+offer",
            "realtime",
            "defaults; clients offer permessage-deflate (declined)",
            loadgen=("--offer-deflate",),
        ),
        Server("realtime-uvloop", "realtime", "uvloop's loop, not asyncio's", ("--loop", "uvloop")),
        Server(
            "realtime-plain",
            "realtime",
            "no fast path: ASGI websocket.send per client",
            ("--no-fast-path",),
        ),
        Server(
            "realtime-deflate",
            "realtime",
            "permessage-deflate accepted (clients offer it)",
            ("--compression",),
            ("--offer-deflate",),
        ),
        Server(
            "realtime-centrifuge",
            "realtime",
            "Centrifuge protocol v2 clients (JSON): connect with a token, subscribe",
            ("--token-hmac-secret", TOKEN_SECRET, "--client-ping-interval", "0"),
            ("--protocol", "centrifuge", "--token", TOKEN),
            path="/connection/websocket",
        ),
        Server(
            "realtime-centrifuge-protobuf",
            "realtime",
            "Centrifuge clients as realtime-centrifuge's, protobuf codec (centrifuge-protobuf)",
            ("--token-hmac-secret", TOKEN_SECRET, "--client-ping-interval", "0"),
            ("--protocol", "centrifuge-protobuf", "--token", TOKEN),
            path="/connection/websocket",
        ),
        Server(
            "realtime-centrifuge-http-stream",
            "realtime",
            "Centrifuge clients as realtime-centrifuge's, over HTTP streaming (JSON, /emulation)",
            ("--token-hmac-secret", TOKEN_SECRET, "--client-ping-interval", "0"),
            ("--protocol", "centrifuge-http-stream", "--token", TOKEN),
            path="/connection/http_stream",
        ),
        Server(
            "realtime-pusher",
            "realtime",
            "Pusher protocol 7 clients (as pusher-js): subscribe to a public channel",
            (
                *("--pusher-app-id", PUSHER_APP[0], "--pusher-app-key", PUSHER_APP[1]),
                *("--pusher-app-secret", PUSHER_APP[2]),
            ),
            ("--protocol", "pusher"),
            path=protocols.pusher_path(PUSHER_APP[1]),
        ),
        Server(
            "realtime-mercure",
            "realtime",
            "Mercure SSE subscribers (as EventSource), anonymous, one topic",
            (
                *("--mercure-jwt-key", MERCURE_KEY, "--mercure-anonymous"),
                # send.py's broadcast() is a "foreign" update: public, to reach anonymous.
                *("--mercure-foreign-updates", "public"),
            ),
            ("--protocol", "mercure"),
            path="/.well-known/mercure",
        ),
        Server("naive", "naive", "baseline: Quart, for ws in clients: await ws.send"),
        Server("websockets_lib", "websockets_lib", "baseline: websockets library broadcast()"),
        Server(
            "go-seed",
            "go-seed",
            "anchor: the seed's design in Go (gorilla/websocket, writes under one lock)",
            loadgen=("--no-count",),
            send="/send.php",
        ),
        Server(
            "py-floor",
            "py-floor",
            "anchor: bare asyncio protocols, one transport.write per client",
            loadgen=("--no-count",),
        ),
        Server(
            "realtime-backlog100",
            "realtime",
            "realtime with --backlog 100 (Hypercorn's listen backlog before --backlog)",
            ("--backlog", "100"),
            fanout=False,
        ),
        Server(
            "realtime-gc700",
            "realtime",
            "realtime with --gc-threshold 0 (Python's garbage-collector threshold, 700)",
            ("--gc-threshold", "0"),
        ),
        # The multi-process scenario (not in --servers): realtime above is its memory row.
        Server(
            "realtime-redis",
            "realtime",
            "1 worker, Redis broker",
            redis=True,
        ),
        Server(
            "realtime-redis-history",
            "realtime",
            "1 worker, Redis broker, the channel keeps history (a Redis stream, 1,000 kept)",
            ("--channel", HISTORY_CHANNELS),
            redis=True,
        ),
        Server(
            "realtime-redis-2w",
            "realtime",
            "2 workers (one port, SO_REUSEPORT), Redis broker",
            ("--workers", "2"),
            redis=True,
            workers=2,
        ),
    )
}
#: Rows of the fan-out table (what --servers chooses from).
SELECTABLE = tuple(name for name, spec in SERVERS.items() if not spec.redis)
FANOUT = tuple(name for name in SELECTABLE if SERVERS[name].fanout)
BASELINES = ("naive", "websockets_lib", "go-seed", "py-floor")
#: Rows of the reconnect storm (those of them in --servers), in the table's order.
STORM_ROWS = (
    "realtime", "go-seed", "realtime-backlog100", "realtime-gc700", "websockets_lib", "py-floor",
)  # fmt: skip
#: Rows of the sustained-publishing scenario (those of them in --servers), in order.
SUSTAINED_ROWS = ("realtime", "go-seed", "websockets_lib", "py-floor")
#: Issue 9, sustained: at these rates realtime's p99 at most this many times go-seed's.
SUSTAINED_P99_RATES = (10.0,)
SUSTAINED_P99_RATIO = 1.5
#: Issue 9's targets for realtime (same client count and run).
ISSUE9_KB = 12.0  # memory per connection at most this, and below go-seed's and websockets'
#: Where the anchors are, unless --anchors says: ../shared/anchors beside the repository.
ANCHORS = ROOT.parent / "shared" / "anchors"
#: Debian's packages the go-seed row is built with (offline, GOPATH mode).
GO_PACKAGES = "golang-go golang-github-gorilla-websocket-dev"
GO_PATH = "/usr/share/gocode"
#: Rows set against ``realtime`` in "what each idea pays".
VARIANTS = ("realtime-uvloop", "realtime-plain", "realtime-deflate", "realtime+offer")
#: Rows of the channels scenario (those of them in --servers).
CHANNEL_ROWS = ("realtime", "realtime-centrifuge")
#: The issue's targets for the Centrifuge row against the raw row (same client count).
CENTRIFUGE_CPU_RATIO = 1.15  # CPU per delivery at most this many times raw's
CENTRIFUGE_EXTRA_KB = 4.0  # memory per connection at most raw's + this
CENTRIFUGE_CONNECT_RATIO = 0.8  # connect-and-subscribe rate at least this much of raw's
#: Issue 21: each row's CPU per delivery at most this many times realtime-centrifuge's
#: (JSON over WebSocket) at the same client count; the issue asks it at 10,000 clients
#: for protobuf and at 5,000 for HTTP streaming.
CODEC_ROWS = {
    "realtime-centrifuge-protobuf": ("protobuf codec, WebSocket", 1.0),
    "realtime-centrifuge-http-stream": ("JSON codec, HTTP streaming", 1.3),
}
#: Issue 22: each row's CPU per delivery at most this many times raw /ws's (``realtime``)
#: and its memory per connection at most raw's + this, at the same client count.
PROTOCOL_ROWS = {
    "realtime-pusher": "Pusher protocol 7, WebSocket",
    "realtime-mercure": "Mercure, SSE (HTTP/1.1 stream)",
}
PROTOCOL_CPU_RATIO = 1.2
PROTOCOL_EXTRA_KB = 4.0
#: A publication to one of many channels costs at most this many times a broadcast
#: on a server holding only that channel's clients.
CHANNEL_CPU_RATIO = 2.0
#: Rows of the multi-process scenario; the first (memory broker) is the reference.
MULTI = ("realtime", "realtime-redis", "realtime-redis-history", "realtime-redis-2w")
#: Issue 8: CPU per delivery with history over Redis at most this many times without.
HISTORY_CPU_RATIO = 1.15
#: Issue 8: the server's own time per recovery, p99, at most this (ms)...
RECOVERY_P99_MS = 10.0
#: ...and idle presence upkeep at most this share of one core.
PRESENCE_UPKEEP_SHARE = 0.05
#: Channels of the recovery scenario: feed:* keeps history and forces recovery.
RECOVERY_CHANNELS = json.dumps(
    {
        "namespaces": [
            {
                "name": "feed",
                "allow_subscribe_for_client": True,
                "history_size": 1000,
                "history_ttl": "600s",
                "force_recovery": True,
            }
        ]
    }
)
#: Channels of the presence scenario: top-level channels with presence, or without.
PRESENCE_CHANNELS = {
    on: json.dumps(
        {
            "without_namespace": {"allow_subscribe_for_client": True}
            | ({"presence": True, "join_leave": True} if on else {})
        }
    )
    for on in (True, False)
}
#: The drop-in script the recovery scenario reads the node's recovery times from.
RECOVERY_TIMES_SCRIPT = """\
from realtime import current_host
from realtime_centrifuge.plugin import get_node

response.json(list(get_node(current_host()).recovery_times))
"""


def anchor(anchors: Path, *parts: str) -> Path:
    """A file of the anchors folder, or a RuntimeError (the row's error) saying what is missing."""
    path = anchors.joinpath(*parts)
    if not path.is_file():
        raise RuntimeError(
            f"anchor {path} not found (--anchors DIR: the folder holding go-seed/ and py-floor/)"
        )
    return path


def go_seed(anchors: Path) -> Path:
    """The go-seed binary, built from a copy of ``anchors/go-seed`` with Debian's Go.

    Built once per source (its SHA-256 names the build) under bench/results/anchors/,
    in GOPATH mode against Debian's gorilla/websocket: offline, no module proxy.
    """
    source = anchor(anchors, "go-seed", "main.go")
    go = shutil.which("go")
    if go is None or not Path(GO_PATH, "src", "github.com", "gorilla", "websocket").is_dir():
        raise RuntimeError(f"go-seed not built: Go not installed (apt-get install {GO_PACKAGES})")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    out = RESULTS / "anchors" / f"go-seed-{digest}"
    binary = out / "go-seed"
    if binary.exists():
        return binary
    work = out / "src"
    shutil.rmtree(out, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy2(source, work / "main.go")
    env = dict(os.environ, GO111MODULE="off", GOPATH=GO_PATH, GOFLAGS="")
    env["GOCACHE"] = str(RESULTS / "anchors" / "go-cache")
    print(f"--> building go-seed in {out.relative_to(ROOT)}", file=sys.stderr, flush=True)
    done = subprocess.run(
        [go, "build", "-o", str(binary), "."],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0 or not binary.exists():
        shutil.rmtree(out, ignore_errors=True)
        raise RuntimeError(f"go-seed build failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return binary


def go_version() -> str | None:
    go = shutil.which("go")
    if go is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        cmd = [go, "version"]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    return None


def realtime_command(bind: str, app: Path = ROOT / "app") -> list[str]:
    """``realtime run`` on ``bind`` as every row runs it (add the row's flags)."""
    exe = Path(sys.executable).with_name("realtime")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "realtime"]
    cmd += ["run", "--bind", bind, "--app", str(app), "--log-level", "warning"]
    # The load generator opens thousands of clients from a few loopback addresses.
    return [*cmd, "--max-connections-per-ip", "0"]


def server_command(
    name: str,
    bind: str,
    redis_url: str | None = None,
    api: bool = False,
    anchors: Path = ANCHORS,
) -> list[str]:
    spec = SERVERS[name]
    if spec.program == "go-seed":
        return [str(go_seed(anchors)), "-addr", bind, *spec.flags]
    if spec.program == "py-floor":
        port = bind.rpartition(":")[2]  # it listens on 127.0.0.1 only
        script = anchor(anchors, "py-floor", "server.py")
        return [sys.executable, str(script), "--port", port, *spec.flags]
    if spec.program == "realtime":
        cmd = realtime_command(bind)
        if api:
            cmd += ["--api-key", API_KEY]
    else:
        cmd = [sys.executable, str(BENCH / "servers" / f"{spec.program}.py"), "--bind", bind]
    if spec.redis:
        if redis_url is None:
            raise RuntimeError(f"{name} needs the Redis server run.py starts")
        cmd += ["--broker", redis_url]
    return [*cmd, *spec.flags]


# /proc sampling -----------------------------------------------------------------


def family(pid: int) -> list[int]:
    """``pid`` and its live descendants."""
    pids, i = [pid], 0
    while i < len(pids) and i < 10_000:
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            with contextlib.suppress(OSError):
                pids += [int(c) for c in (task / "children").read_text().split()]
        i += 1
    return pids


def ticks_cpu(pid: int) -> float:
    """utime + stime of the process (all its threads, exited ones too), in 10 ms ticks."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def exact_cpu(pid: int) -> float:
    """Time on CPU of the process's live threads, in ns (``/proc/PID/task/*/schedstat``)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just exited
            total += int((task / "schedstat").read_text().split()[0])
    return total / 1e9


def cpu_by_process(pid: int, exact: bool = True) -> dict[int, float]:
    """CPU seconds of ``pid`` and each live descendant.

    ``exact``: from schedstat (nanoseconds; a thread that exits takes its time with it,
    and neither realtime nor redis-server ends threads while broadcasting), or
    utime + stime where schedstat is missing or ``exact`` is false.
    """
    found = {}
    for p in family(pid):
        with contextlib.suppress(OSError):
            found[p] = exact_cpu(p) if exact and HAS_SCHEDSTAT else ticks_cpu(p)
    return found


def cpu_seconds(pid: int, exact: bool = True) -> float:
    return sum(cpu_by_process(pid, exact).values())


def open_fds(pid: int) -> int | None:
    with contextlib.suppress(OSError):
        return len(os.listdir(f"/proc/{pid}/fd"))
    return None


def listeners(port: int) -> int:
    """Sockets in LISTEN on 127.0.0.1:``port`` (one per worker with SO_REUSEPORT)."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return 0
    return sum(1 for line in lines if line.split()[1:2] == [want] and line.split()[3] == "0A")


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine, from the first line of /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait


def uvloop_loaded(pid: int) -> list[bool]:
    """For ``pid`` and each descendant it could read: is uvloop's extension mapped in?"""
    found = []
    for p in family(pid):
        with contextlib.suppress(OSError):
            found.append("/uvloop/" in Path(f"/proc/{p}/maps").read_text())
    return found


def rss_kb(pid: int) -> int:
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


# Processes --------------------------------------------------------------------


def pinned(cpu: int) -> list[str]:
    if shutil.which("taskset") and cpu in os.sched_getaffinity(0):
        return ["taskset", "-c", str(cpu)]
    print(f"warning: cannot pin to CPU {cpu}; running unpinned", file=sys.stderr)
    return []


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for ``proc``, then SIGKILL it."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)
            return


@contextlib.contextmanager
def started(cmd: list[str], **kw: Any) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(cmd, start_new_session=True, text=True, **kw)
    try:
        yield proc
    finally:
        stop(proc)


def wait_listening(
    port: int, proc: subprocess.Popen[Any], limit: float = 20.0, sockets: int = 1
) -> None:
    """Until the port takes connections and ``sockets`` listen on it (one per worker)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            if sockets <= 1 or listeners(port) >= sockets:
                return
        time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} ({sockets} socket(s)) after {limit}s")


# Redis ----------------------------------------------------------------------------


def redis_command(port: int, *args: str, timeout: float = 5.0) -> bytes:
    """One command to the Redis on 127.0.0.1:``port``: its reply (simple or bulk)."""
    request = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        request += b"$%d\r\n%s\r\n" % (len(data), data)
    with socket.create_connection((HOST, port), timeout) as sock:
        sock.sendall(request)
        reply = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError(f"redis closed the connection after {reply[:80]!r}")
            reply += chunk
            head, sep, rest = reply.partition(b"\r\n")
            if not sep:
                continue
            if head[:1] == b"-":
                raise OSError(f"redis answered {head.decode(errors='replace')}")
            if head[:1] != b"$":
                return head[1:]
            size = int(head[1:])
            if size < 0:
                return b""
            if len(rest) >= size + 2:
                return rest[:size]


def redis_info(port: int) -> dict[str, str]:
    """``INFO`` as a flat dict (``{}`` if Redis does not answer)."""
    try:
        text = redis_command(port, "INFO", "all").decode(errors="replace")
    except OSError:
        return {}
    info = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and not key.startswith("#"):
            info[key] = value
    return info


REDIS_COUNTERS = (
    "total_error_replies",
    "rejected_connections",
    "total_connections_received",
    "total_commands_processed",
)


def redis_counters(port: int) -> dict[str, int]:
    """The INFO counters that would show trouble, and the work done."""
    info = redis_info(port)
    return {k: int(info[k]) for k in REDIS_COUNTERS if k in info and info[k].isdigit()}


HANDSHAKE_PROBE = """
import asyncio, sys
from redis.asyncio import Redis

async def main() -> None:
    client = Redis.from_url(sys.argv[1])
    await client.ping()
    await client.aclose()

asyncio.run(main())
"""


def handshake_errors(port: int) -> int | None:
    """Error replies one redis-py connection gets while it connects (None: unknown).

    redis-py tries commands at connect that an older Redis refuses, and ignores the
    refusals (redis-py 8 on Redis 7.0: ``CLIENT SETINFO`` twice, ``CLIENT
    MAINT_NOTIFICATIONS``); they are told apart from real errors by this count.
    """
    before = redis_counters(port).get("total_error_replies")
    cmd = [sys.executable, "-c", HANDSHAKE_PROBE, f"redis://{HOST}:{port}/0"]
    try:
        subprocess.run(cmd, capture_output=True, timeout=20, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    after = redis_counters(port).get("total_error_replies")
    return after - before if after is not None and before is not None else None


@dataclass
class RedisServer:
    proc: subprocess.Popen[str]
    port: int
    version: str
    handshake_errors: int | None  # error replies a redis-py client gets per connection

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"


@contextlib.contextmanager
def redis_server(logdir: Path) -> Iterator[RedisServer]:
    """Debian's redis-server on a free loopback port, pinned to CPU 0, no persistence."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    port = free_port()
    with (
        tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir,
        (logdir / "redis.log").open("w") as log,
    ):
        cmd = [*pinned(0), exe, "--bind", HOST, "--port", str(port), "--save", ""]
        cmd += ["--appendonly", "no", "--dir", workdir, "--daemonize", "no"]
        with started(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL) as proc:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    code = proc.returncode
                    raise RuntimeError(f"redis-server exited with {code}; see {log.name}")
                with contextlib.suppress(OSError):
                    if redis_command(port, "PING", timeout=1) == b"PONG":
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server not answering on {port} after 10 s")
                time.sleep(0.1)
            version = redis_info(port).get("redis_version", "?")
            print(f"--> redis-server {version} on {HOST}:{port}", file=sys.stderr, flush=True)
            yield RedisServer(proc, port, version, handshake_errors(port))


class Reader:
    """Drains a pipe in a thread: ``@phase NAME`` lines are queued, others kept or logged."""

    def __init__(self, stream: IO[str], log: IO[str] | None = None) -> None:
        self.phases: queue.Queue[str] = queue.Queue()
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._pump, args=(stream, log), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str], log: IO[str] | None) -> None:
        for line in stream:
            if line.startswith("@phase "):
                self.phases.put(line.split()[1])
            elif log is not None:
                log.write(line)
            else:
                self.lines.append(line)
        self.phases.put("eof")

    def wait(self, name: str, limit: float, alive: Callable[[], bool]) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if not alive():
                raise RuntimeError(f"server died while waiting for phase {name!r}")
            with contextlib.suppress(queue.Empty):
                got = self.phases.get(timeout=0.5)
                if got == name:
                    return
                if got == "eof":
                    raise RuntimeError(f"loadgen ended before phase {name!r}")
        raise RuntimeError(f"no phase {name!r} within {limit:.0f}s")


def measure(
    tag: str,
    server: str,
    clients: int,
    opts: argparse.Namespace,
    *,
    messages: int,
    size: int,
    slow: int,
    redis: RedisServer | None = None,
    channels: int = 0,
    sustained: float = 0.0,
) -> dict[str, Any]:
    """One server (its processes) and one loadgen run: loadgen's JSON plus server samples.

    With ``redis``, the server's CPU figures include redis-server's (also reported
    on their own), and Redis is emptied first so no count is left from a row before.
    With ``channels``, the clients are spread over that many channels and every
    publication goes to one of them through the server API (``--api-key``).
    With ``sustained`` (a rate), the load generator publishes open loop at that
    rate for ``--sustained-seconds`` (``loadgen.py --sustained``) instead.
    """
    spec = SERVERS[server]
    if spec.redis and redis is None:
        raise RuntimeError(f"{server} needs the Redis server (none running)")
    redis = redis if spec.redis else None
    port = free_port()
    bind = f"{HOST}:{port}"
    command = server_command(
        server, bind, redis.url if redis else None, api=bool(channels), anchors=opts.anchors
    )
    # Per row: the working tree may change while a run goes on (baselines do not use it).
    code = git_state()[0] if spec.program == "realtime" else None
    counters0: dict[str, int] = {}
    if redis is not None:
        redis_command(redis.port, "FLUSHALL")
        counters0 = redis_counters(redis.port)  # from before the server starts
    print(f"--> {tag}: {clients} clients, {messages} x {size} B", file=sys.stderr, flush=True)
    loadgen = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        f"--url=ws://{bind}{spec.path}",
        f"--send-url=http://{bind}" + ("/api/publish" if channels else spec.send),
        f"--clients={clients}",
        f"--messages={messages}",
        f"--size={size}",
        f"--slow={slow}",
        f"--timeout={opts.timeout}",
        f"--deadline={opts.deadline}",
        "--wait-stdin",
        *spec.loadgen,
    ]
    if channels:
        loadgen += [f"--channels={channels}", f"--publish-api={API_KEY}"]
    done_limit = opts.deadline + 2 * opts.timeout + 30
    if sustained:
        loadgen += ["--sustained", f"--rate={sustained}"]
        loadgen += [f"--sustained-seconds={opts.sustained_seconds}"]
        loadgen += [f"--http-timeout={opts.http_timeout}"]
        loadgen += [f"--straggler-wait={opts.straggler_wait}"]
        done_limit = opts.sustained_seconds + opts.straggler_wait + opts.http_timeout + 60
    with contextlib.ExitStack() as stack:
        slog = stack.enter_context((opts.logdir / f"{tag}.server.log").open("w"))
        llog = stack.enter_context((opts.logdir / f"{tag}.loadgen.log").open("w"))
        readers: list[Reader] = []  # joined once loadgen is gone, before its log closes

        @stack.callback
        def join_readers() -> None:
            for reader in readers:
                reader.thread.join(5)

        srv = stack.enter_context(
            started([*pinned(0), *command], stdout=slog, stderr=slog, cwd=ROOT)
        )
        wait_listening(port, srv, sockets=spec.workers)
        time.sleep(0.5)
        rss_idle = rss_kb(srv.pid)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        dial_cpu0 = cpu_seconds(srv.pid)
        gen = stack.enter_context(started([*pinned(1), *loadgen], cwd=ROOT, **pipes))
        assert gen.stdin is not None
        assert gen.stdout is not None
        assert gen.stderr is not None
        err, out = Reader(gen.stderr, llog), Reader(gen.stdout)
        readers += [err, out]

        def alive() -> bool:
            return srv.poll() is None

        # The server's CPU for the dials alone (handshakes, and for Centrifuge clients
        # connect and subscribe): what it could sustain were the load generator faster.
        err.wait("dialed", 300.0 + 2 * opts.timeout, alive)
        dial_cpu = cpu_seconds(srv.pid) - dial_cpu0
        gen.stdin.write("go\n")
        gen.stdin.flush()
        err.wait("connected", 300.0 + 2 * opts.timeout, alive)
        procs0, rss_connected = cpu_by_process(srv.pid), rss_kb(srv.pid)
        ticks0 = cpu_seconds(srv.pid, exact=False)
        fds = {pid: open_fds(pid) for pid in procs0}
        uvloop = uvloop_loaded(srv.pid)
        redis0 = cpu_seconds(redis.proc.pid) if redis else 0.0
        redis_ticks0 = cpu_seconds(redis.proc.pid, exact=False) if redis else 0.0
        busy0, wall0 = machine_busy(), time.monotonic()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        err.wait("broadcast_done", done_limit, alive)
        procs1, rss_after = cpu_by_process(srv.pid), rss_kb(srv.pid)
        ticks1 = cpu_seconds(srv.pid, exact=False)
        redis1 = cpu_seconds(redis.proc.pid) if redis else 0.0
        redis_ticks1 = cpu_seconds(redis.proc.pid, exact=False) if redis else 0.0
        busy, wall = machine_busy() - busy0, time.monotonic() - wall0
        counters1 = redis_counters(redis.port) if redis else {}
        if redis is not None and redis.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {redis.proc.returncode} during the run")
        gen.stdin.write("go\n")
        gen.stdin.close()
        gen.wait(60)
        out.thread.join(10)
        if gen.returncode != 0:
            raise RuntimeError(f"loadgen exited with {gen.returncode}; see {llog.name}")
        result: dict[str, Any] = json.loads("".join(out.lines))
    deliveries, connected = result["deliveries"], result["connected"]
    # Processes present at both samples (a worker replaced meanwhile would show in notes).
    by_process = {pid: procs1[pid] - procs0[pid] for pid in procs0 if pid in procs1}
    tree_cpu, redis_cpu = sum(by_process.values()), redis1 - redis0
    server_cpu = tree_cpu + redis_cpu
    log_lines = Path(slog.name).read_text(errors="replace").splitlines()
    redis_delta = {k: counters1.get(k, 0) - v for k, v in counters0.items()}
    redis_unexplained = None
    if redis is not None and redis.handshake_errors is not None and redis_delta:
        # Connections made meanwhile, less the one that read counters1.
        made = max(0, redis_delta.get("total_connections_received", 0) - 1)
        errors = redis_delta.get("total_error_replies", 0)
        redis_unexplained = max(0, errors - made * redis.handshake_errors)
    result.update(
        server=server,
        realtime_state=code,
        server_command=command,
        loadgen_flags=list(spec.loadgen),
        server_uvloop_by_process=uvloop,
        server_uvloop_loaded=any(uvloop) if uvloop else None,
        server_processes={"connected": len(procs0), "after": len(procs1)},
        server_fds_by_process=[fds[pid] for pid in procs0],
        server_cpu_by_process_s=[round(v, 3) for v in by_process.values()],
        cpu_clock="schedstat ns" if HAS_SCHEDSTAT else "utime+stime ticks",
        server_tree_cpu_s=round(tree_cpu, 4),
        redis_cpu_s=round(redis_cpu, 4) if redis else None,
        # The same in utime + stime (10 ms ticks, exited threads included), as a check.
        ticks_cpu_s={
            "server": round(ticks1 - ticks0, 3),
            "redis": round(redis_ticks1 - redis_ticks0, 3) if redis else None,
        },
        # The server's processes and, with the Redis broker, redis-server.
        server_cpu_s=round(server_cpu, 4),
        server_cpu_us_per_delivery=server_cpu * 1e6 / deliveries if deliveries else None,
        server_cpu_us_per_publication=(
            server_cpu * 1e6 / result["issued"] if result.get("issued") else None
        ),
        redis_cpu_us_per_delivery=(redis_cpu * 1e6 / deliveries if redis and deliveries else None),
        # From FLUSHALL to the end of the broadcasts (the server's start-up included).
        redis_counters=redis_delta,
        redis_unexplained_errors=redis_unexplained,
        broker_log_lines=sum(
            1 for line in log_lines if any(w in line.lower() for w in BROKER_WORDS)
        ),
        server_log_lines=len(log_lines),
        rss_kb={"idle": rss_idle, "connected": rss_connected, "after": rss_after},
        kb_per_connection=(rss_connected - rss_idle) / connected if connected else None,
        server_cpu_us_per_connect=dial_cpu * 1e6 / connected if connected else None,
        rss_growth_mb=(rss_after - rss_connected) / 1024,
        loadgen_bound=(result.get("loadgen_cpu_share") or 0) >= LOADGEN_BOUND,
        # CPU used by anything else on the machine while broadcasting: noise in the figures.
        other_cpu_share=round((busy - server_cpu - result["loadgen_cpu_s"]) / wall, 3),
    )
    if sustained:
        result["server_cpu_share"] = round(server_cpu / wall, 3) if wall > 0 else None
        result["sampled_wall_s"] = round(wall, 3)
        result["server_log_top"] = log_summary(log_lines)
    return result


def log_summary(lines: list[str], top: int = 8) -> list[tuple[str, int]]:
    """The server log's most frequent lines, digits masked (``#``), with their counts."""
    masked = Counter(
        "".join("#" if ch.isdigit() else ch for ch in line.strip())[:200]
        for line in lines
        if line.strip()
    )
    return masked.most_common(top)


def measure_storm(tag: str, server: str, clients: int, opts: argparse.Namespace) -> dict[str, Any]:
    """A reconnect storm: ``clients`` dials at once against a fresh server.

    The server's CPU time and RSS are read once it listens (idle) and once every
    dial ended (``@phase stormed``): the CPU is what the storm cost it, start-up
    excluded. Then one warm-up checks that every connected client gets a broadcast.
    """
    spec = SERVERS[server]
    port = free_port()
    bind = f"{HOST}:{port}"
    command = server_command(server, bind, anchors=opts.anchors)
    code = git_state()[0] if spec.program == "realtime" else None
    print(f"--> {tag}: {clients} clients dialing at once", file=sys.stderr, flush=True)
    loadgen = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        f"--url=ws://{bind}{spec.path}",
        f"--send-url=http://{bind}{spec.send}",
        f"--clients={clients}",
        "--storm",
        f"--connect-timeout={opts.storm_timeout}",
        f"--timeout={opts.timeout}",
        "--wait-stdin",
        *spec.loadgen,
    ]
    with contextlib.ExitStack() as stack:
        slog = stack.enter_context((opts.logdir / f"{tag}.server.log").open("w"))
        llog = stack.enter_context((opts.logdir / f"{tag}.loadgen.log").open("w"))
        readers: list[Reader] = []

        @stack.callback
        def join_readers() -> None:
            for reader in readers:
                reader.thread.join(5)

        srv = stack.enter_context(
            started([*pinned(0), *command], stdout=slog, stderr=slog, cwd=ROOT)
        )
        wait_listening(port, srv, sockets=spec.workers)
        time.sleep(0.5)
        backlog = listen_backlog(port)
        rss_idle, cpu0 = rss_kb(srv.pid), cpu_seconds(srv.pid)
        busy0, wall0 = machine_busy(), time.monotonic()
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        gen = stack.enter_context(started([*pinned(1), *loadgen], cwd=ROOT, **pipes))
        assert gen.stdin is not None
        assert gen.stdout is not None
        assert gen.stderr is not None
        err, out = Reader(gen.stderr, llog), Reader(gen.stdout)
        readers += [err, out]
        err.wait("stormed", 60.0 + 2 * opts.storm_timeout, lambda: srv.poll() is None)
        cpu1, rss_connected = cpu_seconds(srv.pid), rss_kb(srv.pid)
        loadgen_cpu = cpu_seconds(gen.pid)  # all of it since it started: its start-up too
        busy, wall = machine_busy() - busy0, time.monotonic() - wall0
        fds = open_fds(srv.pid)
        gen.stdin.write("go\n")
        gen.stdin.close()
        gen.wait(120)
        out.thread.join(10)
        if gen.returncode != 0:
            raise RuntimeError(f"loadgen exited with {gen.returncode}; see {llog.name}")
        result: dict[str, Any] = json.loads("".join(out.lines))
    connected = result["connected"]
    server_cpu = cpu1 - cpu0
    # The load generator's CPU over the storm itself (its start-up left out).
    storm_cpu, storm_s = result.get("loadgen_cpu_connect_s"), result.get("connect_s")
    share = storm_cpu / storm_s if storm_cpu is not None and storm_s else None
    result.update(
        server=server,
        realtime_state=code,
        server_command=command,
        loadgen_flags=list(spec.loadgen),
        listen_backlog=backlog,
        loadgen_cpu_s=round(loadgen_cpu, 3),
        # From the first dial to the end of the last: at 90 % the storm was its limit.
        loadgen_cpu_share=round(share, 3) if share is not None else None,
        loadgen_bound=(share or 0) >= LOADGEN_BOUND,
        server_fds=fds,
        # From idle to the end of the storm (the load generator's start-up included).
        server_cpu_s=round(server_cpu, 4),
        server_cpu_us_per_connection=server_cpu * 1e6 / connected if connected else None,
        rss_kb={"idle": rss_idle, "connected": rss_connected},
        kb_per_connection=(rss_connected - rss_idle) / connected if connected else None,
        other_cpu_share=round((busy - server_cpu - loadgen_cpu) / wall, 3) if wall > 0 else None,
    )
    return result


def measure_streams(
    tag: str, scenario: str, opts: argparse.Namespace, flags: list[str], redis: RedisServer | None
) -> dict[str, Any]:
    """Issue 8's scenarios (``bench/streams.py``): ``recovery`` samples the server's
    CPU over the clients' return; ``presence`` over ``--presence-idle`` seconds of
    connected, idle clients (redis-server's included with ``redis``)."""
    port = free_port()
    bind = f"{HOST}:{port}"
    app = opts.logdir / "streams-app"
    app.mkdir(exist_ok=True)
    (app / "recovery_times.py").write_text(RECOVERY_TIMES_SCRIPT)
    command = [*realtime_command(bind, app), "--api-key", API_KEY, "--token-hmac-secret",
               TOKEN_SECRET, "--client-ping-interval", "0", *flags]  # fmt: skip
    if redis is not None:
        command += ["--broker", redis.url]
        redis_command(redis.port, "FLUSHALL")
    driver = [sys.executable, str(BENCH / "streams.py"), scenario,
              f"--url=ws://{bind}/connection/websocket", f"--http=http://{bind}",
              f"--secret={TOKEN_SECRET}", f"--api-key={API_KEY}"]  # fmt: skip
    if scenario == "recovery":
        driver += [f"--clients={opts.recovery}", f"--behind={opts.recovery_behind}"]
    else:
        driver += [f"--clients={opts.presence}", f"--channels={opts.presence_channels}"]
    print(f"--> {tag}", file=sys.stderr, flush=True)
    with contextlib.ExitStack() as stack:
        slog = stack.enter_context((opts.logdir / f"{tag}.server.log").open("w"))
        llog = stack.enter_context((opts.logdir / f"{tag}.driver.log").open("w"))
        srv = stack.enter_context(
            started([*pinned(0), *command], stdout=slog, stderr=slog, cwd=ROOT)
        )
        wait_listening(port, srv)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        gen = stack.enter_context(started([*pinned(1), *driver], cwd=ROOT, **pipes))
        assert gen.stdin is not None
        assert gen.stdout is not None
        assert gen.stderr is not None
        err, out = Reader(gen.stderr, llog), Reader(gen.stdout)

        def alive() -> bool:
            return srv.poll() is None

        def cpu() -> float:
            return cpu_seconds(srv.pid) + (cpu_seconds(redis.proc.pid) if redis else 0.0)

        err.wait("away" if scenario == "recovery" else "connected", 600.0, alive)
        cpu0, busy0, wall0 = cpu(), machine_busy(), time.monotonic()
        if scenario == "recovery":
            gen.stdin.write("go\n")
            gen.stdin.flush()
            err.wait("recovered", 600.0, alive)
        else:
            time.sleep(opts.presence_idle)
        cpu1, busy, wall = cpu(), machine_busy() - busy0, time.monotonic() - wall0
        driver_cpu = cpu_seconds(gen.pid)
        gen.stdin.write("go\n")
        gen.stdin.close()
        gen.wait(300)
        out.thread.join(10)
        err.thread.join(5)
        if gen.returncode != 0:
            raise RuntimeError(f"streams.py exited with {gen.returncode}; see {llog.name}")
        result: dict[str, Any] = json.loads("".join(out.lines))
    server_cpu = cpu1 - cpu0
    result.update(
        scenario=scenario,
        broker="redis" if redis else "memory",
        flags=flags,
        realtime_state=git_state()[0],
        server_cpu_s=round(server_cpu, 4),
        window_s=round(wall, 3),
        server_cpu_share=round(server_cpu / wall, 4) if wall > 0 else None,
        other_cpu_share=round((busy - server_cpu) / wall, 3) if wall > 0 else None,
        driver_cpu_s=round(driver_cpu, 3),
    )
    return result


def streams_tables(results: list[dict[str, Any]]) -> str:
    """Issue 8's recovery and presence rows."""
    text = ""
    recoveries = [r for r in results if r.get("scenario") == "recovery"]
    if recoveries:
        header = ["broker", "clients", "behind", "recovered", "wrong / failed", "all back in",
                  "server CPU per recovery", "server time p50 / p99 / max",
                  f"p99 <= {RECOVERY_P99_MS:g} ms"]  # fmt: skip
        rows = []
        for r in recoveries:
            if "error" in r:
                rows.append([r.get("broker", "?"), "error: " + r["error"]] + [""] * 7)
                continue
            ms = r["server_ms"]
            per = r["server_cpu_s"] * 1000 / r["clients"] if r["clients"] else None
            rows.append(
                [
                    r["broker"], str(r["clients"]), str(r["behind"]), str(r["recovered"]),
                    f"{r['wrong']} / {r['failed'] + r['failed_first']}", f"{r['back_s']:.2f} s",
                    f"{fmt(per, 2)} ms",
                    f"{fmt(ms['p50'], 2)} / {fmt(ms['p99'], 2)} / {fmt(ms['max'], 2)} ms",
                    met(ms["p99"] is not None and ms["p99"] <= RECOVERY_P99_MS
                        and r["recovered"] == r["clients"]),
                ]
            )  # fmt: skip
        text += "Recovery: clients back at once, each --recovery-behind publications behind\n\n"
        text += table(header, rows)
    presences = [r for r in results if r.get("scenario") == "presence"]
    if presences:
        on = next((r for r in presences if r.get("presence_on") and "error" not in r), None)
        off = next((r for r in presences if not r.get("presence_on") and "error" not in r), None)
        header = ["presence", "broker", "clients", "channels", "idle window",
                  "server + redis CPU", "presence_stats right", "lost while idle"]  # fmt: skip
        rows = []
        for r in presences:
            if "error" in r:
                rows.append(["on" if r.get("presence_on") else "off", "error: " + r["error"]]
                            + [""] * 6)  # fmt: skip
                continue
            rows.append(
                [
                    "on" if r["presence_on"] else "off", r["broker"], str(r["connected"]),
                    str(r["channels"]), f"{r['window_s']:.0f} s",
                    f"{r['server_cpu_share'] * 100:.2f} % of a core",
                    str(r["presence_right"]) if r["presence_on"] else "n/a (108)",
                    str(r["lost_while_idle"]),
                ]
            )  # fmt: skip
        text += ("\n\n" if text else "") + "Presence upkeep: connected clients, idle\n\n"
        text += table(header, rows)
        if on is not None and off is not None:
            upkeep = on["server_cpu_share"] - off["server_cpu_share"]
            ok = upkeep <= PRESENCE_UPKEEP_SHARE and bool(on["presence_right"])
            text += (
                f"\npresence upkeep (on - off): {upkeep * 100:.2f} % of a core; "
                f"target <= {PRESENCE_UPKEEP_SHARE:.0%}: {met(ok)}\n"
            )
    return text


def somaxconn() -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int(Path("/proc/sys/net/core/somaxconn").read_text())
    return None


def listen_backlog(port: int) -> int | None:
    """The accept queue's size of the socket listening on 127.0.0.1:``port``.

    ``ss`` shows it as the Send-Q of a LISTEN socket: the backlog the server gave
    listen(), capped by net.core.somaxconn (None: ss missing or no such socket).
    """
    ss = shutil.which("ss")
    if ss is None:
        return None
    with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError, IndexError):
        cmd = [ss, "-ltnH", f"sport = :{port}"]
        lines = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
        return int(lines.split()[2])
    return None


def git_state() -> tuple[str, list[str]]:
    """The commit the realtime server ran from, and its files with local changes."""

    def git(*args: str) -> str:
        cmd = ["git", "-C", str(ROOT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        head = git("rev-parse", "--short", "HEAD").strip()
        dirty = git("status", "--porcelain", "--", "host", "plugins", "app").strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown commit", []
    state = f"commit {head}" + (" + uncommitted changes in host/plugins/app" if dirty else "")
    return state, dirty.splitlines()


# Tables -----------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def ratio(a: Any, b: Any) -> str:
    return (
        f"{a / b:.2f}x" if isinstance(a, int | float) and isinstance(b, int | float) and b else "-"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def notes(r: dict[str, Any]) -> str:
    found = []
    if r.get("loadgen_bound"):
        found.append("loadgen-bound")
    if (r.get("other_cpu_share") or 0) >= OTHER_BUSY:
        found.append(f"machine busy: other processes used {r['other_cpu_share']:.0%} of a CPU")
    if r.get("incomplete"):
        found.append(f"{r['incomplete']} timed out")
    if r.get("connected", 0) < r.get("clients", 0):
        found.append(f"{r['clients'] - r['connected']} failed to connect")
    if r.get("http_errors"):
        found.append(f"http errors {r['http_errors']}")
    if r.get("healthy_closed_during_run"):
        found.append(f"closed {r['healthy_closed_during_run']}")
    warm = r.get("warmup", {})
    if warm and warm.get("server_count") is None:  # through the API, or an anchor: no count
        if not warm.get("complete"):
            channels = warm.get("channels_incomplete")
            found.append("warm-up incomplete" + (f" in {channels} channels" if channels else ""))
    elif warm and warm.get("server_count") != warm.get("expected"):
        found.append(f"server counted {warm.get('server_count')}")
    other = (r.get("centrifuge") or {}).get("other_frames")
    if other:
        found.append(f"unexpected protocol frames {sum(other.values())}")
    emulation = (r.get("centrifuge") or {}).get("emulation_errors")
    if emulation:
        found.append(f"emulation requests failed {emulation}")
    spec = SERVERS.get(r.get("server", ""))
    if spec is not None and spec.program == "realtime":
        # realtime's default loop is asyncio: uvloop must be mapped into none of its
        # processes, unless --loop uvloop asks for it, and then into all of them.
        loops: list[bool] = r.get("server_uvloop_by_process") or []
        odd = sum(1 for loaded in loops if loaded != spec.wants_uvloop)
        if odd:
            what = "uvloop not loaded" if spec.wants_uvloop else "uvloop loaded"
            found.append(what + (f" in {odd} of {len(loops)} processes" if len(loops) > 1 else ""))
        procs = r.get("server_processes") or {}
        want = spec.workers + 1 if spec.workers > 1 else 1
        if procs and (procs.get("connected") != want or procs.get("after") != want):
            seen = f"{procs.get('connected')} then {procs.get('after')}"
            found.append(f"{seen} processes, not {want}")
    if spec is not None and spec.redis:
        counters = r.get("redis_counters") or {}
        unexplained = r.get("redis_unexplained_errors")
        if unexplained is None and counters.get("total_error_replies"):
            found.append(f"redis error replies {counters['total_error_replies']}")
        elif unexplained:
            found.append(f"redis error replies {unexplained} (besides connection handshakes)")
        if counters.get("rejected_connections"):
            found.append(f"redis rejected_connections {counters['rejected_connections']}")
        if r.get("broker_log_lines"):
            found.append(f"{r['broker_log_lines']} broker lines in the server log")
    deflate = r.get("deflate") or {}
    if deflate.get("offered") or deflate.get("negotiated"):
        found.append(f"deflate negotiated by {deflate['negotiated']:,} of {deflate['of']:,}")
    if r.get("busy_attempts"):
        found.append(f"run {len(r['busy_attempts']) + 1} (earlier machine busy)")
    if (r.get("rounds") or 1) > 1:
        found.append(f"round {r['round']} of {r['rounds']}")
    return "; ".join(found)


def main_tables(results: list[dict[str, Any]]) -> str:
    header = ["server", "clients", "conn/s", "CPU µs/connect", "p50 ms", "p99 ms"]
    header += ["deliveries/s", "lost", "ooo", "CPU µs/delivery", "KB/conn", "loadgen CPU", "notes"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], fmt(r["clients"]), *["-"] * 10, f"error: {r['error']}"])
            continue
        rows.append(
            [
                r["server"],
                fmt(r["clients"]),
                fmt(r["connect_rate"], 0),
                fmt(r.get("server_cpu_us_per_connect"), 0),
                fmt(r["latency_ms"]["p50"], 2),
                fmt(r["latency_ms"]["p99"], 2),
                fmt(r["deliveries_per_s"], 0),
                fmt(r["lost"]),
                fmt(r["out_of_order"]),
                fmt(r["server_cpu_us_per_delivery"], 1),
                fmt(r["kb_per_connection"], 1),
                f"{r['loadgen_cpu_share']:.0%}" if r.get("loadgen_cpu_share") is not None else "-",
                notes(r),
            ]
        )
    out = ["### Fan-out", "", table(header, rows)]
    ok = {(r["server"], r["clients"]): r for r in results if "error" not in r}
    header = ["clients", "realtime vs", "deliveries/s", "p50", "p99", "CPU/delivery", "KB/conn"]
    header.append("conn/s")
    rows = []
    for n in sorted({r["clients"] for r in results}):
        mine = ok.get(("realtime", n))
        for base in BASELINES:
            other = ok.get((base, n))
            if mine is None or other is None:
                continue
            rows.append(
                [
                    fmt(n),
                    base,
                    ratio(mine["deliveries_per_s"], other["deliveries_per_s"]),
                    ratio(mine["latency_ms"]["p50"], other["latency_ms"]["p50"]),
                    ratio(mine["latency_ms"]["p99"], other["latency_ms"]["p99"]),
                    ratio(mine["server_cpu_us_per_delivery"], other["server_cpu_us_per_delivery"]),
                    ratio(mine["kb_per_connection"], other["kb_per_connection"]),
                    ratio(mine["connect_rate"], other["connect_rate"]),
                ]
            )
    if rows:
        out += ["", "### Ratios (realtime / baseline)", "", table(header, rows)]
    if rows := issue9_rows(ok):
        header = ["clients", "KB/conn", "conn/s (64 in flight)", "CPU µs/delivery"]
        out += ["", "### Issue 9 targets (realtime vs the anchors, same run)", ""]
        out.append(table(header, rows))
    if rows := pays_rows(ok):
        header = ["clients", "realtime vs", "what differs", "CPU µs/delivery", "KB/conn"]
        header += ["p99 ms", "conn/s"]
        out += ["", "### What each idea pays (realtime vs variant, ratio)", ""]
        out.append(table(header, rows))
    if rows := centrifuge_rows(ok):
        header = ["clients", "CPU µs/delivery", "KB/conn", "conn/s", "p50 ms", "p99 ms"]
        out += ["", "### Centrifuge protocol vs raw /ws (realtime-centrifuge vs realtime)", ""]
        out.append(table(header, rows))
    if rows := codec_rows(ok):
        header = ["clients", "row", "codec, transport", "CPU µs/delivery", "KB/conn"]
        header += ["CPU µs/connect", "p50 ms", "p99 ms", "lost"]
        out += ["", "### Centrifuge codecs and transports (row vs realtime-centrifuge)", ""]
        out.append(table(header, rows))
    if rows := protocol_rows(ok):
        header = ["clients", "row", "protocol, transport", "CPU µs/delivery", "KB/conn"]
        header += ["CPU µs/connect", "p50 ms", "p99 ms", "lost"]
        out += ["", "### Pusher and Mercure vs raw /ws (row vs realtime)", ""]
        out.append(table(header, rows))
    return "\n".join(out)


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def issue9_rows(ok: dict[tuple[str, int], dict[str, Any]]) -> list[list[str]]:
    """realtime against go-seed and websockets_lib, with issue 9's targets judged.

    KB/conn at most 12 and below both; conn/s at least websockets_lib's (go-seed's is
    the aim, shown); CPU per delivery at most go-seed's.
    """
    rows = []
    for n in sorted({clients for _, clients in ok}):
        mine, go, lib = (
            ok.get(("realtime", n)),
            ok.get(("go-seed", n)),
            ok.get(("websockets_lib", n)),
        )
        if mine is None or (go is None and lib is None):
            continue

        def get(r: dict[str, Any] | None, key: str) -> Any:
            return None if r is None else r.get(key)

        kb, kb_go, kb_lib = (get(r, "kb_per_connection") for r in (mine, go, lib))
        others = [v for v in (kb_go, kb_lib) if v is not None]
        good = kb is not None and kb <= ISSUE9_KB and all(kb < v for v in others)
        complete = go is not None and lib is not None
        verdict = met(good) if complete or not good else "unjudged (an anchor row is missing)"
        kb_cell = (
            f"{fmt(kb, 1)}; go-seed {fmt(kb_go, 1)}, websockets_lib {fmt(kb_lib, 1)}: "
            f"≤ {ISSUE9_KB:.0f} and below both {verdict}"
        )
        rate, rate_go, rate_lib = (get(r, "connect_rate") for r in (mine, go, lib))
        if rate_lib is None:
            rate_cell = f"{fmt(rate, 0)}; websockets_lib -"
        else:
            good = rate is not None and rate >= rate_lib
            rate_cell = f"{versus(rate, rate_lib, 0)} websockets_lib: ≥ 1x {met(good)}"
        if rate_go is not None:
            rate_cell += f"; go-seed {fmt(rate_go, 0)} ({ratio(rate, rate_go)}, the aim)"
        cpu, cpu_go = get(mine, "server_cpu_us_per_delivery"), get(go, "server_cpu_us_per_delivery")
        if cpu_go is None:
            cpu_cell = f"{fmt(cpu, 1)}; go-seed -"
        else:
            good = cpu is not None and cpu <= cpu_go
            cpu_cell = f"{versus(cpu, cpu_go, 1)} go-seed: ≤ 1x {met(good)}"
        rows.append([fmt(n), kb_cell, rate_cell, cpu_cell])
    return rows


def storm_table(results: list[dict[str, Any]]) -> str:
    """The reconnect storm: how every dial ended, and how long until all were in."""
    header = ["server", "dials", "listen backlog", "connected", "timed out", "refused/reset"]
    header += ["other errors", "all connected s", "vs go-seed", "last failure s"]
    header += ["handshake p50 ms", "p99 ms", "server CPU s", "CPU µs/conn", "KB/conn"]
    header += ["broadcast reached all", "loadgen CPU", "notes"]
    go = next((r for r in results if r["server"] == "go-seed" and "error" not in r), None)
    go_all = (go or {}).get("storm", {}).get("all_connected_s")
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], fmt(r["clients"]), *["-"] * 15, f"error: {r['error']}"])
            continue
        st = r["storm"]
        warm = r.get("warmup") or {}
        count = warm.get("server_count")
        reached = "yes" if warm.get("complete") else "**no**"
        if count is not None and count != warm.get("expected"):
            reached += f" (server counted {fmt(count)})"
        found = ["loadgen-bound"] if r.get("loadgen_bound") else []
        if st["errors"]:
            found.append("; ".join(f"{k}: {v}" for k, v in st["errors"].items()))
        if (r.get("other_cpu_share") or 0) >= OTHER_BUSY:
            found.append(f"machine busy: other processes used {r['other_cpu_share']:.0%} of a CPU")
        all_s = st["all_connected_s"]
        rows.append(
            [
                r["server"],
                fmt(st["dials"]),
                fmt(r.get("listen_backlog")),
                fmt(st["connected"]),
                fmt(st["timed_out"]),
                fmt(st["refused_reset"]),
                fmt(st["other"]),
                fmt(all_s, 2)
                if all_s is not None
                else f"- (last in at {st['last_connected_s']:.2f})",
                ratio(all_s, go_all) if r["server"] != "go-seed" else "",
                fmt(st["last_failure_s"], 2),
                fmt(st["handshake_ms"]["p50"], 0),
                fmt(st["handshake_ms"]["p99"], 0),
                fmt(r["server_cpu_s"], 2),
                fmt(r["server_cpu_us_per_connection"], 0),
                fmt(r["kb_per_connection"], 1),
                reached,
                f"{r['loadgen_cpu_share']:.0%}" if r.get("loadgen_cpu_share") is not None else "-",
                "; ".join(found),
            ]
        )
    title = f"### Reconnect storm (every client dials at once, no retry; somaxconn {somaxconn()})"
    return "\n".join([title, "", table(header, rows)])


def sustained_table(results: list[dict[str, Any]]) -> str:
    """Open-loop publishing: what was accepted, failed, lost, and how late it arrived."""
    header = ["server", "rate/s", "clients", "attempted", "accepted", "failed", "lost"]
    header += ["failed but delivered", "per client min / median / max"]
    header += ["p50 ms", "p99 ms", "max ms", "p99 vs go-seed", "send p50 ms", "send p99 ms"]
    header += ["server CPU", "RSS growth MB", "loadgen CPU", "issue 9 target", "notes"]
    go = {
        r["rate"]: r["sustained"] for r in results if r["server"] == "go-seed" and "error" not in r
    }
    rows = []
    for r in results:
        if "error" in r:
            cells = [r["server"], fmt(r["rate"]), fmt(r["clients"]), *["-"] * 16]
            rows.append([*cells, f"error: {r['error']}"])
            continue
        st = r["sustained"]
        lat = st["latency_ms"]
        go_p99 = (go.get(r["rate"]) or {}).get("latency_ms", {}).get("p99")
        failed = fmt(st["failed"])
        if st["failed_by_kind"]:
            failed += " (" + ", ".join(f"{k}: {v:,}" for k, v in st["failed_by_kind"].items()) + ")"
        pc = st["per_client"]
        target = ""
        if r["server"] == "realtime":
            clean = st["failed"] == 0 and st["lost"] == 0
            target = f"none failed or lost {met(clean)}"
            if r["rate"] in SUSTAINED_P99_RATES:
                good = go_p99 is not None and lat["p99"] is not None
                good = good and lat["p99"] <= SUSTAINED_P99_RATIO * go_p99
                verdict = met(good) if go_p99 is not None else "unjudged (no go-seed row)"
                target += f"; p99 ≤ {SUSTAINED_P99_RATIO}x go-seed's {verdict}"
        found = []
        if (st.get("loadgen_cpu_share") or 0) >= LOADGEN_BOUND:
            found.append("loadgen-bound")
        lag = st["schedule_lag_ms"]["max"]
        if lag is not None and lag >= 100:
            found.append(f"sends up to {lag:,.0f} ms late on schedule")
        if st["broadcasts_not_at_all"]:
            found.append(f"{st['broadcasts_not_at_all']:,} accepted broadcasts not at every client")
        if st["out_of_order"]:
            found.append(f"{st['out_of_order']:,} out of order")
        if st["healthy_closed_during_run"]:
            found.append(f"closed {st['healthy_closed_during_run']}")
        if r.get("connected", 0) < r.get("clients", 0):
            found.append(f"{r['clients'] - r['connected']} failed to connect")
        if (r.get("other_cpu_share") or 0) >= OTHER_BUSY:
            found.append(f"machine busy: other processes used {r['other_cpu_share']:.0%} of a CPU")
        if r.get("busy_attempts"):
            found.append(f"run {len(r['busy_attempts']) + 1} (earlier machine busy)")
        share = r.get("server_cpu_share")
        rows.append(
            [
                r["server"],
                fmt(r["rate"]),
                fmt(st["clients"]),
                fmt(st["attempted"]),
                fmt(st["accepted"]),
                failed,
                fmt(st["lost"]),
                fmt(st["failed_but_delivered"]),
                f"{fmt(pc['min'])} / {fmt(pc['median'])} / {fmt(pc['max'])}",
                fmt(lat["p50"]),
                fmt(lat["p99"]),
                fmt(lat["max"]),
                ratio(lat["p99"], go_p99) if r["server"] != "go-seed" else "",
                fmt(st["request_ms"]["p50"], 1),
                fmt(st["request_ms"]["p99"], 1),
                f"{share:.0%}" if share is not None else "-",
                fmt(r["rss_growth_mb"], 1),
                f"{st['loadgen_cpu_share']:.0%}"
                if st.get("loadgen_cpu_share") is not None
                else "-",
                target,
                "; ".join(found),
            ]
        )
    title = "### Sustained publishing (open loop; latency from send to each delivery, 1 ms buckets)"
    return "\n".join([title, "", table(header, rows)])


def centrifuge_rows(ok: dict[tuple[str, int], dict[str, Any]]) -> list[list[str]]:
    """The issue's three targets, each with the figures, the ratio and met / missed."""
    rows = []
    for n in sorted({clients for _, clients in ok}):
        raw, cf = ok.get(("realtime", n)), ok.get(("realtime-centrifuge", n))
        if raw is None or cf is None:
            continue
        cells = [fmt(n)]
        a, b = cf["server_cpu_us_per_delivery"], raw["server_cpu_us_per_delivery"]
        good = a is not None and b is not None and a <= CENTRIFUGE_CPU_RATIO * b
        cells.append(f"{versus(a, b, 1)}: ≤ {CENTRIFUGE_CPU_RATIO:.2f}x {met(good)}")
        a, b = cf["kb_per_connection"], raw["kb_per_connection"]
        good = a is not None and b is not None and a <= b + CENTRIFUGE_EXTRA_KB
        extra = f"{a - b:+.1f} KB" if a is not None and b is not None else "-"
        cells.append(
            f"{fmt(a, 1)} vs {fmt(b, 1)} ({extra}): ≤ +{CENTRIFUGE_EXTRA_KB:.0f} KB {met(good)}"
        )
        a, b = cf["connect_rate"], raw["connect_rate"]
        good = a is not None and b is not None and a >= CENTRIFUGE_CONNECT_RATIO * b
        cell = f"{versus(a, b, 0)}: ≥ {CENTRIFUGE_CONNECT_RATIO:.2f}x {met(good)}"
        if cf.get("loadgen_bound") or raw.get("loadgen_bound"):
            # The rate is the load generator's then; the server's CPU per connect says
            # how many it could take: its inverse, against raw's.
            a, b = cf.get("server_cpu_us_per_connect"), raw.get("server_cpu_us_per_connect")
            if a and b:
                good = b / a >= CENTRIFUGE_CONNECT_RATIO
                cell += (
                    f" (loadgen-bound); server CPU per connect {a:,.0f} vs {b:,.0f} µs, "
                    f"capacity {b / a:.2f}x: {met(good)}"
                )
        cells.append(cell)
        cells.append(versus(cf["latency_ms"]["p50"], raw["latency_ms"]["p50"], 2))
        cells.append(versus(cf["latency_ms"]["p99"], raw["latency_ms"]["p99"], 2))
        rows.append(cells)
    return rows


def codec_rows(ok: dict[tuple[str, int], dict[str, Any]]) -> list[list[str]]:
    """Issue 21: each codec or transport row against JSON over WebSocket, same run and count.

    CPU per delivery is the target (``CODEC_ROWS``), judged met or missed; the rest
    is there to read it by (a loss or a failed client would make the CPU figure cheap).
    """
    rows = []
    for n in sorted({clients for _, clients in ok}):
        json_row = ok.get(("realtime-centrifuge", n))
        for name, (what, limit) in CODEC_ROWS.items():
            row = ok.get((name, n))
            if row is None or json_row is None:
                continue
            a, b = row["server_cpu_us_per_delivery"], json_row["server_cpu_us_per_delivery"]
            good = a is not None and b is not None and a <= limit * b
            whole = row["lost"] == 0 and row["connected"] == row["clients"]
            cpu = f"{versus(a, b, 2)}: ≤ {limit:.2f}x {met(good)}"
            if not whole:
                cpu += " (not every delivery made: see lost)"
            rows.append(
                [
                    fmt(n),
                    name,
                    what,
                    cpu,
                    versus(row["kb_per_connection"], json_row["kb_per_connection"], 1),
                    versus(
                        row.get("server_cpu_us_per_connect"),
                        json_row.get("server_cpu_us_per_connect"),
                        0,
                    ),
                    versus(row["latency_ms"]["p50"], json_row["latency_ms"]["p50"], 2),
                    versus(row["latency_ms"]["p99"], json_row["latency_ms"]["p99"], 2),
                    f"{fmt(row['lost'])} vs {fmt(json_row['lost'])}",
                ]
            )
    return rows


def protocol_rows(ok: dict[tuple[str, int], dict[str, Any]]) -> list[list[str]]:
    """Issue 22: the Pusher and Mercure rows against raw /ws, same run and client count.

    Two targets, each judged met or missed: CPU per delivery at most
    ``PROTOCOL_CPU_RATIO`` times raw's, KB per connection at most raw's +
    ``PROTOCOL_EXTRA_KB``; the rest is there to read them by.
    """
    rows = []
    for n in sorted({clients for _, clients in ok}):
        raw = ok.get(("realtime", n))
        for name, what in PROTOCOL_ROWS.items():
            row = ok.get((name, n))
            if row is None or raw is None:
                continue
            a, b = row["server_cpu_us_per_delivery"], raw["server_cpu_us_per_delivery"]
            good = a is not None and b is not None and a <= PROTOCOL_CPU_RATIO * b
            cpu = f"{versus(a, b, 2)}: ≤ {PROTOCOL_CPU_RATIO:.2f}x {met(good)}"
            if not (row["lost"] == 0 and row["connected"] == row["clients"]):
                cpu += " (not every delivery made: see lost)"
            a, b = row["kb_per_connection"], raw["kb_per_connection"]
            good = a is not None and b is not None and a <= b + PROTOCOL_EXTRA_KB
            extra = f"{a - b:+.1f} KB" if a is not None and b is not None else "-"
            memory = f"{fmt(a, 1)} vs {fmt(b, 1)} ({extra}): ≤ +{PROTOCOL_EXTRA_KB:.0f} KB"
            rows.append(
                [
                    fmt(n),
                    name,
                    what,
                    cpu,
                    f"{memory} {met(good)}",
                    versus(
                        row.get("server_cpu_us_per_connect"),
                        raw.get("server_cpu_us_per_connect"),
                        0,
                    ),
                    versus(row["latency_ms"]["p50"], raw["latency_ms"]["p50"], 2),
                    versus(row["latency_ms"]["p99"], raw["latency_ms"]["p99"], 2),
                    f"{fmt(row['lost'])} vs {fmt(raw['lost'])}",
                ]
            )
    return rows


def channels_tables(results: list[dict[str, Any]]) -> str:
    """Publications to one of many channels, against a server holding only one channel."""
    header = ["server", "clients", "channels", "per channel", "publications", "conn/s"]
    header += ["p50 ms", "p99 ms", "lost", "ooo", "CPU µs/publication", "CPU µs/delivery"]
    header += ["KB/conn", "loadgen CPU", "notes"]
    rows = []
    for r in results:
        per = r["clients"] // max(1, r["channels"])
        if "error" in r:
            head = [r["server"], fmt(r["clients"]), fmt(r["channels"]), fmt(per)]
            rows.append([*head, *["-"] * 10, f"error: {r['error']}"])
            continue
        rows.append(
            [
                r["server"],
                fmt(r["clients"]),
                fmt(r["channels"]),
                fmt(per),
                fmt(r["issued"]),
                fmt(r["connect_rate"], 0),
                fmt(r["latency_ms"]["p50"], 2),
                fmt(r["latency_ms"]["p99"], 2),
                fmt(r["lost"]),
                fmt(r["out_of_order"]),
                fmt(r["server_cpu_us_per_publication"], 1),
                fmt(r["server_cpu_us_per_delivery"], 1),
                fmt(r["kb_per_connection"], 1),
                f"{r['loadgen_cpu_share']:.0%}" if r.get("loadgen_cpu_share") is not None else "-",
                notes(r),
            ]
        )
    out = ["### Channels (publications through POST /api/publish, one channel each)", ""]
    out.append(table(header, rows))
    ok = [r for r in results if "error" not in r]
    versus_rows = []
    for big in ok:
        if big["channels"] <= 1:
            continue
        per = big["clients"] // big["channels"]
        small = next(
            (
                r
                for r in ok
                if r["server"] == big["server"] and r["channels"] == 1 and r["clients"] == per
            ),
            None,
        )
        if small is None:
            continue
        a, b = big["server_cpu_us_per_publication"], small["server_cpu_us_per_publication"]
        good = a is not None and b is not None and a <= CHANNEL_CPU_RATIO * b
        versus_rows.append(
            [
                big["server"],
                f"{fmt(big['clients'])} in {fmt(big['channels'])} x {fmt(per)} vs {fmt(per)}",
                f"{versus(a, b, 1)}: ≤ {CHANNEL_CPU_RATIO:.1f}x {met(good)}",
                versus(big["latency_ms"]["p50"], small["latency_ms"]["p50"], 2),
                versus(big["latency_ms"]["p99"], small["latency_ms"]["p99"], 2),
            ]
        )
    if versus_rows:
        header = ["server", "clients", "CPU µs/publication", "p50 ms", "p99 ms"]
        out += ["", "### A publication to one of many channels vs a server holding only it", ""]
        out.append(table(header, versus_rows))
    return "\n".join(out)


def versus(mine: Any, other: Any, digits: int) -> str:
    """``mine vs other (mine/other)``, as the fan-out table prints them."""
    return f"{fmt(mine, digits)} vs {fmt(other, digits)} ({ratio(mine, other)})"


def pays_rows(ok: dict[tuple[str, int], dict[str, Any]]) -> list[list[str]]:
    rows = []
    for n in sorted({clients for _, clients in ok}):
        mine = ok.get(("realtime", n))
        for name in VARIANTS:
            other = ok.get((name, n))
            if mine is None or other is None:
                continue
            rows.append(
                [
                    fmt(n),
                    name,
                    SERVERS[name].what,
                    versus(
                        mine["server_cpu_us_per_delivery"], other["server_cpu_us_per_delivery"], 1
                    ),
                    versus(mine["kb_per_connection"], other["kb_per_connection"], 1),
                    versus(mine["latency_ms"]["p99"], other["latency_ms"]["p99"], 2),
                    versus(mine["connect_rate"], other["connect_rate"], 0),
                ]
            )
    return rows


def multi_tables(results: list[dict[str, Any]]) -> str:
    """The multi-process scenario: its rows, each against the memory row, the Redis hop."""
    header = ["server", "clients", "workers", "broker", "conn/s", "p50 ms", "p99 ms"]
    header += ["deliveries/s", "lost", "ooo", "CPU µs/delivery", "of which redis", "KB/conn"]
    header += ["loadgen CPU", "notes"]
    rows = []
    for r in results:
        spec = SERVERS[r["server"]]
        broker = "redis" if spec.redis else "memory"
        if "error" in r:
            rows.append(
                [r["server"], fmt(r["clients"]), fmt(spec.workers), broker]
                + ["-"] * 10
                + [f"error: {r['error']}"]
            )
            continue
        rows.append(
            [
                r["server"],
                fmt(r["clients"]),
                fmt(spec.workers),
                broker,
                fmt(r["connect_rate"], 0),
                fmt(r["latency_ms"]["p50"], 2),
                fmt(r["latency_ms"]["p99"], 2),
                fmt(r["deliveries_per_s"], 0),
                fmt(r["lost"]),
                fmt(r["out_of_order"]),
                fmt(r["server_cpu_us_per_delivery"], 1),
                fmt(r.get("redis_cpu_us_per_delivery"), 2),
                fmt(r["kb_per_connection"], 1),
                f"{r['loadgen_cpu_share']:.0%}" if r.get("loadgen_cpu_share") is not None else "-",
                notes(r),
            ]
        )
    out = ["### Several processes (Redis)", "", table(header, rows)]
    ok = {(r["server"], r["clients"], r.get("round", 1)): r for r in results if "error" not in r}
    versus_rows = []
    hops: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for (name, n, k), mine in sorted(ok.items(), key=lambda i: (i[0][1], i[0][2], i[0][0])):
        memory = ok.get((MULTI[0], n, k))
        if name == MULTI[0] or memory is None:
            continue
        label = name + (f", round {k}" if (mine.get("rounds") or 1) > 1 else "")
        versus_rows.append(
            [
                fmt(n),
                label,
                SERVERS[name].what,
                versus(mine["server_cpu_us_per_delivery"], memory["server_cpu_us_per_delivery"], 1),
                versus(mine["latency_ms"]["p50"], memory["latency_ms"]["p50"], 2),
                versus(mine["latency_ms"]["p99"], memory["latency_ms"]["p99"], 2),
                versus(mine["deliveries_per_s"], memory["deliveries_per_s"], 0),
                versus(mine["kb_per_connection"], memory["kb_per_connection"], 1),
            ]
        )
        pairs = [
            (mine["latency_ms"]["p50"], memory["latency_ms"]["p50"]),
            (mine["latency_ms"]["p99"], memory["latency_ms"]["p99"]),
            (mine["http_ms"]["p50"], memory["http_ms"]["p50"]),
        ]
        if all(a is not None and b is not None for a, b in pairs):
            p50, p99, http = (a - b for a, b in pairs)
            hops.setdefault((n, name), []).append((p50, p99, http))
    if versus_rows:
        header = ["clients", "row", "what differs", "CPU µs/delivery", "p50 ms", "p99 ms"]
        header += ["deliveries/s", "KB/conn"]
        out += ["", "### Several processes vs one with the memory broker (row vs realtime)", ""]
        out.append(table(header, versus_rows))
    history_rows = []
    for (name, n, k), mine in sorted(ok.items(), key=lambda i: (i[0][1], i[0][2])):
        plain = ok.get(("realtime-redis", n, k))
        if name != "realtime-redis-history" or plain is None:
            continue
        a, b = mine["server_cpu_us_per_delivery"], plain["server_cpu_us_per_delivery"]
        good = a is not None and b is not None and a <= HISTORY_CPU_RATIO * b
        label = fmt(n) + (f", round {k}" if (mine.get("rounds") or 1) > 1 else "")
        history_rows.append(
            [
                label,
                f"{versus(a, b, 1)}: ≤ {HISTORY_CPU_RATIO:.2f}x {met(good)}",
                versus(mine["latency_ms"]["p99"], plain["latency_ms"]["p99"], 2),
                versus(
                    mine.get("redis_cpu_us_per_delivery"), plain.get("redis_cpu_us_per_delivery"), 2
                ),
            ]
        )
    if history_rows:
        header = ["clients", "CPU µs/delivery (issue 8 target)", "p99 ms", "of which redis"]
        out += ["", "### History over Redis (realtime-redis-history vs realtime-redis)", ""]
        out.append(table(header, history_rows))
    if hops:
        header = ["clients", "row", "rounds", "added p50 ms", "added p99 ms"]
        header += ["added send.py p50 ms"]
        hop_rows = []
        for (n, name), diffs in sorted(hops.items(), key=lambda i: (i[0][0], MULTI.index(i[0][1]))):
            cells = [fmt(n), name, fmt(len(diffs))]
            for i in range(3):
                values = [d[i] for d in diffs]
                text = f"{statistics.median(values):+.2f}"
                if len(values) > 1:
                    text += " (" + ", ".join(f"{v:+.2f}" for v in values) + ")"
                cells.append(text)
            hop_rows.append(cells)
        out += ["", "### Redis hop (row's fan-out latency - realtime's, same round)", ""]
        out.append(table(header, hop_rows))
    return "\n".join(out)


def slow_table(results: list[dict[str, Any]]) -> str:
    base = next((r for r in results if r.get("slow") == 0 and "error" not in r), None)
    header = ["slow clients", "healthy lost", "healthy ooo", "healthy p50 ms", "healthy p99 ms"]
    header += ["p99 vs no-slow", "server RSS growth MB", "slow clients ended", "notes"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([fmt(r["slow"]), *["-"] * 7, f"error: {r['error']}"])
            continue
        ended = r.get("slow_clients", {}).get("ended", {})
        rows.append(
            [
                f"{r['slow']} of {r['clients']}",
                fmt(r["lost"]),
                fmt(r["out_of_order"]),
                fmt(r["latency_ms"]["p50"], 2),
                fmt(r["latency_ms"]["p99"], 2),
                ratio(r["latency_ms"]["p99"], base["latency_ms"]["p99"]) if base else "-",
                fmt(r["rss_growth_mb"], 1),
                ", ".join(f"{k}: {v}" for k, v in ended.items()) or "-",
                notes(r),
            ]
        )
    return "\n".join(["### Slow clients (realtime)", "", table(header, rows)])


# Driver -----------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--clients", help="comma-separated client counts (default 1000,5000,10000; 0: no fan-out)"
    )
    p.add_argument("--messages", type=int, help="broadcasts per run (default 100, quick 20)")
    p.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    p.add_argument(
        "--quick", action="store_true", help="20 broadcasts per run and 1000 clients unless given"
    )
    p.add_argument(
        "--servers",
        default=",".join(SELECTABLE),
        help="comma-separated subset of (default all):\n"
        + "\n".join(
            f"  {name}: {SERVERS[name].what}" + ("" if SERVERS[name].fanout else " (storm only)")
            for name in SELECTABLE
        ),
    )
    p.add_argument(
        "--anchors",
        type=Path,
        default=ANCHORS,
        help="folder with the anchors go-seed/ and py-floor/ (default ../shared/anchors "
        "beside the repository)",
    )
    p.add_argument(
        "--storm",
        type=int,
        default=10000,
        help="clients of the reconnect storm, all dialing at once (default 10000; 0: skip it)\n"
        "rows: " + ", ".join(STORM_ROWS) + " (those in --servers)",
    )
    p.add_argument(
        "--storm-timeout",
        type=float,
        default=10.0,
        help="handshake timeout of a storm dial (TCP connect + upgrade), s (default 10)",
    )
    p.add_argument(
        "--sustained",
        default="",
        help="comma-separated broadcast rates of the sustained-publishing scenario, e.g. "
        "10,20 (default: off; '' or 0 skips it)\nrows: "
        + ", ".join(SUSTAINED_ROWS)
        + " (those in --servers)",
    )
    p.add_argument(
        "--recovery",
        type=int,
        default=0,
        help="issue 8: clients that come back at once and recover (default off; 1000)",
    )
    p.add_argument(
        "--recovery-behind", type=int, default=50, help="publications each one missed (50)"
    )
    p.add_argument(
        "--presence",
        type=int,
        default=0,
        help="issue 8: idle clients in presence channels, over Redis (default off; 10000)",
    )
    p.add_argument("--presence-channels", type=int, default=100, help="their channels (100)")
    p.add_argument(
        "--presence-idle", type=float, default=60.0, help="seconds of idle measured (60)"
    )
    p.add_argument(
        "--sustained-seconds",
        type=float,
        default=60.0,
        help="how long each sustained row publishes, s (default 60)",
    )
    p.add_argument(
        "--sustained-clients",
        type=int,
        default=10000,
        help="clients of the sustained scenario (default 10000)",
    )
    p.add_argument(
        "--http-timeout",
        type=float,
        default=15.0,
        help="client timeout of one sustained send request, s (default 15)",
    )
    p.add_argument(
        "--straggler-wait",
        type=float,
        default=30.0,
        help="after the last sustained send, wait at most this for answers and deliveries, "
        "s (default 30)",
    )
    p.add_argument("--skip-slow", action="store_true", help="skip the slow-client scenario")
    p.add_argument(
        "--skip-redis",
        action="store_true",
        help="skip the multi-process scenario (redis-server, " + ", ".join(MULTI[1:]) + ")",
    )
    p.add_argument(
        "--redis-clients",
        help="client counts of the multi-process scenario (default 10000; quick 1000)",
    )
    p.add_argument(
        "--hop-clients",
        type=int,
        default=100,
        help="small client count where the Redis hop shows (default 100; 0: none)",
    )
    p.add_argument(
        "--hop-rounds",
        type=int,
        default=3,
        help="rounds of the multi-process rows at --hop-clients, interleaved (default 3)",
    )
    p.add_argument(
        "--channels",
        type=int,
        help="channels of the channels scenario (default 1000, quick 100; 0: skip it)",
    )
    p.add_argument(
        "--channel-clients",
        type=int,
        help="clients of the channels scenario, spread evenly over --channels "
        "(default 10000, quick 1000)",
    )
    p.add_argument(
        "--channel-messages",
        type=int,
        default=2000,
        help="publications in the channels scenario, one channel each (default 2000)",
    )
    p.add_argument("--slow-messages", type=int, help="slow scenario broadcasts (default 1500)")
    p.add_argument("--timeout", type=float, default=10.0, help="per broadcast, seconds")
    p.add_argument("--deadline", type=float, default=300.0, help="per broadcast phase, seconds")
    p.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help="run a row again, up to this many times, when it was machine busy (default 2)",
    )
    p.add_argument(
        "--metrics-rounds",
        type=int,
        default=0,
        help="also run bench/metrics.py (metrics on and off at 10,000 clients, lag p99) "
        "for this many rounds and add its table (default 0: not run)",
    )
    opts = p.parse_args()
    opts.clients = [
        int(n) for n in (opts.clients or ("1000" if opts.quick else "1000,5000,10000")).split(",")
    ]
    if opts.clients == [0]:  # --clients 0: no fan-out rows
        opts.clients = []
    rates = [float(v) for v in opts.sustained.split(",") if v.strip()]
    opts.sustained = [int(v) if v.is_integer() else v for v in rates if v > 0]
    opts.redis_clients = [
        int(n) for n in (opts.redis_clients or ("1000" if opts.quick else "10000")).split(",")
    ]
    opts.messages = opts.messages or (20 if opts.quick else 100)
    opts.slow_messages = opts.slow_messages or 1500
    if opts.channels is None:
        opts.channels = 100 if opts.quick else 1000
    if opts.channel_clients is None:
        opts.channel_clients = 1000 if opts.quick else 10000
    opts.servers = [s for s in opts.servers.split(",") if s]
    unknown = set(opts.servers) - set(SELECTABLE)
    counts = opts.clients + opts.redis_clients
    bad = opts.busy_retries < 0 or opts.hop_clients < 0 or opts.hop_rounds < 1
    bad = bad or opts.channels < 0 or opts.channel_messages < 1
    bad = bad or opts.storm < 0 or opts.storm_timeout <= 0
    bad = bad or any(v < 0 for v in rates) or opts.sustained_seconds <= 0
    bad = bad or opts.sustained_clients < 1 or opts.http_timeout <= 0 or opts.straggler_wait < 0
    bad = bad or (opts.channels > 0 and opts.channel_clients < opts.channels)
    if unknown or not all(n > 0 for n in counts) or bad:
        p.error(f"unknown server(s) {sorted(unknown)}, bad client counts or bad --busy-retries")
    return opts


def run_streams(opts: argparse.Namespace, report: dict[str, Any], path: Path) -> None:
    """Issue 8's rows: recovery on memory:// (and redis://), presence on and off."""

    def one(tag: str, scenario: str, flags: list[str], redis: RedisServer | None,
            **extra: Any) -> None:  # fmt: skip
        try:
            result = measure_streams(tag, scenario, opts, flags, redis)
        except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
            result = {"scenario": scenario, "error": str(exc),
                      "broker": "redis" if redis else "memory"}  # fmt: skip
            print(f"    error: {exc}", file=sys.stderr)
        result.update(extra)
        report["streams"].append(result)
        path.write_text(json.dumps(report, indent=2))

    recovery = ["--channel", RECOVERY_CHANNELS]
    if opts.recovery:
        one(f"recovery-memory-{opts.recovery}", "recovery", recovery, None)
    if opts.skip_redis:
        return
    with redis_server(opts.logdir) as redis:
        if opts.recovery:
            one(f"recovery-redis-{opts.recovery}", "recovery", recovery, redis)
        if opts.presence:
            for on in (True, False):
                tag = f"presence-{'on' if on else 'off'}-{opts.presence}"
                flags = ["--channel", PRESENCE_CHANNELS[on]]
                one(tag, "presence", flags, redis, presence_on=on)


def on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    opts = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both children
    if hard < max([*opts.clients, *opts.redis_clients, opts.storm, opts.sustained_clients]) + 200:
        print(f"warning: open-file limit {hard} is below the client count", file=sys.stderr)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    opts.logdir = RESULTS / f"logs-{stamp}"
    opts.logdir.mkdir()
    path = RESULTS / f"run-{stamp}.json"
    state, changes = git_state()
    report: dict[str, Any] = {
        "argv": sys.argv[1:],
        "realtime": state,
        "realtime_changes": changes,
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
        "fanout": [],
        "multi": [],
        "channels": [],
        "slow": [],
        "storm": [],
        "sustained": [],
        "streams": [],
        "anchors": str(opts.anchors),
        "go": go_version(),
        "somaxconn": somaxconn(),
    }

    def run(
        section: str, server: str, clients: int, rounds: tuple[int, int] = (1, 1), **kw: Any
    ) -> None:
        tag = f"{server}-{clients}" + (f"-slow{kw['slow']}" if section == "slow" else "")
        if section == "channels":
            tag = f"channels-{tag}x{kw['channels']}"
        if section == "multi":
            tag = f"multi-{tag}" + (f"-round{rounds[0]}" if rounds[1] > 1 else "")
        if section == "storm":
            tag = f"storm-{tag}"
        if section == "sustained":
            tag = f"sustained{kw['sustained']}-{tag}"
        busy: list[dict[str, Any]] = []  # earlier attempts that other processes disturbed
        for attempt in range(opts.busy_retries + 1):
            try:
                attempt_tag = tag + (f"-try{attempt + 1}" if attempt else "")
                if section == "storm":
                    result = measure_storm(attempt_tag, server, clients, opts)
                else:
                    result = measure(attempt_tag, server, clients, opts, **kw)
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                result = {
                    "server": server,
                    "clients": clients,
                    "slow": kw.get("slow", 0),
                    "channels": kw.get("channels", 0),
                    "error": str(exc),
                    "rate": kw.get("sustained"),
                }
                print(f"    error: {exc}", file=sys.stderr)
            share = result.get("other_cpu_share") or 0
            if share < OTHER_BUSY or attempt == opts.busy_retries:
                break
            print(f"    machine busy ({share:.0%} of a CPU elsewhere): again", file=sys.stderr)
            busy.append(result)
            time.sleep(5)
        if busy:
            result["busy_attempts"] = busy
        if section == "multi":
            result["round"], result["rounds"] = rounds
        if section == "sustained":
            result["rate"] = kw["sustained"]
        report[section].append(result)
        path.write_text(json.dumps(report, indent=2))

    interrupted = False
    try:
        for clients in opts.clients:
            for server in opts.servers:
                if SERVERS[server].fanout:
                    kw = {"messages": opts.messages, "size": opts.size, "slow": 0}
                    run("fanout", server, clients, **kw)
        if opts.storm:
            for server in (name for name in STORM_ROWS if name in opts.servers):
                run("storm", server, opts.storm)
        for rate in opts.sustained:
            kw = {"messages": round(rate * opts.sustained_seconds), "size": opts.size, "slow": 0}
            for server in (name for name in SUSTAINED_ROWS if name in opts.servers):
                run("sustained", server, opts.sustained_clients, sustained=rate, **kw)
        if opts.channels:
            per = opts.channel_clients // opts.channels
            kw = {"messages": opts.channel_messages, "size": opts.size, "slow": 0}
            for server in (name for name in CHANNEL_ROWS if name in opts.servers):
                # A server holding one channel's clients only, then all of them.
                run("channels", server, per, channels=1, **kw)
                run("channels", server, per * opts.channels, channels=opts.channels, **kw)
        if not opts.skip_redis and "realtime" in opts.servers:
            try:
                with redis_server(opts.logdir) as redis:
                    report["redis_version"] = redis.version
                    report["redis_handshake_errors"] = redis.handshake_errors
                    kw = {"messages": opts.messages, "size": opts.size, "slow": 0}
                    hop = [opts.hop_clients] if opts.hop_clients else []
                    for clients in hop + opts.redis_clients:
                        n = opts.hop_rounds if clients in hop else 1
                        for k in range(1, n + 1):  # interleaved: each round runs every row
                            for server in MULTI:
                                run("multi", server, clients, (k, n), redis=redis, **kw)
                    report["redis_log"] = str((opts.logdir / "redis.log").relative_to(ROOT))
            except (RuntimeError, OSError) as exc:
                report["redis_error"] = str(exc)
                print(f"    multi-process scenario not run: {exc}", file=sys.stderr)
        if opts.recovery or opts.presence:
            run_streams(opts, report, path)
        if not opts.skip_slow and "realtime" in opts.servers:
            for slow in (0, 5):
                run("slow", "realtime", 100, messages=opts.slow_messages, size=6 * 1024, slow=slow)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: every server and loadgen started was stopped", file=sys.stderr)
    text = f"realtime at {report['realtime']}"
    text += f"; {opts.messages} x {opts.size} B per fan-out run" if report["fanout"] else ""
    text += "\n\n"
    rows = report["fanout"] + report["storm"] + report["sustained"] + report["channels"]
    rows += report["multi"]
    rows += report["slow"]
    states = Counter(r["realtime_state"] for r in rows if r.get("realtime_state"))
    if len(states) > 1:
        drift = ", ".join(f"{state} ({n} rows)" for state, n in states.items())
        text += f"WARNING: the realtime code changed during this run; rows ran at {drift}\n\n"
    text += main_tables(report["fanout"]) if report["fanout"] else ""
    anchored = report["fanout"] + report["storm"] + report["sustained"]
    if any(r["server"] in ("go-seed", "py-floor") for r in anchored):
        text = text.rstrip("\n") + "\n\n"
        text += f"anchors from {report['anchors']}; {report['go'] or 'Go not installed'}"
    if report["storm"]:
        text += "\n\n" + storm_table(report["storm"])
    if report["sustained"]:
        text += "\n\n" + sustained_table(report["sustained"])
    if report["channels"]:
        text += "\n\n" + channels_tables(report["channels"])
    if report["multi"]:
        version = report.get("redis_version", "?")
        text += f"\n\nredis-server {version}, on CPU 0 with the server; CPU includes it\n\n"
        text += multi_tables(report["multi"])
    elif report.get("redis_error"):
        text += f"\n\nmulti-process scenario not run: {report['redis_error']}"
    if report["streams"]:
        text += "\n\n" + streams_tables(report["streams"])
    if report["slow"]:
        text += "\n\n" + slow_table(report["slow"])
    if opts.metrics_rounds > 0 and not interrupted:
        # Issue 20's rows, in the same run: metrics.py alternates on and off itself.
        rows = subprocess.run(
            [sys.executable, str(BENCH / "metrics.py"), f"--rounds={opts.metrics_rounds}"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        report["metrics"] = rows.stdout
        text += "\n\nmetrics on and off (bench/metrics.py)\n\n" + (rows.stdout or rows.stderr)
    print(text)
    report["tables"] = text
    path.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {path.relative_to(ROOT)}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
