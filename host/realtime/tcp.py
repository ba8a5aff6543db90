"""Hypercorn's TCP connection with fewer tasks: the one place the host reaches into it.

Per connection Hypercorn (0.17 and 0.18, whose ``TCPServer`` is the same) starts an
idle task for its keep-alive timeout (a task that ``wait_for``s, so two, and a lock)
and wraps every read in ``asyncio.wait_for`` (a task each) for its read timeout: of
the seven tasks a WebSocket handshake cost, five. :class:`TCPServer` keeps the same
behaviour with a timer handle for the keep-alive timeout and ``asyncio.timeout``
for reads: about 45 µs less CPU per connection (bench/README.md).

:func:`install` swaps the class ``worker_serve`` builds, only while it is the one
this was written against; with any other Hypercorn it leaves it alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from ssl import SSLError
from typing import Any

import hypercorn.asyncio.run as hypercorn_run
from hypercorn.asyncio import tcp_server
from hypercorn.events import Closed, RawData

#: Hypercorn's own class, which :func:`install` replaces.
HYPERCORN_TCP_SERVER = tcp_server.TCPServer


class _Idle:
    """A worker's idle connections, closed at once when the worker terminates (as
    Hypercorn's idle tasks do); kept on the worker's context, one per worker."""

    __slots__ = ("timers", "watcher")

    def __init__(self, context: Any) -> None:
        self.timers: set[_IdleTimer] = set()
        self.watcher = asyncio.get_running_loop().create_task(self._close_at_termination(context))

    async def _close_at_termination(self, context: Any) -> None:
        await context.terminated.wait()
        for timer in list(self.timers):
            timer.expire()

    @staticmethod
    def of(context: Any) -> _Idle:
        idle: _Idle | None = getattr(context, "realtime_idle", None)
        if idle is None:
            idle = context.realtime_idle = _Idle(context)
        return idle


class _IdleTimer:
    """Hypercorn's keep-alive timeout as one timer handle, in place of its idle task
    (``AsyncioSingleTask``: the same ``restart`` and ``stop``)."""

    __slots__ = ("_handle", "_server", "_task_group")

    def __init__(self, server: TCPServer) -> None:
        self._server = server
        self._handle: asyncio.TimerHandle | None = None
        self._task_group: Any = None

    async def restart(self, task_group: Any, action: Any) -> None:
        # ``action`` is Hypercorn's ``_idle_timeout``: expire() does what it does.
        self._cancel()
        server = self._server
        idle = _Idle.of(server.context)
        delay = 0.0 if server.context.terminated.is_set() else server.config.keep_alive_timeout
        self._task_group = task_group
        self._handle = asyncio.get_running_loop().call_later(delay, self.expire)
        idle.timers.add(self)

    async def stop(self) -> None:
        self._cancel()

    def _cancel(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            handle.cancel()
            _Idle.of(self._server.context).timers.discard(self)

    def expire(self) -> None:
        """Close the idle connection, in its task group (the connection waits for it)."""
        self._cancel()
        task_group, self._task_group = self._task_group, None
        if task_group is None:
            return
        with contextlib.suppress(RuntimeError):  # its task group ended: closing anyway
            task_group.spawn(self._server._initiate_server_close)


class TCPServer(HYPERCORN_TCP_SERVER):
    """Hypercorn's connection with a timer for its keep-alive timeout and
    ``asyncio.timeout`` for its read timeout (which cancels the connection's own task
    rather than a task per read: the read loop ends and the connection closes, as
    before)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.idle_task = _IdleTimer(self)  # type: ignore[assignment]  # same methods

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            # Its task group has ended: drop the cycles (server -> protocol -> the
            # server's protocol_send; server <-> idle timer) so refcounting frees it.
            for name in ("protocol", "_task_group", "idle_task"):
                self.__dict__.pop(name, None)

    async def _read_data(self) -> None:
        reader = self.reader
        while not reader.at_eof():
            try:
                async with asyncio.timeout(self.config.read_timeout):
                    data = await reader.read(tcp_server.MAX_RECV)
            except (ConnectionError, OSError, TimeoutError, SSLError):
                break
            else:
                await self.protocol.handle(RawData(data))
        await self.protocol.handle(Closed())


def install() -> bool:
    """Make ``worker_serve`` build :class:`TCPServer`; False (Hypercorn untouched) when
    its class is not the one this was written against."""
    current = getattr(hypercorn_run, "TCPServer", None)
    if current is TCPServer:
        return True
    if current is not HYPERCORN_TCP_SERVER:
        return False
    setattr(hypercorn_run, "TCPServer", TCPServer)  # noqa: B010 (not exported there)
    return True
