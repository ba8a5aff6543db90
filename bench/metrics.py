"""What metrics cost a fan-out: CPU per delivery with metrics on and off (issue 20).

Issue 20's benchmark: at 10,000 clients, server CPU per delivery with metrics on is
at most 1.03x the same server with metrics off, and the p99 of the event-loop lag
histogram during that run is reported. Each round starts two fresh servers in turn
(which goes first alternates), both with the internal listener
(``--internal-bind``), one exporting metrics and one with ``--no-metrics`` (on a
tree without that option, "off" is no internal listener at all). Each is driven as
``trees.py --measure delivery`` drives a server: ``realtime run`` on CPU 0,
``loadgen.py`` on CPU 1 with ``--clients`` raw clients, server CPU over the
``--messages`` broadcasts divided by the deliveries.

The "on" server's ``/metrics`` is scraped as the broadcasts start and once they
are done (neither scrape inside the measured CPU): the difference of the two
``realtime_event_loop_lag_seconds`` histograms is the lag during the broadcasts,
the second alone the lag over the server's whole life; both are summed over the
rounds and their p99 interpolated in the buckets as Prometheus's
``histogram_quantile`` does. The same scrapes check ``realtime_deliveries_total``
grew by what the load generator received.

``--count instructions`` counts the broadcasts' instructions under callgrind instead,
as ``trees.py --count instructions`` does. Under callgrind the server runs some 50x
slower while the lag probe still wakes 10 times a second and the sampler once, so
their share of the count is some 50x what it is natively: the on/off ratio is an
upper bound there (the lag figures are callgrind's, not the server's).

    python bench/metrics.py                        # 10,000 clients, 100 broadcasts, 5 rounds
    python bench/metrics.py --clients 500 --messages 20 --rounds 1
    python bench/metrics.py --tree /tmp/snapshot   # a checkout's code, not the installed one
    python bench/metrics.py --count instructions --clients 1000 --messages 20 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field

import run as R
import trees as T
from prometheus_client.parser import text_string_to_metric_families

LAG = "realtime_event_loop_lag_seconds"
DELIVERIES = "realtime_deliveries"  # the parser drops a counter's _total from its family name
#: A scrape of this server is a few tens of KB; more is not a realtime /metrics.
MAX_SCRAPE = 4 * 1024 * 1024
#: The issue's target: CPU per delivery with metrics on at most this times off.
TARGET_RATIO = 1.03

Buckets = list[tuple[float, float]]  # (upper bound, cumulative count), by bound


@dataclass
class Scrape:
    """What one scrape of /metrics says: the lag buckets and the deliveries so far."""

    lag: Buckets
    deliveries: float


@dataclass
class Round:
    """One server's run: CPU µs per delivery, and for "on" its two scrapes."""

    cpu: float
    received: int
    lost: int
    scrapes: list[Scrape] = field(default_factory=list)
    system: float = math.nan  # of ``cpu``, the kernel's share (utime/stime, 10 ms ticks)


def user_system(pid: int) -> tuple[float, float]:
    """utime and stime of the process, seconds (``/proc/PID/stat``, whole process)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / R.CLK_TCK, int(fields[12]) / R.CLK_TCK


def histogram_quantile(q: float, buckets: Buckets) -> float:
    """The ``q`` quantile of cumulative ``buckets``, as Prometheus's histogram_quantile.

    The rank ``q * total`` falls in the first bucket whose count reaches it, and is
    interpolated linearly between that bucket's lower bound (the bound below it, or 0)
    and its upper bound; a rank in the +Inf bucket gives the highest finite bound.
    """
    if not buckets or not math.isinf(buckets[-1][0]) or buckets[-1][1] <= 0:
        return math.nan
    if len(buckets) < 2:
        return math.nan
    total = buckets[-1][1]
    rank = q * total
    i = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if i == len(buckets) - 1:
        return buckets[-2][0]
    if i == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    upper, count = buckets[i]
    lower, below = (0.0, 0.0) if i == 0 else buckets[i - 1]
    return lower + (upper - lower) * (rank - below) / (count - below)


def buckets_sum(parts: Sequence[Buckets], signs: Sequence[int] | None = None) -> Buckets:
    """Bucket-wise ``sum(sign * part)`` of histograms with the same bounds."""
    signs = signs or [1] * len(parts)
    bounds = [b for b, _ in parts[0]]
    if any([b for b, _ in p] != bounds for p in parts):
        raise ValueError("histograms with different buckets")
    return [(b, sum(s * p[i][1] for s, p in zip(signs, parts, strict=True)))
            for i, b in enumerate(bounds)]  # fmt: skip


def parse(text: str) -> Scrape:
    """The lag histogram (summed over any labels) and the deliveries counter."""
    lag: dict[float, float] = {}
    deliveries = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if family.name == LAG and sample.name == f"{LAG}_bucket":
                le = float(sample.labels["le"])
                lag[le] = lag.get(le, 0.0) + sample.value
            elif family.name == DELIVERIES and sample.name == f"{DELIVERIES}_total":
                deliveries += sample.value
    if not lag:
        raise RuntimeError(f"/metrics has no {LAG} histogram")
    return Scrape(sorted(lag.items()), deliveries)


def scrape(port: int) -> Scrape:
    """GET /metrics on the internal listener."""
    with urllib.request.urlopen(f"http://{R.HOST}:{port}/metrics", timeout=30) as r:
        return parse(r.read(MAX_SCRAPE).decode())


def base(opts: argparse.Namespace, bind: str) -> tuple[list[str], dict[str, str]]:
    """``realtime run`` on ``bind``: the installed realtime, or ``--tree``'s code."""
    if opts.tree:
        return T.server(opts.tree, "raw", bind)
    return R.realtime_command(bind), dict(os.environ)


