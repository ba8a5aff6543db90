"""Benchmark realtime against the naive design and the ``websockets`` library.

    python bench/run.py [--clients 1000,5000,10000] [--messages M] [--size BYTES] [--quick]

For every server and client count it starts the server pinned to CPU 0 on a free
127.0.0.1 port, runs ``bench/loadgen.py`` pinned to CPU 1, samples the server's CPU
time and RSS from /proc around the phases, and prints Markdown tables; then the
slow-client scenario against realtime. Raw JSON goes to ``bench/results/``.
Besides the two baselines, realtime runs with one optimisation turned off at a time
(``realtime-asyncio``, ``realtime-plain``, ``realtime-deflate``) and with clients
that offer permessage-deflate (``realtime+offer``), so one run shows what each pays.
See bench/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
RESULTS = BENCH / "results"
HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOADGEN_BOUND = 0.9
OTHER_BUSY = 0.15


@dataclass(frozen=True)
class Server:
    """One row name: which program serves, with which flags, for which clients."""

    name: str
    program: str  # "realtime", or a script in bench/servers/
    what: str
    flags: tuple[str, ...] = ()  # added to the server's command line
    loadgen: tuple[str, ...] = ()  # added to loadgen's command line


SERVERS: dict[str, Server] = {
    s.name: s
    for s in (
        Server("realtime", "realtime", "defaults: fast path, uvloop, no deflate"),
        Server(
            "realtime+offer",
            "realtime",
            "defaults; clients offer permessage-deflate (declined)",
            loadgen=("--offer-deflate",),
        ),
        Server("realtime-asyncio", "realtime", "asyncio's loop, not uvloop", ("--loop", "asyncio")),
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
        Server("naive", "naive", "baseline: Quart, for ws in clients: await ws.send"),
        Server("websockets_lib", "websockets_lib", "baseline: websockets library broadcast()"),
    )
}
BASELINES = ("naive", "websockets_lib")
#: Rows set against ``realtime`` in "what each idea pays".
VARIANTS = ("realtime-asyncio", "realtime-plain", "realtime-deflate", "realtime+offer")


def server_command(name: str, bind: str) -> list[str]:
    spec = SERVERS[name]
    if spec.program == "realtime":
        exe = Path(sys.executable).with_name("realtime")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "realtime"]
        app = str(ROOT / "app")
        cmd += ["run", "--bind", bind, "--app", app, "--log-level", "warning"]
    else:
        cmd = [sys.executable, str(BENCH / "servers" / f"{spec.program}.py"), "--bind", bind]
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


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in family(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def machine_busy() -> float:
    """Non-idle CPU seconds of the whole machine, from the first line of /proc/stat."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK  # minus idle and iowait


def uvloop_loaded(pid: int) -> bool | None:
    """Whether uvloop's extension module is mapped into ``pid`` (None: cannot tell)."""
    try:
        return "/uvloop/" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return None


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


