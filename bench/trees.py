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

CPU time drifts by ±10% between rounds on this shared machine. ``--count
instructions`` counts instead: each server runs under Valgrind's callgrind with
instrumentation off (``--instr-atstart=no``); ``callgrind_control -i on`` switches it
on as the measured phase starts and ``callgrind_control --dump`` reads the
instructions executed (Ir, every thread) as it ends, per connection or per
delivery. The server is some 50x slower there, so use a few hundred clients; the
load generator gets long timeouts, and the server a fixed hash seed.

A tree is a checkout of the repository (``git worktree add /tmp/before HEAD~1``);
``floor`` stands for the bare-asyncio anchor (delivery only)::

    python bench/trees.py --trees /tmp/before,. --measure connect --clients 4000
    python bench/trees.py --trees /tmp/before,.,floor --measure delivery
    python bench/trees.py --trees /tmp/before,. --count instructions --clients 500 --rounds 2
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import IO

import run as R

#: The entry-point group realtime finds its plugins by.
PLUGIN_GROUP = "realtime.plugins"
#: Under callgrind a phase lasts some 50x longer, so work driven by the clock (keepalive
#: pings to every client every 20 s) would land in it by chance: turned off there.
TIMERS_OFF = ("--ping-interval", "0")
#: Load-generator limits for a server under callgrind (some 50x slower than native).
SLOW_LOADGEN = ("--connect-timeout=300", "--connect-deadline=3600", "--warmup-deadline=1800",
                "--timeout=600", "--deadline=7200")  # fmt: skip


