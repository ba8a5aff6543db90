"""Compare source trees of realtime on one cost, alternating them in one run.

A change that saves a few µs a connection or a tenth of a µs a delivery is smaller
than what this shared machine drifts by between two ``run.py`` runs. This runs the
same measurement on each tree in turn, round after round, and prints the medians,
so every tree sees the same machine. Each round starts a fresh server from that
tree (``realtime run`` as ``run.py`` starts it, on CPU 0) and drives it with
``loadgen.py`` (on CPU 1):

- ``--measure connect``: server CPU per connection while ``--clients`` clients
  dial (64 handshakes in flight), the handshake rate (connections a second of
  wall-clock time from the load generator's start until all are in: a relative
  figure, for trees compared in one run) and the server's resident memory per connection
  once they all are in (KB), raw ``/ws`` clients and Centrifuge clients
  (``--modes raw,centrifuge``; the Centrifuge ones send connect and subscribe in
  one frame, as in ``run.py``'s ``realtime-centrifuge`` row);
- ``--measure delivery``: server CPU per delivery over ``--messages`` broadcasts to
  ``--clients`` raw clients through ``send.py``.

A tree is a checkout of the repository (``git worktree add /tmp/before HEAD~1``);
``floor`` stands for the bare-asyncio anchor (delivery only)::

    python bench/trees.py --trees /tmp/before,. --measure connect --clients 4000
    python bench/trees.py --trees /tmp/before,.,floor --measure delivery
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import run as R

PLUGINS = ("plugins/hub", "plugins/websocket", "plugins/broadcast", "plugins/broker",
           "plugins/centrifuge")  # fmt: skip


def server(tree: str, mode: str, bind: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one server: ``tree``'s code, or the floor."""
    env = dict(os.environ)
    if tree == "floor":
        port = bind.rpartition(":")[2]
        script = R.anchor(R.ANCHORS, "py-floor", "server.py")
        return [sys.executable, str(script), "--port", port], env
    root = Path(tree).resolve()
    env["PYTHONPATH"] = os.pathsep.join(str(root / p) for p in ("host", *PLUGINS))
    code = "import sys; from realtime.cli import main; sys.argv[0] = 'realtime'; sys.exit(main())"
    args = R.realtime_command(bind, root / "app")
    cmd = [sys.executable, "-c", code, *args[args.index("run") :]]  # this tree's code
    if mode == "centrifuge":
        cmd += ["--token-hmac-secret", R.TOKEN_SECRET, "--client-ping-interval", "0"]
    return cmd, env


def one(tree: str, mode: str, opts: argparse.Namespace) -> dict[str, float]:
    """One fresh server and one load: server CPU µs per connection or per delivery;
    for connect, also handshakes a second and KB of resident memory per connection."""
    port = R.free_port()
    bind = f"{R.HOST}:{port}"
    cmd, env = server(tree, mode, bind)
    path = "/connection/websocket" if mode == "centrifuge" else "/ws"
    load = [sys.executable, str(R.BENCH / "loadgen.py"), f"--url=ws://{bind}{path}",
            f"--send-url=http://{bind}/send.py", f"--clients={opts.clients}",
            f"--messages={opts.messages}", "--wait-stdin"]  # fmt: skip
    if mode == "centrifuge":
        load += ["--protocol", "centrifuge", "--token", R.TOKEN]
    if tree == "floor":
        load.append("--no-count")
    start, end = ("dialed", None) if opts.measure == "connect" else ("connected", "broadcast_done")
    with R.started([*R.pinned(0), *cmd], env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL) as proc:  # fmt: skip
        R.wait_listening(port, proc)
        time.sleep(0.5)
        with R.started([*R.pinned(1), *load], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE) as gen:  # fmt: skip
            assert gen.stdin is not None
            assert gen.stderr is not None
            before = R.cpu_seconds(proc.pid)
            rss_before = R.rss_kb(proc.pid)
            began = time.perf_counter()
            for line in gen.stderr:
                if not line.startswith("@phase "):
                    continue
                phase = line.split()[1]
                if phase == start and end is not None:
                    before = R.cpu_seconds(proc.pid)  # the broadcasts start now
                elif phase == (end or start):
                    spent = R.cpu_seconds(proc.pid) - before
                    wall = time.perf_counter() - began
                    grown = R.rss_kb(proc.pid) - rss_before
                    break
                gen.stdin.write("\n")
                gen.stdin.flush()
            else:
                raise RuntimeError(f"{tree} {mode}: the load generator ended early")
    if opts.measure == "delivery":
        return {"cpu": spent * 1e6 / (opts.clients * opts.messages)}
    return {"cpu": spent * 1e6 / opts.clients, "rate": opts.clients / wall,
            "kb": grown / opts.clients}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", required=True, help="comma-separated trees (or floor)")
    p.add_argument("--measure", choices=("connect", "delivery"), default="connect")
    p.add_argument("--modes", default="raw,centrifuge", help="connect: raw, centrifuge or both")
    p.add_argument("--clients", type=int, default=4000)
    p.add_argument("--messages", type=int, default=100, help="delivery: broadcasts")
    p.add_argument("--rounds", type=int, default=3)
    opts = p.parse_args()
    if opts.measure == "connect":
        opts.messages = 1  # the broadcasts are not measured
    modes = opts.modes.split(",") if opts.measure == "connect" else ["raw"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for round_ in range(1, opts.rounds + 1):
        for tree in opts.trees.split(","):
            for mode in modes:
                if tree == "floor" and mode != "raw":
                    continue
                got = one(tree, mode, opts)
                results.setdefault((tree, mode), []).append(got)
                shown = " ".join(f"{k}={v:.2f}" for k, v in got.items())
                print(f"round {round_}: {tree} {mode} {shown}", file=sys.stderr)
    unit = "connection" if opts.measure == "connect" else "delivery"
    head = f"| tree | clients | server CPU µs per {unit}: median | min | max |"
    if opts.measure == "connect":
        head += " handshakes/s: median | KB per connection: median |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for (tree, mode), runs in results.items():
        name = tree if opts.measure == "delivery" else f"{tree} ({mode})"
        costs = [r["cpu"] for r in runs]
        row = (f"| {name} | {opts.clients:,} | {statistics.median(costs):.2f} | "
               f"{min(costs):.2f} | {max(costs):.2f} |")  # fmt: skip
        if opts.measure == "connect":
            rate = statistics.median(r["rate"] for r in runs)
            kb = statistics.median(r["kb"] for r in runs)
            row += f" {rate:,.0f} | {kb:.1f} |"
        print(row)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