def wait_listening(port: int, proc: subprocess.Popen[Any], limit: float = 20.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"server not listening on {port} after {limit}s")


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
) -> dict[str, Any]:
    """One server process and one loadgen run: loadgen's JSON plus server samples."""
    port = free_port()
    bind = f"{HOST}:{port}"
    # Per row: the working tree may change while a run goes on (baselines do not use it).
    code = git_state()[0] if SERVERS[server].program == "realtime" else None
    print(f"--> {tag}: {clients} clients, {messages} x {size} B", file=sys.stderr, flush=True)
    loadgen = [
        sys.executable,
        str(BENCH / "loadgen.py"),
        f"--url=ws://{bind}/ws",
        f"--send-url=http://{bind}/send.py",
        f"--clients={clients}",
        f"--messages={messages}",
        f"--size={size}",
        f"--slow={slow}",
        f"--timeout={opts.timeout}",
        f"--deadline={opts.deadline}",
        "--wait-stdin",
        *SERVERS[server].loadgen,
    ]
    with contextlib.ExitStack() as stack:
        slog = stack.enter_context((opts.logdir / f"{tag}.server.log").open("w"))
        llog = stack.enter_context((opts.logdir / f"{tag}.loadgen.log").open("w"))
        readers: list[Reader] = []  # joined once loadgen is gone, before its log closes

        @stack.callback
        def join_readers() -> None:
            for reader in readers:
                reader.thread.join(5)

        srv = stack.enter_context(
            started([*pinned(0), *server_command(server, bind)], stdout=slog, stderr=slog, cwd=ROOT)
        )
        wait_listening(port, srv)
        time.sleep(0.5)
        rss_idle = rss_kb(srv.pid)
        pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
        gen = stack.enter_context(started([*pinned(1), *loadgen], cwd=ROOT, **pipes))
        assert gen.stdin is not None
        assert gen.stdout is not None
        assert gen.stderr is not None
        err, out = Reader(gen.stderr, llog), Reader(gen.stdout)
        readers += [err, out]

        def alive() -> bool:
            return srv.poll() is None

        err.wait("connected", 300.0 + 2 * opts.timeout, alive)
        cpu0, rss_connected = cpu_seconds(srv.pid), rss_kb(srv.pid)
        uvloop = uvloop_loaded(srv.pid)
        busy0, wall0 = machine_busy(), time.monotonic()
        gen.stdin.write("go\n")
        gen.stdin.flush()
        err.wait("broadcast_done", opts.deadline + 2 * opts.timeout + 30, alive)
        cpu1, rss_after = cpu_seconds(srv.pid), rss_kb(srv.pid)
        busy, wall = machine_busy() - busy0, time.monotonic() - wall0
        gen.stdin.write("go\n")
        gen.stdin.close()
        gen.wait(60)
        out.thread.join(10)
        if gen.returncode != 0:
            raise RuntimeError(f"loadgen exited with {gen.returncode}; see {llog.name}")
        result: dict[str, Any] = json.loads("".join(out.lines))
    deliveries, connected = result["deliveries"], result["connected"]
    result.update(
        server=server,
        realtime_state=code,
        server_command=server_command(server, bind),
        loadgen_flags=list(SERVERS[server].loadgen),
        server_uvloop_loaded=uvloop,
        server_cpu_s=round(cpu1 - cpu0, 3),
        server_cpu_us_per_delivery=(cpu1 - cpu0) * 1e6 / deliveries if deliveries else None,
        rss_kb={"idle": rss_idle, "connected": rss_connected, "after": rss_after},
        kb_per_connection=(rss_connected - rss_idle) / connected if connected else None,
        rss_growth_mb=(rss_after - rss_connected) / 1024,
        loadgen_bound=(result.get("loadgen_cpu_share") or 0) >= LOADGEN_BOUND,
        # CPU used by anything else on the machine while broadcasting: noise in the figures.
        other_cpu_share=round((busy - (cpu1 - cpu0) - result["loadgen_cpu_s"]) / wall, 3),
    )
    return result


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
    if warm and warm.get("server_count") != warm.get("expected"):
        found.append(f"server counted {warm.get('server_count')}")
    # realtime's default loop is uvloop where installed; --loop asyncio must not load it.
    loop = r.get("server_uvloop_loaded")
    spec = SERVERS.get(r.get("server", ""))
    realtime = spec is not None and spec.program == "realtime"
    if realtime and loop is not None and spec and loop != ("--loop" not in spec.flags):
        found.append("uvloop loaded" if loop else "uvloop not loaded")
    deflate = r.get("deflate") or {}
    if deflate.get("offered") or deflate.get("negotiated"):
        found.append(f"deflate negotiated by {deflate['negotiated']:,} of {deflate['of']:,}")
    if r.get("busy_attempts"):
        found.append(f"run {len(r['busy_attempts']) + 1} (earlier machine busy)")
    return "; ".join(found)


