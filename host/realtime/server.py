"""Serving: one process, or a supervisor that forks several onto one listening socket."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from hypercorn.asyncio.run import worker_serve
from hypercorn.config import Config as ServerConfig
from hypercorn.utils import LifespanFailureError, repr_socket_addr, wrap_app

from . import gcpolicy, internals, tcp
from .errors import PluginError
from .host import Host, get_host
from .internal import internal_server_config
from .limits import LogThrottle, throttled_exception_handler
from .settings import INTERNAL_BIND

log = logging.getLogger("realtime")

LoopFactory = Callable[[], asyncio.AbstractEventLoop] | None
#: Seconds Hypercorn waits for its own connection tasks once the host has drained.
DRAINED_GRACE = 0.5
#: A worker that exits 1 (it could not start) sooner than this after it was forked
#: stops the supervisor: the next one would fail the same way.
STARTUP_WINDOW = 3.0
#: Pause before replacing a worker that died, so a crash loop does not spin.
RESPAWN_DELAY = 0.5


def loop_factory(choice: str) -> LoopFactory:
    """asyncio's loop, or uvloop's when asked for (ImportError if it is not installed)."""
    if choice != "uvloop":
        return None
    uvloop = importlib.import_module("uvloop")
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def serve_process(app: Any, config: ServerConfig, factory: LoopFactory) -> int:
    """Serve in this process until SIGINT or SIGTERM; the exit code to use."""
    host = get_host(app)
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(_serve(app, config))
    except (PluginError, LifespanFailureError) as exc:
        # The traceback is already in the log; end with the one line that matters.
        print(f"realtime: {host.startup_error or exc}", file=sys.stderr)
        return 1
    return 0


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connections cancelled at exit are expected; anything else is still reported."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def _serve(app: Any, config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM, then let plugins drain before Hypercorn stops.

    With ``--internal-bind``, the internal app is served beside, in this loop: bound
    first (a bad address stops start-up before any plugin connects), serving once
    the host has started (its ``/-/health`` must not say ok before), stopped once the
    public listener has drained.
    """
    host = get_host(app)
    internal = _Internal(host, config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Out of file descriptors, asyncio reports every refused accept: one line per interval.
    loop.set_exception_handler(throttled_exception_handler(LogThrottle()))

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("stopping: draining (up to %s s)", config.graceful_timeout)
        await host.drain()
        # Scripts have finished and plugins have closed their connections. What
        # Hypercorn still waits for is idle: its WebSocket ping tasks sleep out their
        # interval after the socket is gone. Don't make Ctrl-C wait for them.
        config.graceful_timeout = DRAINED_GRACE
        loop.set_exception_handler(_quiet_cancellations)
        internal.stopping.set()

    # Frozen in each worker once its start-up is done (after the fork, plugins started).
    frozen = gcpolicy.frozen_after_startup(_after_startup(app, internal.started.set))
    wrapped = wrap_app(frozen, config.wsgi_max_body_size, mode="asgi")
    # Once per process: where the libraries are not what the fast path knows, say so
    # (the takeover, the guard and the lean TCP server then stay off by themselves).
    internals.warn(log)
    tcp.install()
    internal.start(stop)
    try:
        await worker_serve(wrapped, config, shutdown_trigger=shutdown_trigger)
    finally:
        await internal.stop()


def _after_startup(app: Any, callback: Callable[[], None]) -> Any:
    """``app``, calling ``callback`` once its lifespan start-up has completed."""

    async def wrapped(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_and_call(message: Any) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                callback()

        await app(scope, receive, send_and_call)

    return wrapped


class _Internal:
    """The internal listener of one serving process, if ``--internal-bind`` is set."""

    def __init__(self, host: Host, public: ServerConfig) -> None:
        self.host = host
        self.bind = host.setting(INTERNAL_BIND)
        self.config = internal_server_config(public, self.bind, DRAINED_GRACE)
        #: Set once the host has started, and once the public listener has drained.
        self.started = asyncio.Event()
        self.stopping = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self, stop: asyncio.Event) -> None:
        """Bind now, serve once started; a failure of the listener stops the process."""
        app = self.host.internal_app
        if app is None:
            return
        try:
            sockets = self.config.create_sockets()
        except OSError as exc:
            raise PluginError(f"--internal-bind {self.bind}: {exc}") from exc
        for sock in sockets.insecure_sockets:
            where = repr_socket_addr(sock.family, sock.getsockname())
            log.info("internal listener on %s (pid %d)", where, os.getpid())
        wrapped = wrap_app(app, self.config.wsgi_max_body_size, mode="asgi")

        async def serve() -> None:
            await self.started.wait()
            await worker_serve(
                wrapped, self.config, sockets=sockets, shutdown_trigger=self.stopping.wait
            )

        def done(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and task.exception() is not None and not stop.is_set():
                log.error("the internal listener failed; stopping", exc_info=task.exception())
                stop.set()

        self.task = asyncio.create_task(serve(), name="realtime internal listener")
        self.task.add_done_callback(done)

    async def stop(self) -> None:
        """After the public listener: let the internal one close its connections."""
        task, self.task = self.task, None
        if task is None:
            return
        self.stopping.set()
        if not self.started.is_set():
            task.cancel()  # the host never started: nothing was served
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            raise PluginError(f"the internal listener failed: {type(exc).__name__}: {exc}") from exc


def supervise(app: Any, config: ServerConfig, factory: LoopFactory, workers: int) -> int:
    """Fork ``workers`` processes listening on one port and keep them running.

    Each worker binds its own socket with ``SO_REUSEPORT`` (Hypercorn does so when
    ``config.workers`` is above 1), so the kernel spreads connections evenly.

    A worker that dies is replaced (its clients reconnect to the others); SIGINT or
    SIGTERM is passed on to every worker, which drains and exits; a worker that
    fails while starting stops them all, since the next one would fail the same way.
    """
    config.workers = workers
    children: dict[int, tuple[int, float]] = {}
    stopping = False
    exit_code = 0

    host = get_host(app)

    def exited(pid: int) -> None:
        """Tell plugins, before any replacement: a failing one is logged, never fatal."""
        for plugin, call in host.plugins.bound("worker_exited", host=host, pid=pid):
            try:
                result = call()
                if inspect.isawaitable(result):
                    with contextlib.suppress(AttributeError):
                        result.close()  # type: ignore[attr-defined]
                    raise TypeError("worker_exited runs in the supervisor: it must not be async")
            except Exception:
                log.error("plugin %r failed in worker_exited (pid %d)", plugin, pid, exc_info=True)

    def spawn(index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            code = 1
            try:
                code = serve_process(app, config, factory)
            finally:
                os._exit(code)
        children[pid] = (index, time.monotonic())
        log.info("worker %d started (pid %d)", index, pid)

    def stop_all(signum: int = signal.SIGTERM, frame: Any = None) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)
    for index in range(workers):
        spawn(index)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        index, started = children.pop(pid)
        code = os.waitstatus_to_exitcode(status)
        exited(pid)
        if stopping:
            exit_code = exit_code or (0 if code == 0 else 1)
            continue
        if code == 1 and time.monotonic() - started < STARTUP_WINDOW:
            log.error("worker %d (pid %d) failed to start (exit %s); stopping", index, pid, code)
            exit_code = 1
            stop_all()
            continue
        log.error("worker %d (pid %d) died (exit %s); starting a new one", index, pid, code)
        time.sleep(RESPAWN_DELAY)
        if not stopping:
            spawn(index)
    return exit_code
