"""The pool of connected WebSocket clients, and fan-out that never waits on a client.

Every client owns a bounded outgoing buffer and a sender task. ``publish`` appends
the message to every buffer and returns at once; a client that cannot keep up fills
only its own buffer, and the overflow policy decides what happens to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

log = logging.getLogger("realtime.websocket")

OverflowPolicy = Literal["close", "drop-oldest"]
OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = ("close", "drop-oldest")

#: RFC 6455 "policy violation": the client broke the deal by not reading.
CLOSE_OVERFLOW = 1008
#: RFC 6455 "going away": the server is shutting down.
CLOSE_GOING_AWAY = 1001
#: How long a broadcast from a worker thread waits for the event loop to take it.
HANDOFF_TIMEOUT = 10.0


class PoolClosed(RuntimeError):
    """The pool is not serving (not started yet, or shut down)."""


class Connection(Protocol):
    """The part of Quart's websocket object the pool uses."""

    async def accept(self) -> None: ...
    async def receive(self) -> Any: ...
    async def send(self, data: Any) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One broadcast; ``channel`` and ``id`` let history and routing be added later."""

    id: int
    data: str | bytes
    size: int
    channel: str = "default"


@dataclass
class PoolStats:
    connected: int = 0
    messages: int = 0
    deliveries_queued: int = 0
    overflows: int = 0
    dropped: int = 0
    disconnected_slow: int = 0


@dataclass(eq=False, slots=True)
class Client:
    """A connected client: its outgoing buffer and the task that drains it."""

    id: int
    connection: Connection
    queue: deque[Message] = field(default_factory=deque)
    queued_bytes: int = 0
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    overflow_logged: bool = False


class Pool:
    """Clients of one host. Lives in ``app.extensions``, so two hosts share nothing."""

    def __init__(
        self,
        *,
        max_buffer: int = 1024 * 1024,
        overflow: OverflowPolicy = "close",
        channel: str = "default",
    ) -> None:
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(
                f"overflow policy must be one of {OVERFLOW_POLICIES}, got {overflow!r}"
            )
        if max_buffer <= 0:
            raise ValueError("max_buffer must be positive")
        self.max_buffer = max_buffer
        self.overflow: OverflowPolicy = overflow
        self.channel = channel
        self.stats = PoolStats()
        self._clients: dict[int, Client] = {}
        self._ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # Lifecycle ----------------------------------------------------------------

    def start(self) -> None:
        """Bind to the running loop; broadcasts from other threads are handed to it."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def close(
        self,
        code: int = CLOSE_GOING_AWAY,
        reason: str = "server shutting down",
        grace: float = 5.0,
    ) -> None:
        """Refuse further broadcasts, let clients take what is queued, then close them.

        A client still holding queued messages after ``grace`` seconds is closed anyway.
        """
        self._loop = None
        deadline = asyncio.get_running_loop().time() + grace

        async def flush_then_close(client: Client) -> None:
            with suppress(TimeoutError):
                async with asyncio.timeout_at(deadline):
                    # Shutdown only: polling keeps an extra Event off the send path.
                    while client.queue and not client.closing:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
            await self._close(client, code, reason)

        await asyncio.gather(*(flush_then_close(c) for c in list(self._clients.values())))

    @property
    def running(self) -> bool:
        return self._loop is not None

    def __len__(self) -> int:
        return len(self._clients)

    def __iter__(self) -> Iterator[Client]:
        return iter(list(self._clients.values()))

    # Connections --------------------------------------------------------------

    async def serve(self, connection: Connection) -> None:
        """Run one client from accept to disconnect. What it sends is read and discarded."""
        if not self.running:
            await connection.close(1013, "server not ready")
            return
        await connection.accept()
        client = Client(next(self._ids), connection)
        self._clients[client.id] = client
        self.stats.connected = len(self._clients)
        receiver = asyncio.current_task()
        sender = asyncio.create_task(self._send_loop(client, receiver))
        try:
            while True:
                await connection.receive()
        finally:
            self._clients.pop(client.id, None)
            self.stats.connected = len(self._clients)
            sender.cancel()
            with suppress(asyncio.CancelledError):
                await sender

    async def _send_loop(self, client: Client, receiver: asyncio.Task[Any] | None) -> None:
        try:
            while not client.closing:
                if not client.queue:
                    client.wakeup.clear()
                    await client.wakeup.wait()
                    continue
                message = client.queue.popleft()
                client.queued_bytes -= message.size
                await client.connection.send(message.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The connection broke under us: end the client's handler too.
            log.debug("client %d send failed: %r", client.id, exc)
            if receiver is not None:
                receiver.cancel()

    async def _close(self, client: Client, code: int, reason: str) -> None:
        client.closing = True
        client.queue.clear()
        client.queued_bytes = 0
        client.wakeup.set()
        # A client that stopped reading may never take the close frame: don't wait forever.
        with suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(client.connection.close(code, reason), 1.0)
        self._clients.pop(client.id, None)
        self.stats.connected = len(self._clients)

    # Fan-out ------------------------------------------------------------------

    def publish(self, data: str | bytes, *, size: int | None = None) -> int:
        """Queue ``data`` for every client; call on the loop. Returns how many it was queued for."""
        if self._loop is None:
            raise PoolClosed("the websocket pool is not running")
        if size is None:
            size = len(data.encode()) if isinstance(data, str) else len(data)
        message = Message(next(self._message_ids), data, size, self.channel)
        self.stats.messages += 1
        queued = 0
        for client in list(self._clients.values()):
            if client.closing:
                continue
            if self._enqueue(client, message):
                queued += 1
        self.stats.deliveries_queued += queued
        return queued

    def _enqueue(self, client: Client, message: Message) -> bool:
        if client.queued_bytes + message.size > self.max_buffer and client.queue:
            self.stats.overflows += 1
            if self.overflow == "close":
                self._overflowed(client, "closing it")
                self.stats.disconnected_slow += 1
                reason = f"outgoing buffer overflow ({self.max_buffer} bytes)"
                task = asyncio.get_running_loop().create_task(
                    self._close(client, CLOSE_OVERFLOW, reason)
                )
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
                return False
            self._overflowed(client, "dropping its oldest messages")
            while client.queue and client.queued_bytes + message.size > self.max_buffer:
                dropped = client.queue.popleft()
                client.queued_bytes -= dropped.size
                self.stats.dropped += 1
        client.queue.append(message)
        client.queued_bytes += message.size
        client.wakeup.set()
        return True

    def _overflowed(self, client: Client, action: str) -> None:
        if not client.overflow_logged:
            client.overflow_logged = True
            log.warning(
                "client %d is not reading: its %d-byte buffer overflowed, %s",
                client.id,
                self.max_buffer,
                action,
            )

    def broadcast(self, data: str | bytes, *, size: int | None = None) -> int:
        """Thread-safe ``publish``: from a worker thread it hands over to the loop.

        It waits only for the loop to queue the message (never for a client), so
        broadcasts reach every client in the order they were made.
        """
        loop = self._loop
        if loop is None:
            raise PoolClosed("the websocket pool is not running")
        if threading.get_ident() == self._loop_thread:
            return self.publish(data, size=size)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()

        def handoff() -> None:
            try:
                future.set_result(self.publish(data, size=size))
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(handoff)
        except RuntimeError:
            raise PoolClosed("the websocket pool is not running") from None
        return future.result(timeout=HANDOFF_TIMEOUT)
