"""Centrifugo's million-connection workload, scaled to one host of this machine (issue 23).

Per host ``--clients`` Centrifuge clients (JSON, ``/connection/websocket``, a token
each), user ``i`` in ``personal:#i`` (user-limited, subscribed server-side at connect)
and ``group:<i // 10>`` (subscribed by the client; 10 a group). Half the deliveries go
to groups, half to personal channels, through the server API's ``broadcast`` (50
channels a call, each kind's calls spread evenly), at ``--per-client`` deliveries per
client a second (0.5: 7,500/s at 15,000), while 1/300 of the clients a second
disconnect and connect again, for ``--seconds``. Then the same connections at each of
``--steps``' higher rates (``--step-seconds`` each) until one is not held (p99 above
``--bound`` ms, a loss, or under 95% of the rate): the highest held is the figure.
Every broker of ``--brokers`` runs the same: ``memory``, ``redis`` (one redis-server),
``cluster`` (three primaries with a replica each, ``redis+cluster://``).

The server runs on CPU 0 (with Redis), this process on CPU 1; see bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import workload_brokers as B
import workload_parts as W
from workload_load import Config, Load, Window, cpu_seconds, own_cpu

ROOT = Path(__file__).resolve().parent.parent
SECRET = "workload-secret-" * 3
API_KEY = "workload-key"
BASE_CLIENTS = 15_000
GC_OFF = "import gc; gc.disable(); gc.freeze = lambda: None; gc.enable = lambda: None"
BASE_STEPS = (10_000, 12_500, 15_000, 20_000, 25_000, 50_000)
CHANNELS = {
    "namespaces": [
        {"name": W.PERSONAL_NAMESPACE, "allow_user_limited_channels": True},
        {"name": W.GROUP_NAMESPACE, "allow_subscribe_for_client": True},
    ]
}


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields[:8]) - idle) / tick, sum(fields[:8]) / tick


def commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "host", "plugins"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + ("+dirty" if dirty else "")


def server_command(args: argparse.Namespace, port: int, broker: str) -> list[str]:
    code = "import sys\nfrom realtime.cli import main\nsys.exit(main())"
    if args.gc_off:  # as bench/gcstall.py's gc-off variant: the collector never runs
        code = GC_OFF + "\n" + code
    return [
        "taskset",
        "-c",
        "0",
        sys.executable,
        "-c",
        code,
        "run",
        "--app",
        str(ROOT / "app"),
        "--bind",
        f"127.0.0.1:{port}",
        "--broker",
        broker,
        "--token-hmac-secret",
        SECRET,
        "--api-key",
        API_KEY,
        "--channel",
        json.dumps(CHANNELS),
        "--user-subscribe-to-personal-channel",
        "--user-personal-channel-namespace",
        W.PERSONAL_NAMESPACE,
        "--max-connections",
        str(args.max_connections),
        "--max-connections-per-ip",
        str(args.max_connections),
        "--backlog",
        "4096",
        *args.server_flag,
    ]


@contextlib.contextmanager
def server(args: argparse.Namespace, broker: B.Broker, logdir: Path) -> Any:
    port = B.free_port()
    log = (logdir / f"server-{broker.name}.log").open("w")
    proc = subprocess.Popen(
        server_command(args, port, broker.url),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/-/health", timeout=1).status_code < 500:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"{broker.name}: the server did not start, see {log.name}")
            time.sleep(0.2)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def sample(pids: list[int], redis: list[int]) -> dict[str, float]:
    busy, total = machine_busy()
    return {
        "wall": time.monotonic(),
        "server": sum(cpu_seconds(p) for p in pids),
        "redis": sum(cpu_seconds(p) for p in redis),
        "loadgen": own_cpu(),
        "busy": busy,
        "total": total,
    }


async def step(
    load: Load,
    args: argparse.Namespace,
    rate: float,
    seconds: float,
    pid: int,
    broker: B.Broker,
    kb: float,
) -> dict[str, Any]:
    """One rate for ``seconds``, churning; the row."""
    plan = W.plan(rate, args.group_size, args.batch)
    warmup = min(args.warmup, seconds / 4)
    now = time.monotonic_ns()
    load.window = Window(start=now + int(warmup * 1e9), end=now + int(seconds * 1e9))
    load.connect_ms, load.api_ms, load.late = W.Histogram(), W.Histogram(), W.Histogram()
    before = load.snapshot()
    churns: set[asyncio.Task[None]] = set()
    publishing = asyncio.create_task(load.broadcast(seconds, plan))
    churning = asyncio.create_task(load.churn(seconds, args.clients / args.churn_every, churns))
    await asyncio.sleep(warmup)
    ready_before = time.monotonic_ns()
    positions = {kind: meta.positions for kind, meta in load.kinds.items()}
    first = sample([pid], broker.pids)
    await asyncio.sleep(max(0.0, seconds - warmup))
    last = sample([pid], broker.pids)
    calls = await publishing
    await churning
    if churns:
        await asyncio.wait(churns, timeout=args.connect_timeout + 5)
    await load.drain()
    load.settle(ready_before, positions)
    after = load.snapshot()
    wall = last["wall"] - first["wall"]
    share = {k: (last[k] - first[k]) / wall for k in ("server", "redis", "loadgen")}
    other = (last["busy"] - first["busy"]) / wall - sum(share.values())
    got = load.window.delivered
    per_second = got / (seconds - warmup)
    hist = load.window.hist
    p99 = hist.percentile(0.99)
    lost = after["lost"] - before["lost"]
    refused = after["refused"] - before["refused"]
    # One group call more or less in the counted seconds (few calls a second at small
    # client counts) is not a shortfall.
    quantum = load.kinds[W.GROUP].batch * args.group_size / (seconds - warmup)
    cpu_per = (share["server"] + share["redis"]) * 1e6 / per_second if per_second else None
    notes = []
    if share["loadgen"] >= 0.9:
        notes.append("loadgen-bound (its CPU)")
    late = load.late.percentile(0.99) or 0.0
    if late > 50:
        notes.append(f"calls late: p99 {late:.0f} ms behind schedule")
    errors = {k: v - before["errors"].get(k, 0) for k, v in after["errors"].items()}
    errors = {k: v for k, v in errors.items() if v}
    if errors:
        notes.append("errors: " + "; ".join(f"{k} x{v}" for k, v in errors.items()))
    for key in ("silent", "ooo", "dropped", "calls_failed", "connect_failed", "refused", "told"):
        if after[key] - before[key]:
            notes.append(f"{key} {after[key] - before[key]}")
    return {
        "broker": broker.name,
        "clients": args.clients,
        "live": len(load.live),
        "target_per_s": rate,
        "seconds": seconds,
        "counted_seconds": seconds - warmup,
        "deliveries_per_s": round(per_second),
        "delivered": got,
        "calls": calls,
        "lost": lost,
        "p50_ms": hist.percentile(0.5),
        "p99_ms": p99,
        "max_ms": hist.maximum(),
        "server_cpu": round(share["server"], 3),
        "redis_cpu": round(share["redis"], 3),
        "cpu_us_per_delivery": round(cpu_per, 2) if cpu_per else None,
        "kb_per_connection": round(kb, 1),
        "churned": after["churned"] - before["churned"],
        "connect_p50_ms": load.connect_ms.percentile(0.5),
        "connect_p99_ms": load.connect_ms.percentile(0.99),
        "api_p99_ms": load.api_ms.percentile(0.99),
        "late_p99_ms": late,
        "loadgen_cpu": round(share["loadgen"], 3),
        "other_cpu": round(other, 2),
        "held": W.held(p99, lost, per_second, rate - quantum, args.bound, refused),
        "notes": "; ".join(notes),
        "worst_ms_by_second": [
            round(load.window.worst.get(i, 0) / 1e6, 1) for i in range(int(seconds - warmup) + 1)
        ],
        "latency_histogram": {str(i): c for i, c in enumerate(hist.counts) if c},
    }


async def drive(args: argparse.Namespace, pid: int, port: int, broker: B.Broker) -> dict[str, Any]:
    cfg = Config(
        port=port,
        clients=args.clients,
        secret=SECRET,
        api_key=API_KEY,
        group_size=args.group_size,
        batch=args.batch,
        connect_timeout=args.connect_timeout,
    )
    load = Load(cfg)
    idle = rss_kb(pid)
    t = await load.connect_all()
    await asyncio.sleep(2)
    kb = (rss_kb(pid) - idle) / args.clients
    print(
        f"--> {broker.name}: {args.clients} connected in {t:.1f} s, {kb:.1f} KB each",
        file=sys.stderr,
        flush=True,
    )
    rows = []
    rates = [(args.rate, args.seconds)] + [(r, args.step_seconds) for r in args.steps]
    down = args.down_steps  # when the base is not held: half the rate, then half again...
    while rates:
        rate, seconds = rates.pop(0)
        row = await step(load, args, rate, seconds, pid, broker, kb)
        rows.append(row)
        print(
            f"--> {broker.name} {rate:,.0f}/s: {row['deliveries_per_s']:,}/s p99 {row['p99_ms']} ms"
            f" lost {row['lost']} loadgen {row['loadgen_cpu']:.2f} held {row['held']}",
            file=sys.stderr,
            flush=True,
        )
        if row["held"]:
            continue
        if down > 0 and not any(r["held"] for r in rows):
            down -= 1
            await asyncio.sleep(args.step_seconds / 3)  # what was queued drains first
            rates = [(rate / 2, args.step_seconds)]
            continue
        break
    for client in list(load.live.values()):
        client.close()
    return {
        "broker": broker.name,
        "url": broker.url,
        "redis_version": broker.version,
        "connect_seconds": round(t, 1),
        "kb_per_connection": round(kb, 1),
        "rows": rows,
    }


def run_broker(name: str, args: argparse.Namespace, logdir: Path) -> dict[str, Any]:
    why = B.why_not(name)
    if why is not None:
        return {"broker": name, "not_measured": why, "rows": []}
    try:
        with B.started(name, logdir, cpu=0) as broker, server(args, broker, logdir) as (proc, port):
            if args.loop == "uvloop":
                import uvloop

                return uvloop.run(drive(args, proc.pid, port, broker))
            return asyncio.run(drive(args, proc.pid, port, broker))
    except Exception as exc:  # the other brokers still run; the table says why
        print(f"--> {name} failed: {exc!r}", file=sys.stderr, flush=True)
        return {"broker": name, "not_measured": f"failed: {exc}", "rows": []}


def fmt(value: Any, digits: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "**no**"
    if isinstance(value, float) and digits:
        return f"{value:,.{digits}f}"
    if isinstance(value, (int, float)):
        return f"{value:,.0f}"
    return str(value)


def tables(results: list[dict[str, Any]], bound: float) -> str:
    head = [
        "broker",
        "target/s",
        "deliveries/s",
        "lost",
        "p50 ms",
        "p99 ms",
        "max ms",
        "server CPU",
        "redis CPU",
        "CPU µs/delivery",
        "KB/conn",
        "churned",
        "connect p99 ms (churn)",
        "API p99 ms",
        "loadgen CPU",
        "other CPU",
        "held",
        "notes",
    ]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    summary = [
        f"| broker | highest rate held (p99 ≤ {bound:.0f} ms, none lost) | at p99 |",
        "|---|---|---|",
    ]
    for res in results:
        if not res["rows"]:
            out.append(f"| {res['broker']} | not measured: {res['not_measured']} |" + " |" * 16)
            summary.append(f"| {res['broker']} | not measured | - |")
            continue
        for r in res["rows"]:
            cells = [
                r["broker"],
                fmt(r["target_per_s"]),
                fmt(r["deliveries_per_s"]),
                fmt(r["lost"]),
                fmt(r["p50_ms"], 1),
                fmt(r["p99_ms"], 1),
                fmt(r["max_ms"], 1),
                fmt(r["server_cpu"], 2),
                fmt(r["redis_cpu"], 2),
                fmt(r["cpu_us_per_delivery"], 1),
                fmt(r["kb_per_connection"], 1),
                fmt(r["churned"]),
                fmt(r["connect_p99_ms"], 1),
                fmt(r["api_p99_ms"], 1),
                fmt(r["loadgen_cpu"], 2),
                fmt(r["other_cpu"], 2),
                fmt(r["held"]),
                r["notes"],
            ]
            out.append("| " + " | ".join(cells) + " |")
        kept = [r for r in res["rows"] if r["held"]]
        best = max(kept, key=lambda r: r["target_per_s"]) if kept else None
        summary.append(
            f"| {res['broker']} | {fmt(best['target_per_s']) if best else 'none'} | "
            f"{fmt(best['p99_ms'], 1) + ' ms' if best else '-'} |"
        )
    return "\n".join(out) + "\n\n" + "\n".join(summary)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=BASE_CLIENTS, help="clients of the host")
    p.add_argument("--per-client", type=float, default=0.5, help="deliveries per client a second")
    p.add_argument("--seconds", type=float, default=60, help="the first (base) step's length")
    p.add_argument(
        "--steps",
        default=None,
        help="higher rates to try, deliveries/s "
        "(default 10000,12500,15000,20000,25000,50000 scaled to --clients; '' for none)",
    )
    p.add_argument("--step-seconds", type=float, default=30, help="each higher step's length")
    p.add_argument(
        "--down-steps",
        type=int,
        default=2,
        help="when the base step is not held, try half its rate, then half again: this many",
    )
    p.add_argument("--bound", type=float, default=200, help="p99 ms a step must stay within")
    p.add_argument("--brokers", default=",".join(B.BROKERS))
    p.add_argument("--group-size", type=int, default=10)
    p.add_argument("--batch", type=int, default=50, help="channels per broadcast call")
    p.add_argument(
        "--churn-every",
        type=float,
        default=300,
        help="each second clients/this disconnect and connect again",
    )
    p.add_argument("--warmup", type=float, default=5, help="first seconds of a step not counted")
    p.add_argument("--connect-timeout", type=float, default=30)
    p.add_argument("--max-connections", type=int, default=19_000)
    p.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default="uvloop",
        help="the load generator's loop (the server's is its default)",
    )
    p.add_argument(
        "--gc-off", action="store_true", help="the server's garbage collector disabled (the floor)"
    )
    p.add_argument("--server-flag", action="append", default=[], help="extra server argument")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    p.add_argument("--table", type=Path, help="print the tables of a run's JSON, run nothing")
    args = p.parse_args()
    if args.table is not None:
        saved = json.loads(args.table.read_text())
        print(tables(saved["results"], saved["settings"]["bound"]))
        return 0
    args.rate = args.per_client * args.clients
    if args.steps is None:
        args.steps = [r * args.clients / BASE_CLIENTS for r in BASE_STEPS]
    else:
        args.steps = [float(s) for s in args.steps.split(",") if s.strip()]
    if args.loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            args.loop = "asyncio"
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.clients + 200 > hard:
        p.error(f"--clients {args.clients} needs more than the open-file limit {hard}")
    os.sched_setaffinity(0, {1})
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    args.out.mkdir(parents=True, exist_ok=True)
    logdir = args.out / f"logs-workload-{stamp}"
    logdir.mkdir()
    started: dict[str, Any] = {"utc": stamp, "commit": commit(), "loadavg": os.getloadavg()}
    results = [run_broker(name, args, logdir) for name in args.brokers.split(",")]
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    record: dict[str, Any] = {
        "started": started,
        "loadavg_end": os.getloadavg(),
        "argv": sys.argv,
        "settings": settings,
        "results": results,
    }
    path = args.out / f"workload-{stamp}.json"
    path.write_text(json.dumps(record, indent=1, default=str))
    print(
        f"Commit {started['commit']}, {stamp} UTC, load average {started['loadavg'][0]:.1f} "
        f"→ {record['loadavg_end'][0]:.1f}; the load generator on {args.loop}; raw JSON {path}\n"
    )
    print(tables(results, args.bound))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