def server(
    opts: argparse.Namespace, on: bool, bind: str, internal: str
) -> tuple[list[str], dict[str, str]]:
    """The command of one server, metrics on or off."""
    cmd, env = base(opts, bind)
    if on:
        return [*cmd, "--internal-bind", internal], env
    if opts.no_metrics:
        return [*cmd, "--internal-bind", internal, "--no-metrics"], env
    return cmd, env


def has_no_metrics(opts: argparse.Namespace) -> bool:
    """Whether this realtime has ``--no-metrics`` (the metrics plugin's option)."""
    cmd, env = base(opts, f"{R.HOST}:0")
    shown = subprocess.run([*cmd, "--help"], env=env, capture_output=True, text=True, timeout=60)
    return "--no-metrics" in shown.stdout


def one(opts: argparse.Namespace, on: bool, cg: T.Callgrind | None = None) -> Round:
    """One fresh server and one load: CPU per delivery (with ``cg``, instructions per
    delivery); for "on", scrapes around the broadcasts."""
    port, internal = R.free_port(), R.free_port()
    bind = f"{R.HOST}:{port}"
    cmd, env = server(opts, on, bind, f"{R.HOST}:{internal}")
    if cg is not None:
        cmd = cg.wrap([*cmd, *T.TIMERS_OFF])
        env["PYTHONHASHSEED"] = "0"
    load = [sys.executable, str(R.BENCH / "loadgen.py"), f"--url=ws://{bind}/ws",
            f"--send-url=http://{bind}/send.py", f"--clients={opts.clients}",
            f"--messages={opts.messages}", "--wait-stdin"]  # fmt: skip
    if cg is not None:
        load += T.SLOW_LOADGEN
    scrapes: list[Scrape] = []
    with R.started([*R.pinned(0), *cmd], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL) as proc:  # fmt: skip
        R.wait_listening(port, proc, limit=20.0 if cg is None else 300.0)
        time.sleep(0.5)
        with R.started([*R.pinned(1), *load], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE) as gen:  # fmt: skip
            assert gen.stdin is not None
            assert gen.stdout is not None
            assert gen.stderr is not None
            spent = before = user = system = math.nan
            ticks = (math.nan, math.nan)
            for line in gen.stderr:
                if not line.startswith("@phase "):
                    continue
                phase = line.split()[1]
                if phase == "connected":
                    if on:
                        scrapes.append(scrape(internal))
                    before = R.cpu_seconds(proc.pid)  # the broadcasts start now
                    ticks = user_system(proc.pid)
                    if cg is not None:
                        cg.start(proc.pid)
                elif phase == "broadcast_done":
                    spent = R.cpu_seconds(proc.pid) - before
                    user, system = (
                        b - a for a, b in zip(ticks, user_system(proc.pid), strict=True)
                    )
                    if cg is not None:
                        spent = cg.read(proc.pid) / 1e6  # Ir, so that cost below is Ir a delivery
                    if on:
                        scrapes.append(scrape(internal))
                gen.stdin.write("\n")
                gen.stdin.flush()
                if phase == "broadcast_done":
                    break
            else:
                raise RuntimeError("the load generator ended before its broadcasts were done")
            gen.stdin.close()
            result = json.loads(gen.stdout.read() or "{}")
            gen.wait(60)
    if math.isnan(spent):
        raise RuntimeError("no broadcast phase measured")
    received, lost = int(result.get("deliveries", 0)), int(result.get("lost", -1))
    share = system / (user + system) if user + system > 0 else math.nan
    return Round(spent * 1e6 / (opts.clients * opts.messages), received, lost, scrapes, share)


