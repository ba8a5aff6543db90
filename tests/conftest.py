"""Shared fixtures: real servers (Hypercorn, Caddy, Redis) on loopback, and polling waits.

Ports: a server binds port 0, or a socket the test made and hands over, or a port the
test reserves for as long as it runs (see ``reserve_port``); never a number found free,
closed and passed on, which another process may take in between (docs/testing.md).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

if TYPE_CHECKING:  # imported by the fixture: the unit tier never loads Playwright
    from playwright.async_api import Browser

ROOT = Path(__file__).resolve().parent.parent
APP_DIR = ROOT / "app"

#: Sockets the running test holds (port reservations, listening sockets): closed by
#: the autouse fixture ``_release_sockets`` when the test ends, so a reserved port
#: stays reserved across a server's restarts and no socket outlives its test.
_HELD: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _release_sockets() -> Iterator[None]:
    """Autouse fixtures are set up first, so this runs after every other teardown."""
    yield
    while _HELD:
        _HELD.pop().close()


def reserve_port(host: str = "127.0.0.1") -> int:
    """A port number the kernel hands to no one else until the test ends.

    A socket bound with ``SO_REUSEADDR`` and ``SO_REUSEPORT`` that never listens. The
    kernel never picks its port for another ``bind(0)`` or outgoing connection, and
    refuses a plain ``bind`` to it; a server that binds the number with
    ``SO_REUSEADDR`` (Hypercorn, redis-server, Caddy, ``listening_socket(port)``) or
    ``SO_REUSEPORT`` (Hypercorn's workers, Caddy) binds beside it. It takes no
    connections itself, so a stopped server's port refuses them, as in production, and
    a server started again gets the same port back. ``host="0.0.0.0"`` keeps the port
    off every IPv4 address (for Caddy, which listens on all of them).
    """
    sock = socket.socket()
    _HELD.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, 0))
    port: int = sock.getsockname()[1]
    return port


def listening_socket(port: int = 0, host: str = "127.0.0.1") -> socket.socket:
    """A listening socket, held until the test ends (``port=0``: the kernel picks one).

    With a ``port`` (one from ``reserve_port``) it is bound with ``SO_REUSEPORT`` beside
    the reservation. Hand it to a server with ``inherited_bind``.
    """
    sock = socket.socket()
    _HELD.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(1024)
    return sock


def inherited_bind() -> tuple[str, int]:
    """For Hypercorn in this process: ``config.bind = [bind]``, served on ``port``.

    A listening socket on a port the kernel picks, given over to Hypercorn as
    ``fd://N``: Hypercorn owns it from then on and closes it when it stops.
    """
    sock = listening_socket()
    port: int = sock.getsockname()[1]
    return f"fd://{sock.detach()}", port


def free_port() -> int:
    """The old name of ``reserve_port()``: the port stays reserved until the test ends
    (it used to be a number found free and closed, which anyone could take)."""
    return reserve_port()


async def eventually(
    predicate: Callable[[], object | Awaitable[object]],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "",
) -> object:
    """Poll ``predicate`` (sync or async) until it returns something true; that value.

    An AssertionError after ``timeout`` seconds, naming ``message`` and the last value.
    For "this happens": never sleep a fixed time and count. (For "this does not happen",
    a short settle before counting is the honest wait; say so where it is done.)
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message or 'condition'} not met within {timeout} s: {value!r}")
        await asyncio.sleep(interval)


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.02,
    message: str = "",
) -> object:
    """``eventually`` for synchronous tests: polls ``predicate`` with ``time.sleep``."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message or 'condition'} not met within {timeout} s: {value!r}")
        time.sleep(interval)


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
    """``realtime run`` in a subprocess, as a user starts it.

    Its port is reserved for the whole test (``reserve_port``), so ``stop()`` and
    ``start()`` again keep it and nothing else can take it in between. One worker is
    handed a listening socket (``--bind fd://N``); several bind the port themselves
    (Hypercorn sets ``SO_REUSEPORT`` for them), so the kernel spreads connections over
    them as in production. ``port=`` binds that number as given (the caller's choice).
    """

    def __init__(
        self,
        app_dir: Path,
        *args: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        internal: bool = False,
    ) -> None:
        self.app_dir = app_dir
        self.args = args
        self.reserved = port is None
        self.port = reserve_port() if port is None else port
        #: The internal listener's port (``--internal-bind``), when ``internal``.
        self.internal_port = reserve_port() if internal else None
        self.env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = app_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def internal_url(self) -> str:
        assert self.internal_port is not None, "started without internal=True"
        return f"http://127.0.0.1:{self.internal_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def workers(self) -> int:
        """``--workers`` among the arguments (1 without)."""
        args = list(self.args)
        for index, arg in enumerate(args):
            if arg == "--workers" and index + 1 < len(args):
                return int(args[index + 1])
            if arg.startswith("--workers="):
                return int(arg.partition("=")[2])
        return 1

    def start(self) -> Server:
        """Start it and wait until it answers (on the internal listener too, if any)."""
        listeners: list[socket.socket] = []

        def bind(port: int) -> str:
            if self.reserved and self.workers == 1:
                listeners.append(listening_socket(port))
                return f"fd://{listeners[-1].fileno()}"
            return f"127.0.0.1:{port}"

        command = [sys.executable, "-m", "realtime", "run", "--bind", bind(self.port)]
        if self.internal_port is not None:
            command += ["--internal-bind", bind(self.internal_port)]
        command += ["--app", str(self.app_dir), *self.args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        try:
            with self.log_path.open("ab") as log:
                self.process = subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=self.env,
                    pass_fds=tuple(listener.fileno() for listener in listeners),
                )
        finally:
            # The server has its own copy now: once it exits, the port refuses
            # connections (only the reservation, which never listens, stays).
            for listener in listeners:
                listener.close()
        wait_for_http(self.url + "/", process=self.process)
        if self.workers > 1:
            self._wait_for_every_worker(offset)
        if self.internal_port is not None:
            wait_for_http(self.internal_url + "/-/health", process=self.process)
        return self

    def _wait_for_every_worker(self, offset: int, timeout: float = 15.0) -> None:
        """Wait until each worker listens: the first answering says nothing of the rest.

        Each worker binds the port itself, so until the last one logs Hypercorn's
        "Running on" line the kernel hands every connection to the ones already up.
        """
        banner = f"Running on http://127.0.0.1:{self.port} ".encode()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                if log.read().count(banner) >= self.workers:
                    return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}")
            time.sleep(0.05)
        raise TimeoutError(f"fewer than {self.workers} workers listening within {timeout} s")

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
    """Caddy serving on a port reserved for the test (``reserve_port``), and that port.

    Debian's Caddy (2.6) cannot take a listening socket from its parent (``fd/N``
    addresses came later), but it binds with ``SO_REUSEADDR`` and ``SO_REUSEPORT``, so
    it binds a reserved port, and gets it back when killed and started again on it
    (``caddy_process``). The reservation is on every IPv4 address, since the Caddyfile
    listens on all of them. Should Caddy still report "address already in use" (a
    socket bound beside the reservation by hand), another port is tried.
    """
    for attempt in range(attempts):
        port = reserve_port("0.0.0.0")
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
    """Debian's redis-server on a loopback port; stop() and start() keep the port.

    redis-server takes no listening socket from its parent and ``--port 0`` turns TCP
    off, but it binds with ``SO_REUSEADDR``, so it binds a port the test reserved
    (``reserve_port``): killed and started again, it gets the same port, which nothing
    else could take meanwhile. Should it still report "Address already in use" at its
    first start, another port is tried; at a restart that fails naming the port.
    Readiness is Redis's own log line, never a connection that anything listening
    there would accept.
    """

    ATTEMPTS = 5

    def __init__(self, workdir: Path, *, appendonly: bool = False) -> None:
        self.port = reserve_port()
        self.workdir = workdir
        #: Persist every write (AOF, fsync always): a killed Redis comes back with it all.
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path:
        return self.workdir / "redis.log"

    def start(self) -> RedisServer:
        for attempt in range(1 if self.started else self.ATTEMPTS):
            if attempt:
                self.port = reserve_port()
            if self._launch():
                self.started = True
                return self
        if self.started:
            raise RuntimeError(
                f"redis-server could not bind 127.0.0.1:{self.port} again: another process "
                "bound the port while Redis was down (see redis.log)"
            )
        raise RuntimeError(f"redis-server found no free port in {self.ATTEMPTS} attempts")

    def _launch(self) -> bool:
        """Start redis-server on ``self.port``: True once ready, False if the port is taken."""
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
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        self.process = process

        def outcome() -> str:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
            if "Ready to accept connections" in text:
                return "ready"
            if process.poll() is not None:
                return "in use" if "Address already in use" in text else "exited"
            return ""

        try:
            result = wait_until(outcome, timeout=10, message="redis-server ready")
        except AssertionError:
            process.kill()
            process.wait(10)
            self.process = None
            raise
        if result == "ready":
            return True
        self.process = None
        if result == "in use":
            return False
        raise RuntimeError(f"redis-server exited with {process.returncode}: see {self.log_path}")

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
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()