class Callgrind:
    """Servers run under callgrind, instrumentation off until :meth:`start`.

    Its dumps go to a temporary folder that lives as long as this object's
    :meth:`session`; only the dump :meth:`read` asks for is opened.
    """

    def __init__(self, folder: Path, keep: Path | None = None) -> None:
        self.folder = folder
        self.keep = keep  # where each measured dump is kept, for callgrind_annotate
        exe = shutil.which("valgrind")
        control = shutil.which("callgrind_control")
        if exe is None or control is None:
            raise SystemExit("--count instructions needs valgrind and callgrind_control")
        self.exe, self.control = exe, control

    @classmethod
    @contextlib.contextmanager
    def session(cls, keep: Path | None = None) -> Iterator[Callgrind]:
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="trees-callgrind-") as folder:
            yield cls(Path(folder), keep)

    def wrap(self, cmd: list[str]) -> list[str]:
        """``cmd`` under callgrind, counting nothing until :meth:`start`."""
        out = self.folder / "callgrind.%p.out"
        return [self.exe, "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={out}", *cmd]  # fmt: skip

    @contextlib.contextmanager
    def log(self) -> Iterator[IO[str]]:
        """The server's stderr (valgrind's own lines too), overwritten each round."""
        with (self.folder / "server.log").open("w") as f:
            yield f

    def tail(self, lines: int = 15) -> str:
        """The end of the last server's stderr, for an error message."""
        text = (self.folder / "server.log").read_text(errors="replace")
        return "server stderr:\n" + "\n".join(text.splitlines()[-lines:])

    def _control(self, pid: int, *args: str) -> None:
        subprocess.run([self.control, *args, str(pid)], check=True, timeout=120,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip

    def start(self, pid: int) -> None:
        """Zero the counters and count from now on."""
        self._control(pid, "--zero")
        self._control(pid, "--instr=on")

    def read(self, pid: int, name: str = "") -> int:
        """Instructions (Ir, all threads) since :meth:`start`; counting stops.

        With ``keep``, the dump is kept there as ``name.callgrind``."""
        before = set(self.folder.glob(f"callgrind.{pid}.out.*"))
        self._control(pid, "--dump=measured")
        self._control(pid, "--instr=off")
        dumps = set(self.folder.glob(f"callgrind.{pid}.out.*")) - before
        if len(dumps) != 1:
            raise RuntimeError(f"callgrind wrote {len(dumps)} dumps for pid {pid}, not one")
        dump = dumps.pop()
        with dump.open() as f:
            for line in f:  # "summary:" can wrap around; "totals:" is the sum of the lines
                if line.startswith("totals:"):
                    total = int(line.split()[1])
                    break
            else:
                raise RuntimeError(f"no totals: line in {dump}")
        if self.keep is not None and name:
            shutil.move(dump, self.keep / f"{name}.callgrind")
        else:
            dump.unlink()  # one is a few hundred KB; rounds add up
        return total


def tree_plugins(root: Path) -> tuple[list[Path], list[str]]:
    """The plugin folders of a tree, and the installed plugins it has no code for.

    The plugins are found by the entry points of the one installed distribution (the
    main tree's); a plugin added since an older tree was cut would load from the main
    tree into the old code, so it is disabled for that tree.
    """
    folders = sorted(p for p in (root / "plugins").glob("*") if p.is_dir())
    packages = {q.name for p in folders for q in p.iterdir() if q.is_dir()}
    missing = sorted(ep.name for ep in metadata.entry_points(group=PLUGIN_GROUP)
                     if ep.value.split(".")[0] not in packages)  # fmt: skip
    return folders, missing


def server(tree: str, mode: str, bind: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one server: ``tree``'s code, or the floor."""
    env = dict(os.environ)
    if tree == "floor":
        port = bind.rpartition(":")[2]
        script = R.anchor(R.ANCHORS, "py-floor", "server.py")
        return [sys.executable, str(script), "--port", port], env
    root = Path(tree).resolve()
    folders, missing = tree_plugins(root)
    env["PYTHONPATH"] = os.pathsep.join(str(p) for p in (root / "host", *folders))
    if missing:  # plugins installed from the main tree that this older tree lacks
        env["REALTIME_DISABLE_PLUGINS"] = ",".join(missing)
    code = "import sys; from realtime.cli import main; sys.argv[0] = 'realtime'; sys.exit(main())"
    args = R.realtime_command(bind, root / "app")
    cmd = [sys.executable, "-c", code, *args[args.index("run") :]]  # this tree's code
    if mode == "centrifuge":
        cmd += ["--token-hmac-secret", R.TOKEN_SECRET, "--client-ping-interval", "0"]
    return cmd, env


def one(
    tree: str, mode: str, opts: argparse.Namespace, cg: Callgrind | None = None, name: str = ""
) -> dict[str, float]:
    """One fresh server and one load: server CPU µs per connection or per delivery;
    for connect, also handshakes a second and KB of resident memory per connection.
    With ``cg``, instructions (Ir) per connection or delivery instead (its dump kept
    as ``name`` if ``cg`` keeps dumps)."""
    port = R.free_port()
    bind = f"{R.HOST}:{port}"
    cmd, env = server(tree, mode, bind)
    if cg is not None:
        cmd = cg.wrap([*cmd, *TIMERS_OFF]) if tree != "floor" else cg.wrap(cmd)
        env["PYTHONHASHSEED"] = "0"  # the same dict and set orders in every round
    path = "/connection/websocket" if mode == "centrifuge" else "/ws"
    load = [sys.executable, str(R.BENCH / "loadgen.py"), f"--url=ws://{bind}{path}",
            f"--send-url=http://{bind}/send.py", f"--clients={opts.clients}",
            f"--messages={opts.messages}", "--wait-stdin"]  # fmt: skip
    if mode == "centrifuge":
        load += ["--protocol", "centrifuge", "--token", R.TOKEN]
    if tree == "floor":
        load.append("--no-count")
    if cg is not None:
        load += SLOW_LOADGEN
    start, end = ("dialed", None) if opts.measure == "connect" else ("connected", "broadcast_done")
    errors = contextlib.ExitStack()
    log = errors.enter_context(cg.log()) if cg is not None else subprocess.DEVNULL
    with errors, R.started([*R.pinned(0), *cmd], env=env, stdout=subprocess.DEVNULL,
                           stderr=log) as proc:  # fmt: skip
        try:
            R.wait_listening(port, proc, limit=20.0 if cg is None else 300.0)
        except RuntimeError as e:
            raise RuntimeError(f"{e}; {cg.tail() if cg is not None else ''}") from None
        time.sleep(0.5)
        if cg is not None and end is None:
            cg.start(proc.pid)  # connect: counted from before the first dial
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
                    if cg is not None:
                        cg.start(proc.pid)
                elif phase == (end or start):
                    spent = R.cpu_seconds(proc.pid) - before
                    ir = cg.read(proc.pid, name) if cg is not None else 0
                    wall = time.perf_counter() - began
                    grown = R.rss_kb(proc.pid) - rss_before
                    break
                gen.stdin.write("\n")
                gen.stdin.flush()
            else:
                raise RuntimeError(f"{tree} {mode}: the load generator ended early")
    units = opts.clients * opts.messages if opts.measure == "delivery" else opts.clients
    if cg is not None:
        return {"ir": ir / units}
    if opts.measure == "delivery":
        return {"cpu": spent * 1e6 / units}
    return {"cpu": spent * 1e6 / opts.clients, "rate": opts.clients / wall,
            "kb": grown / opts.clients}  # fmt: skip


def instruction_rows(
    results: dict[tuple[str, str], list[dict[str, float]]], opts: argparse.Namespace
) -> list[str]:
    """The table of ``--count instructions``: Ir per unit, the spread between rounds
    (max - min over the median) and each tree against the first tree, same mode."""
    unit = "connection" if opts.measure == "connect" else "delivery"
    rows = [f"| tree | clients | instructions (Ir) per {unit}: median | min | max | "
            "spread | vs first tree |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    first: dict[str, float] = {}
    for (tree, mode), runs in results.items():
        name = tree if opts.measure == "delivery" else f"{tree} ({mode})"
        counts = [r["ir"] for r in runs]
        mid = statistics.median(counts)
        base = first.setdefault(mode, mid)
        rows.append(f"| {name} | {opts.clients:,} | {mid:,.0f} | {min(counts):,.0f} | "
                    f"{max(counts):,.0f} | {(max(counts) - min(counts)) / mid:.2%} | "
                    f"{mid / base - 1:+.2%} |")  # fmt: skip
    return rows


def cpu_rows(
    results: dict[tuple[str, str], list[dict[str, float]]], opts: argparse.Namespace
) -> list[str]:
    """The table of ``--count cpu``: medians of server CPU (and rate and memory)."""
    unit = "connection" if opts.measure == "connect" else "delivery"
    head = f"| tree | clients | server CPU µs per {unit}: median | min | max |"
    if opts.measure == "connect":
        head += " handshakes/s: median | KB per connection: median |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for (tree, mode), runs in results.items():
        name = tree if opts.measure == "delivery" else f"{tree} ({mode})"
        costs = [r["cpu"] for r in runs]
        row = (f"| {name} | {opts.clients:,} | {statistics.median(costs):.2f} | "
               f"{min(costs):.2f} | {max(costs):.2f} |")  # fmt: skip
        if opts.measure == "connect":
            rate = statistics.median(r["rate"] for r in runs)
            kb = statistics.median(r["kb"] for r in runs)
            row += f" {rate:,.0f} | {kb:.1f} |"
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trees", required=True, help="comma-separated trees (or floor)")
    p.add_argument("--measure", choices=("connect", "delivery"), default="connect")
    p.add_argument("--modes", default="raw,centrifuge", help="connect: raw, centrifuge or both")
    p.add_argument("--clients", type=int, default=4000)
    p.add_argument("--messages", type=int, default=100, help="delivery: broadcasts")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--count", choices=("cpu", "instructions"), default="cpu",
                   help="server CPU time, or instructions under callgrind")  # fmt: skip
    p.add_argument("--dumps", type=Path, default=None,
                   help="instructions: keep the measured callgrind dumps here")  # fmt: skip
    opts = p.parse_args()
    if opts.measure == "connect":
        opts.messages = 1  # the broadcasts are not measured
    modes = opts.modes.split(",") if opts.measure == "connect" else ["raw"]
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with contextlib.ExitStack() as stack:
        cg = (stack.enter_context(Callgrind.session(opts.dumps))
              if opts.count == "instructions" else None)  # fmt: skip
        for round_ in range(1, opts.rounds + 1):
            for tree in opts.trees.split(","):
                for mode in modes:
                    if tree == "floor" and mode != "raw":
                        continue
                    name = f"{round_:02d}-{Path(tree).resolve().name}-{opts.measure}-{mode}"
                    got = one(tree, mode, opts, cg, name)
                    results.setdefault((tree, mode), []).append(got)
                    shown = " ".join(f"{k}={v:.2f}" for k, v in got.items())
                    print(f"round {round_}: {tree} {mode} {shown}", file=sys.stderr, flush=True)
    rows = instruction_rows if opts.count == "instructions" else cpu_rows
    print("\n".join(rows(results, opts)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