def fmt_s(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.2f} ms"


def report(opts: argparse.Namespace, runs: dict[str, list[Round]]) -> list[str]:
    """The markdown table, and a line on the target and the deliveries counted."""
    unit, digits = ("Ir", 0) if opts.count == "instructions" else ("CPU µs", 3)
    medians = {mode: statistics.median(r.cpu for r in rs) for mode, rs in runs.items()}
    ons = runs["on"]
    during = buckets_sum([p for r in ons for p in (r.scrapes[1].lag, r.scrapes[0].lag)],
                         [s for _ in ons for s in (1, -1)])  # fmt: skip
    whole = buckets_sum([r.scrapes[1].lag for r in ons])
    rows = [f"| mode | clients | {unit}/delivery: median | min | max | on/off | "
            "lag p99, broadcasts | lag p99, whole run |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for mode, rs in runs.items():
        cpus = [r.cpu for r in rs]
        versus = f"{medians['on'] / medians['off']:.3f}x" if mode == "on" else "1"
        lags = (fmt_s(histogram_quantile(0.99, during)), fmt_s(histogram_quantile(0.99, whole)))
        lag = " | ".join(lags) if mode == "on" else "- | -"
        low, mid, high = (f"{v:,.{digits}f}" for v in (min(cpus), medians[mode], max(cpus)))
        rows.append(f"| {mode} | {opts.clients:,} | {mid} | {low} | {high} | {versus} | {lag} |")
    paired = [a.cpu / b.cpu for a, b in zip(runs["on"], runs["off"], strict=True)]
    ratio = medians["on"] / medians["off"]
    counted = [r.scrapes[1].deliveries - r.scrapes[0].deliveries for r in ons]
    lost = sum(r.lost for rs in runs.values() for r in rs)
    kernel = ", ".join(f"{mode} {statistics.median(r.system for r in rs):.0%}"
                       for mode, rs in runs.items())  # fmt: skip
    rows += ["", f"Target on/off ≤ {TARGET_RATIO}x: {'met' if ratio <= TARGET_RATIO else 'NOT met'}"
             f" ({ratio:.3f}x; each round's on/off: {', '.join(f'{p:.3f}' for p in paired)}). "
             f"Lag samples during the broadcasts: {during[-1][1]:.0f}, over the whole runs: "
             f"{whole[-1][1]:.0f}. realtime_deliveries_total grew by "
             f"{', '.join(f'{c:,.0f}' for c in counted)} during the \"on\" broadcasts "
             f"(clients x broadcasts = {opts.clients * opts.messages:,}); lost: {lost}. "
             f"Off: {'--no-metrics' if opts.no_metrics else 'no --internal-bind'}. "
             f"Kernel share of the CPU (stime, median): {kernel}."]  # fmt: skip
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=100, help="broadcasts a round")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tree", default="", help="a checkout to run (default: the installed realtime)")
    p.add_argument("--count", choices=("cpu", "instructions"), default="cpu",
                   help="server CPU time, or instructions under callgrind")  # fmt: skip
    opts = p.parse_args()
    if not 1 <= opts.clients <= 50_000 or not 1 <= opts.messages <= 10_000 or opts.rounds < 1:
        p.error("--clients 1..50000, --messages 1..10000, --rounds at least 1")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # inherited by both children
    opts.no_metrics = has_no_metrics(opts)
    runs: dict[str, list[Round]] = {"off": [], "on": []}
    with contextlib.ExitStack() as stack:
        cg = stack.enter_context(T.Callgrind.session()) if opts.count == "instructions" else None
        for round_ in range(1, opts.rounds + 1):
            for mode in ("off", "on") if round_ % 2 else ("on", "off"):
                got = one(opts, mode == "on", cg)
                runs[mode].append(got)
                shown = (
                    f"cost={got.cpu:.3f} per delivery (kernel {got.system:.0%}) "
                    f"received={got.received} lost={got.lost}"
                )
                print(f"round {round_}: {mode} {shown}", file=sys.stderr, flush=True)
    print("\n".join(report(opts, runs)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
