"""Shared fixtures: real servers (Hypercorn, Caddy) on free loopback ports."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_http(
    url: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode} before serving {url}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered at {url} within {timeout} s")


class Server:
    """``realtime run`` in a subprocess, as a user starts it."""

    def __init__(
        self,
        app_dir: Path,
        *args: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.app_dir = app_dir
        self.args = args
        self.port = port or free_port()
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = app_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def start(self) -> Server:
        command = [
            sys.executable, "-m", "realtime", "run",
            "--bind", f"127.0.0.1:{self.port}",
            "--app", str(self.app_dir),
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=self.env
            )
        wait_for_http(self.url + "/", process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    """A copy of the project's app/ plus scripts the tests need."""
    target = tmp_path / "app"
    shutil.copytree(APP_DIR, target)
    (target / "boom.py").write_text("raise ValueError('script failed on purpose')\n")
    (target / "admin").mkdir()
    (target / "admin" / "tool.py").write_text("print('admin tool', request.method)\n")
    return target


#: The fan-out paths every behavioural test runs against.
FAN_OUT_MODES = {"fast-path": (), "plain": ("--no-fast-path",)}


@pytest.fixture(params=list(FAN_OUT_MODES))
def server(app_dir: Path, request: pytest.FixtureRequest) -> Iterator[Server]:
    srv = Server(
        app_dir,
        "--ping-interval", "1", "--pong-timeout", "1", "--script-timeout", "2",
        *FAN_OUT_MODES[request.param],
    ).start()  # fmt: skip
    yield srv
    srv.stop()


def caddy_process(
    upstream_port: int,
    http_port: int,
    log_path: Path,
    config: str = "Caddyfile",
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """A Caddyfile of the project's, only its ports moved through its environment variables."""
    caddy = shutil.which("caddy")
    if caddy is None:
        raise RuntimeError("caddy is not installed: run .ci/run or apt-get install caddy")
    env = {
        **os.environ,
        "REALTIME_HTTP_PORT": str(http_port),
        "REALTIME_UPSTREAM": f"127.0.0.1:{upstream_port}",
        "HOME": str(log_path.parent),
        "XDG_DATA_HOME": str(log_path.parent / "caddy-data"),
        "XDG_CONFIG_HOME": str(log_path.parent / "caddy-config"),
        **(extra_env or {}),
    }
    command = [caddy, "run", "--config", str(ROOT / config), "--adapter", "caddyfile"]
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def start_caddy(
    upstream_port: int,
    log_path: Path,
    config: str = "Caddyfile",
    extra_env: Mapping[str, str] | None = None,
    attempts: int = 5,
) -> tuple[subprocess.Popen[bytes], int]:
    """Caddy serving on a free port, and that port.

    The Caddyfile listens on every address, and a port free on 127.0.0.1 may still be
    held on another loopback address (sockets in TIME_WAIT after a load run from
    127.0.0.2-4): on "address already in use" another port is tried.
    """
    for attempt in range(attempts):
        port = free_port()
        process = caddy_process(upstream_port, port, log_path, config, extra_env)
        try:
            wait_for_http(f"http://127.0.0.1:{port}/", process=process)
            return process, port
        except RuntimeError:
            in_use = "address already in use" in log_path.read_text(errors="replace")
            if not in_use or attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


@pytest.fixture
def caddy(server: Server, tmp_path: Path) -> Iterator[str]:
    process, port = start_caddy(server.port, tmp_path / "caddy.log")
    try:
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


class RedisServer:
    """Debian's redis-server on a free loopback port; stop() and start() keep the port."""

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        #: Persist every write (AOF, fsync always): a killed Redis comes back with it all.
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        server = shutil.which("redis-server")
        if server is None:
            raise RuntimeError(
                "redis-server is not installed: run .ci/run or apt-get install redis-server"
            )
        command = [
            server, "--port", str(self.port), "--bind", "127.0.0.1",
            "--save", "", "--dir", str(self.workdir),
            "--appendonly", "yes" if self.appendonly else "no", "--appendfsync", "always",
        ]  # fmt: skip
        with (self.workdir / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # an outage, not a polite shutdown
            self.process.wait(10)
        self.process = None

    def cli(self, *args: str) -> str:
        return subprocess.run(
            ["redis-cli", "-p", str(self.port), *args], capture_output=True, text=True, check=True
        ).stdout


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(workdir).start()
    yield server
    server.stop()


#: Debian's Chromium, driven by Playwright (never `playwright install`).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
