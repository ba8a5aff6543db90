"""The brokers of ``bench/workload.py``: none (``memory://``), one Redis, a Redis Cluster.

Each is a context manager yielding :class:`Broker`: the URL the server is given and
the pids whose CPU is Redis's. Every redis-server is Debian's, on a free loopback
port, no persistence, pinned to ``cpu`` (CPU 0, the server's, as ``run.py`` pins its
Redis: the load generator keeps CPU 1 to itself).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path

HOST = "127.0.0.1"
BROKERS = ("memory", "redis", "cluster")


@dataclass
class Broker:
    name: str
    url: str
    pids: list[int] = field(default_factory=list)
    version: str = ""


def free_port(highest: int = 65535) -> int:
    """A free loopback port; a cluster node's must be at most 55535 (its bus is +10000)."""
    for _ in range(200):
        with socket.socket() as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port <= highest and (highest == 65535 or _free(port + 10000)):
            return port
    raise RuntimeError(f"no free loopback port at most {highest}")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
        return True


def cli(port: int, *args: str, timeout: float = 10) -> str:
    return subprocess.run(
        ["redis-cli", "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=timeout,
    ).stdout


def scheme_installed(scheme: str) -> bool:
    return any(ep.name == scheme for ep in entry_points(group="realtime.brokers"))


def why_not(name: str) -> str | None:
    """Why a broker cannot be measured here, or None."""
    if name == "memory":
        return None
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        return "redis-server not installed (apt-get install redis-server)"
    if name == "cluster" and not scheme_installed("redis+cluster"):
        return "no redis+cluster broker installed (the realtime.brokers entry point)"
    return None


@contextlib.contextmanager
def _redis(
    workdir: Path, log: Path, cpu: int, *extra: str
) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    port = free_port(55535 if "--cluster-enabled" in extra else 65535)
    cmd = ["taskset", "-c", str(cpu), "redis-server", "--bind", HOST, "--port", str(port)]
    cmd += ["--save", "", "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no", *extra]
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {proc.returncode}; see {log}")
            with contextlib.suppress(subprocess.SubprocessError):
                if cli(port, "PING", timeout=2).strip() == "PONG":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server not answering on {port}")
            time.sleep(0.1)
        yield proc, port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _version(port: int) -> str:
    for line in cli(port, "INFO", "server").splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return "?"


@contextlib.contextmanager
def started(name: str, logdir: Path, cpu: int = 0, replicas: int = 1) -> Iterator[Broker]:
    """The broker ``name`` (one of :data:`BROKERS`), running until the block ends."""
    if name == "memory":
        yield Broker(name, "memory://")
        return
    with (
        tempfile.TemporaryDirectory(prefix=f"bench-workload-{name}-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        if name == "redis":
            proc, port = stack.enter_context(_redis(Path(tmp), logdir / "redis.log", cpu))
            yield Broker(name, f"redis://{HOST}:{port}/0", [proc.pid], _version(port))
            return
        if name != "cluster":
            raise ValueError(f"unknown broker {name!r}")
        nodes = []
        for i in range(3 * (1 + replicas)):
            work = Path(tmp) / f"node{i}"
            work.mkdir()
            flags = ("--cluster-enabled", "yes", "--cluster-config-file", str(work / "nodes.conf"))
            nodes.append(
                stack.enter_context(_redis(work, logdir / f"cluster-{i}.log", cpu, *flags))
            )
        addresses = [f"{HOST}:{port}" for _, port in nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                str(replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        deadline = time.monotonic() + 30
        while not all("cluster_state:ok" in cli(port, "CLUSTER", "INFO") for _, port in nodes):
            if time.monotonic() > deadline:
                raise RuntimeError("the cluster did not reach cluster_state:ok in 30 s")
            time.sleep(0.2)
        url = "redis+cluster://" + ",".join(addresses)
        yield Broker(name, url, [proc.pid for proc, _ in nodes], _version(nodes[0][1]))
