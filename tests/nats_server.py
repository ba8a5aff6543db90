"""Debian's nats-server on a loopback port, for the NATS broker's tests.

Like ``RedisServer``: the port is reserved for the whole test (``reserve_port``) and
nats-server (Go: ``SO_REUSEADDR``) binds beside the reservation, so stopped and started
again it gets the same port, which nothing else could take meanwhile. Readiness is its
own log line ("Server is ready"), never a connection.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import reserve_port, wait_until


class NatsServer:
    def __init__(self, workdir: Path, *args: str) -> None:
        self.port = reserve_port()
        self.workdir = workdir
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "nats.log"

    def start(self) -> NatsServer:
        server = shutil.which("nats-server") or "/usr/sbin/nats-server"
        if not Path(server).exists():
            raise RuntimeError(
                "nats-server is not installed: run .ci/run or apt-get install nats-server"
            )
        command = [server, "-a", "127.0.0.1", "-p", str(self.port), *self.args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.process = process

        def outcome() -> str:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if "Server is ready" in text:
                return "ready"
            return "exited" if process.poll() is not None else ""

        try:
            result = wait_until(outcome, timeout=10, message="nats-server ready")
        except AssertionError:
            process.kill()
            process.wait(10)
            self.process = None
            raise
        if result != "ready":
            self.process = None
            raise RuntimeError(f"nats-server exited with {process.returncode}: see {self.log_path}")
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # an outage, not a polite shutdown
            self.process.wait(10)
        self.process = None


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir).start()
    yield server
    server.stop()
