"""A Redis Cluster on loopback: 3 primaries and 3 replicas of Debian's redis-server.

Each node is a ``redis-server --cluster-enabled yes`` in its own directory, on a port
the test reserved (``reserve_port``: a killed node started again gets it back); the
cluster is made with ``redis-cli --cluster create ... --cluster-replicas 1`` and is
ready once every node says ``cluster_state:ok``. ``cluster-node-timeout`` is small
(1 s) so that a replica takes over a killed primary within a few seconds, and
``cluster-require-full-coverage`` is off, so the other shards serve meanwhile.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import reserve_port, wait_until

#: Milliseconds before a silent node counts as failed and its replica takes over.
NODE_TIMEOUT_MS = 1000


class ClusterNode:
    """One redis-server of the cluster; stop() kills it (an outage, not a shutdown)."""

    def __init__(self, workdir: Path) -> None:
        self.port = reserve_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> ClusterNode:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        command = [
            server, "--port", str(self.port), "--bind", "127.0.0.1",
            "--cluster-enabled", "yes", "--cluster-config-file", str(self.workdir / "nodes.conf"),
            "--cluster-node-timeout", str(NODE_TIMEOUT_MS), "--save", "", "--appendonly", "no",
            # The other shards keep serving while one has no primary (Redis's default
            # refuses every command in the cluster then: CLUSTERDOWN).
            "--cluster-require-full-coverage", "no",
            "--dir", str(self.workdir),
        ]  # fmt: skip
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = self.process

        def ready() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read()
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.log_path}")
            return b"Ready to accept connections" in text

        wait_until(ready, timeout=10, message="cluster node ready")
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout


class RedisCluster:
    """Six nodes, three primaries with a replica each, made into one cluster."""

    def __init__(self, workdir: Path, *, primaries: int = 3) -> None:
        self.nodes = []
        for index in range(primaries * 2):
            directory = workdir / f"node{index}"
            directory.mkdir(parents=True)
            self.nodes.append(ClusterNode(directory))

    @property
    def url(self) -> str:
        """The broker URL naming every node (any one would do: the rest are found)."""
        return "redis+cluster://" + ",".join(node.address for node in self.nodes)

    def start(self) -> RedisCluster:
        for node in self.nodes:
            node.start()
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(n.address for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            capture_output=True, text=True, check=True, timeout=60,
        )  # fmt: skip
        self.wait_ok()
        return self

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ok and agrees on each slot's owner."""

        def ok() -> bool:
            alive = [node for node in self.nodes if node.alive]
            if not all("cluster_state:ok" in n.cli("CLUSTER", "INFO") for n in alive):
                return False
            views = {self.owners_seen_by(node) for node in alive}
            if len(views) != 1:
                return False
            if len(alive) < len(self.nodes):
                return True
            # Every replica synchronised with its primary, so that a failover can happen.
            primaries = {port for _, _, port in views.pop()}
            return all(
                "master_link_status:up" in node.cli("INFO", "replication")
                for node in alive
                if node.port not in primaries
            )

        wait_until(ok, timeout=timeout, message="cluster_state:ok on every node")

    def owners_seen_by(self, node: ClusterNode) -> tuple[tuple[int, int, int], ...]:
        """(first slot, last slot, primary's port) as ``node`` sees them, sorted."""
        ranges = []
        for line in node.cli("CLUSTER", "NODES").splitlines():
            fields = line.split()
            if "master" not in fields[2] or "fail" in fields[2]:
                continue
            port = int(fields[1].split("@")[0].rsplit(":", 1)[1])
            for part in fields[8:]:
                if part.startswith("["):
                    continue  # a slot being migrated
                first, _, last = part.partition("-")
                ranges.append((int(first), int(last or first), port))
        return tuple(sorted(ranges))

    def primary_of(self, slot: int) -> ClusterNode:
        alive = next(node for node in self.nodes if node.alive)
        for first, last, port in self.owners_seen_by(alive):
            if first <= slot <= last:
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no primary owns slot {slot}")

    def primaries(self) -> list[ClusterNode]:
        alive = next(node for node in self.nodes if node.alive)
        ports = sorted({port for _, _, port in self.owners_seen_by(alive)})
        return [next(node for node in self.nodes if node.port == port) for port in ports]

    def node_id(self, node: ClusterNode) -> str:
        return node.cli("CLUSTER", "MYID").strip()

    def move_slot(self, slot: int, target: ClusterNode) -> None:
        """Move one slot and its keys to ``target``, as ``redis-cli --cluster reshard``
        does (IMPORTING, MIGRATING, MIGRATE the keys, then SETSLOT NODE everywhere)."""
        source = self.primary_of(slot)
        source_id, target_id = self.node_id(source), self.node_id(target)
        target.cli("CLUSTER", "SETSLOT", str(slot), "IMPORTING", source_id)
        source.cli("CLUSTER", "SETSLOT", str(slot), "MIGRATING", target_id)
        while keys := source.cli("CLUSTER", "GETKEYSINSLOT", str(slot), "100").split():
            source.cli("MIGRATE", "127.0.0.1", str(target.port), "", "0", "5000", "KEYS", *keys)
        for node in (target, source, *(n for n in self.primaries() if n not in (source, target))):
            node.cli("CLUSTER", "SETSLOT", str(slot), "NODE", target_id)
        self.wait_ok()

    def keyslot(self, key: str) -> int:
        alive = next(node for node in self.nodes if node.alive)
        return int(alive.cli("CLUSTER", "KEYSLOT", key).strip())

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster]:
    cluster = RedisCluster(tmp_path / "cluster").start()
    yield cluster
    cluster.stop()