def main_tables(results: list[dict[str, Any]]) -> str:
    header = ["server", "clients", "conn/s", "p50 ms", "p99 ms", "deliveries/s", "lost", "ooo"]
    header += ["CPU µs/delivery", "KB/conn", "loadgen CPU", "notes"]
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r["server"], fmt(r["clients"]), *["-"] * 9, f"error: {r['error']}"])
            continue
        rows.append(
            [
                r["server"],
                fmt(r["clients"]),
                fmt(r["connect_rate"], 0),
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
    if rows := pays_rows(ok):
        header = ["clients", "realtime vs", "what differs", "CPU µs/delivery", "KB/conn"]
        header += ["p99 ms", "conn/s"]
        out += ["", "### What each idea pays (realtime vs variant, ratio)", ""]
        out.append(table(header, rows))
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
    p.add_argument("--clients", help="comma-separated client counts (default 1000,5000,10000)")
    p.add_argument("--messages", type=int, help="broadcasts per run (default 100, quick 20)")
    p.add_argument("--size", type=int, default=64, help="message size in bytes (default 64)")
    p.add_argument(
        "--quick", action="store_true", help="20 broadcasts per run and 1000 clients unless given"
    )
    p.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated subset of (default all):\n"
        + "\n".join(f"  {s.name}: {s.what}" for s in SERVERS.values()),
    )
    p.add_argument("--skip-slow", action="store_true", help="skip the slow-client scenario")
    p.add_argument("--slow-messages", type=int, help="slow scenario broadcasts (default 1500)")
    p.add_argument("--timeout", type=float, default=10.0, help="per broadcast, seconds")
    p.add_argument("--deadline", type=float, default=300.0, help="per broadcast phase, seconds")
    p.add_argument(
        "--busy-retries",
        type=int,
        default=2,
        help="run a row again, up to this many times, when it was machine busy (default 2)",
    )
    opts = p.parse_args()
    opts.clients = [
        int(n) for n in (opts.clients or ("1000" if opts.quick else "1000,5000,10000")).split(",")
    ]
    opts.messages = opts.messages or (20 if opts.quick else 100)
    opts.slow_messages = opts.slow_messages or 1500
    opts.servers = [s for s in opts.servers.split(",") if s]
    unknown = set(opts.servers) - set(SERVERS)
    if unknown or not all(n > 0 for n in opts.clients) or opts.busy_retries < 0:
        p.error(f"unknown server(s) {sorted(unknown)}, bad --clients or bad --busy-retries")
    return opts


def on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main() -> int:
    opts = parse_args()
    signal.signal(signal.SIGTERM, on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started ignoring it
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both children
    if hard < max(opts.clients) + 200:
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
        "slow": [],
    }

    def run(section: str, server: str, clients: int, **kw: Any) -> None:
        tag = f"{server}-{clients}" + (f"-slow{kw['slow']}" if section == "slow" else "")
        busy: list[dict[str, Any]] = []  # earlier attempts that other processes disturbed
        for attempt in range(opts.busy_retries + 1):
            try:
                result = measure(
                    tag + (f"-try{attempt + 1}" if attempt else ""), server, clients, opts, **kw
                )
            except (RuntimeError, OSError, ValueError, subprocess.SubprocessError) as exc:
                result = {
                    "server": server,
                    "clients": clients,
                    "slow": kw["slow"],
                    "error": str(exc),
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
        report[section].append(result)
        path.write_text(json.dumps(report, indent=2))

    interrupted = False
    try:
        for clients in opts.clients:
            for server in opts.servers:
                run("fanout", server, clients, messages=opts.messages, size=opts.size, slow=0)
        if not opts.skip_slow and "realtime" in opts.servers:
            for slow in (0, 5):
                run("slow", "realtime", 100, messages=opts.slow_messages, size=6 * 1024, slow=slow)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: every server and loadgen started was stopped", file=sys.stderr)
    text = f"realtime at {report['realtime']}; {opts.messages} x {opts.size} B per fan-out run\n\n"
    rows = report["fanout"] + report["slow"]
    states = Counter(r["realtime_state"] for r in rows if r.get("realtime_state"))
    if len(states) > 1:
        drift = ", ".join(f"{state} ({n} rows)" for state, n in states.items())
        text += f"WARNING: the realtime code changed during this run; rows ran at {drift}\n\n"
    text += main_tables(report["fanout"]) if report["fanout"] else ""
    if report["slow"]:
        text += "\n\n" + slow_table(report["slow"])
    print(text)
    report["tables"] = text
    path.write_text(json.dumps(report, indent=2))
    print(f"\nraw results: {path.relative_to(ROOT)}", file=sys.stderr)
    return 130 if interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
