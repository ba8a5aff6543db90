"""Redis topologies on loopback for the broker's tests: a master with a replica watched
by Sentinels (Debian's redis-sentinel), and several plain Redis shards.

Each process binds a port the test reserved (``reserve_port``: redis-server binds
with ``SO_REUSEADDR``), so one killed and started again gets its port back. Readiness
is each process's own word (its log, or what it answers), never a fixed sleep.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RedisServer, reserve_port, wait_until

MASTER_NAME = "mymaster"
#: Sentinels call a master down after this long without an answer...
DOWN_AFTER_MS = 1000
#: ...and give a failover this long before another may be tried.
FAILOVER_TIMEOUT_MS = 3000


class RedisProcess:
    """redis-server (or redis-sentinel, ``sentinel=True``) on a reserved loopback port."""

    def __init__(self, workdir: Path, *args: str, sentinel: bool = False) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.port = reserve_port()
        self.args = args
        self.sentinel = sentinel
        #: What redis-cli authenticates with (set by whoever gave it a requirepass).
        self.password = ""
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> RedisProcess:
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        if self.sentinel:
            config = self.workdir / "sentinel.conf"
            if not config.exists():
                config.write_text(
                    f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
                    + "".join(f"{line}\n" for line in self.args)
                )
            command = [_binary("redis-sentinel"), str(config)]
        else:
            command = [
                _binary("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.workdir), *self.args,
            ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        process = self.process

        def ready() -> bool:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited: see {self.log_path}\n{text[-2000:]}")
            return "Ready to accept connections" in text or "Sentinel ID is" in text

        wait_until(ready, timeout=10, message=f"{command[0]} on {self.port} ready")
        return self

    def kill(self) -> None:
        """SIGKILL: an outage, not a polite shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def cli(self, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *auth, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not installed: run .ci/run or apt-get install {name}")
    return path


class SentinelSet:
    """A master, its replica, and Sentinels watching them (quorum 2 of 3)."""

    def __init__(
        self,
        workdir: Path,
        sentinels: int = 3,
        quorum: int = 2,
        *,
        password: str = "",
        sentinel_password: str = "",
    ) -> None:
        """``password``: Redis's (``requirepass``, and ``masterauth`` for replication and
        the Sentinels' ``auth-pass``); ``sentinel_password``: the Sentinels' own."""
        auth = ("--requirepass", password, "--masterauth", password) if password else ()
        self.master = RedisProcess(workdir / "master", *auth)
        self.replica = RedisProcess(
            workdir / "replica", "--replicaof", "127.0.0.1", str(self.master.port), *auth
        )
        self.password = password
        self.sentinel_password = sentinel_password
        lines = [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} {quorum}",
            f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
            f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if password:
            lines.append(f"sentinel auth-pass {MASTER_NAME} {password}")
        if sentinel_password:
            # The Sentinels ask each other with it too (sentinel-pass).
            lines.append(f"requirepass {sentinel_password}")
            lines.append(f"sentinel sentinel-pass {sentinel_password}")
        self.sentinels = [
            RedisProcess(workdir / f"sentinel{n}", *lines, sentinel=True) for n in range(sentinels)
        ]
        self.master.password = self.replica.password = password
        for sentinel in self.sentinels:
            sentinel.password = sentinel_password

    def url(self, *sentinels: RedisProcess, query: str = "db=0") -> str:
        """``redis+sentinel://`` naming these Sentinels (all by default)."""
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in sentinels or self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        if self.sentinel_password:
            query = "&".join(filter(None, (query, f"sentinel_password={self.sentinel_password}")))
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}" + (f"?{query}" if query else "")

    def start(self) -> SentinelSet:
        self.master.start()
        self.replica.start()
        wait_until(
            lambda: "master_link_status:up" in self.replica.cli("INFO", "replication"),
            timeout=10,
            message="the replica in sync",
        )
        for sentinel in self.sentinels:
            sentinel.start()
        others = len(self.sentinels) - 1
        for sentinel in self.sentinels:
            wait_until(
                functools.partial(self._knows, sentinel, others),
                timeout=15,
                message=f"sentinel {sentinel.port} knowing the replica and the others",
            )
        return self

    def _knows(self, sentinel: RedisProcess, others: int) -> bool:
        # Unaligned output: one "name\nvalue" per line pair, "ip" once per entry.
        replicas = sentinel.cli("SENTINEL", "replicas", MASTER_NAME).splitlines()
        peers = sentinel.cli("SENTINEL", "sentinels", MASTER_NAME).splitlines()
        return replicas.count("ip") >= 1 and peers.count("ip") >= others

    def master_port(self, sentinel: RedisProcess | None = None) -> int | None:
        """The master's port as a Sentinel tells it now."""
        answer = (sentinel or self.sentinels[0]).cli(
            "SENTINEL", "get-master-addr-by-name", MASTER_NAME
        )
        lines = answer.split()
        return int(lines[1]) if len(lines) == 2 else None

    def stop(self) -> None:
        for process in (*self.sentinels, self.replica, self.master):
            process.kill()


@pytest.fixture
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    topology = SentinelSet(tmp_path / "sentinel")
    try:
        yield topology.start()
    finally:
        topology.stop()


@pytest.fixture
def redis_shards(tmp_path: Path) -> Iterator[list[RedisServer]]:
    """Three plain redis-servers (the tests' RedisServer: kill, then start again on its port)."""
    servers = []
    try:
        for n in range(3):
            workdir = tmp_path / f"shard{n}"
            workdir.mkdir()
            servers.append(RedisServer(workdir).start())
        yield servers
    finally:
        for server in servers:
            server.stop()


def shards_url(servers: list[RedisServer]) -> str:
    """``redis+shards://`` over these servers, in order."""
    return "redis+shards://" + ",".join(f"127.0.0.1:{s.port}" for s in servers) + "/0"
