"""A client's way out when it does not keep up: its backlog, its bound, the overflow policy.

A client on the direct path is written to by the fan-out itself (:mod:`.engine`).
Anything else goes to the client's backlog, which a short-lived sender task drains in
order; a client that stops reading fills only its own, and past its bound the overflow
policy either drops its oldest messages or closes it. This is that bookkeeping, as a
base of :class:`.Hub`, which owns the settings and the clients.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Literal, cast

from .clients import Client, Connection, HubStats, Message
from .closecode import CloseCode

log = logging.getLogger("realtime.hub")

OverflowPolicy = Literal["close", "drop-oldest"]
OVERFLOW_POLICIES: tuple[OverflowPolicy, ...] = ("close", "drop-oldest")

#: The largest chunk a sender joins from a client's backlog into one write. A fast-path
#: client is written to directly only while its transport holds nothing back; else
#: messages go to its backlog (where drop-oldest can act), and from there to the
#: transport a chunk at a time, each once the one before is out.
TRANSPORT_HIGH_WATER = 64 * 1024


class Backlogs:
    """The backlog side of a hub: bounds, the overflow policy, the sender tasks."""

    max_buffer: int
    #: What a stream's transport may hold before a client leaves the direct path.
    direct_limit: int
    #: What a stream's backlog may hold beside that (``max_buffer`` in all).
    backlog_limit: int
    overflow: OverflowPolicy
    stats: HubStats
    _tasks: set[asyncio.Task[None]]

    async def _close(self, client: Client, code: int, reason: str) -> None:
        raise NotImplementedError  # the hub's: out of the hub, then the close handshake

    @staticmethod
    def _refresh(client: Client) -> None:
        """Whether fan-outs may write to ``client`` directly (on every change of it)."""
        wire = client.wire
        if wire is not None and not client.closing and not client.queue and wire.writable():
            client.direct = wire.send_now
        else:
            client.direct = None

    @staticmethod
    def _spill(client: Client, frame: bytes, sent: int) -> None:
        """The stream took part of ``frame`` (``sent`` bytes, -1 on an error): the
        transport takes the rest, and pauses writing (so the client leaves the direct
        path), or meets the error itself and closes (and the client leaves it now,
        rather than at ``connection_lost`` on the next turn of the loop)."""
        wire = client.wire
        assert wire is not None
        wire.transport.write(frame[sent:] if sent > 0 else frame)
        if wire.transport.is_closing():
            client.direct = None

    def _other(self, client: Client, message: Message) -> bool:
        """A publication to a client not on the direct path: its backlog, unless it is
        closing. Its bound is the backlog's own, what its stream holds aside."""
        if client.closing:
            return False
        wire = client.wire
        if wire is None:
            limit = self.max_buffer
        elif wire.open():
            limit = self.backlog_limit
        else:
            return False  # closing or closed: nothing more goes out
        size = message.size
        if client.queued_bytes + size > limit and not self._admit(client, size, 0, limit):
            return False
        # As _append does, inline: this is the loop of a fan-out to lagging clients.
        queue = client.queue
        if queue is None:
            queue = client.queue = deque()
            client.direct = None
        queue.append(message)
        client.queued_bytes += size
        if client.sender is None:
            client.sender = asyncio.get_running_loop().create_task(self._drain_backlog(client))
        return True

    def _admit(self, client: Client, size: int, held: int, limit: int) -> bool:
        """Whether ``size`` more bytes fit within ``limit`` beside the client's backlog and
        the ``held`` bytes it holds elsewhere, after the overflow policy: ``drop-oldest``
        makes room in the backlog if it can; else the client is closed.

        Even with nothing queued: one message never takes more than the bound.
        """
        if held + client.queued_bytes + size <= limit:
            return True
        self.stats.overflows += 1
        if self.overflow == "drop-oldest" and held + size <= limit:
            self._overflowed(client, "dropping its oldest messages")
            self._drop_oldest(client, limit - held - size)
            return True
        self._overflowed(client, "closing it")
        self.stats.disconnected_slow += 1
        # Closing from now: the protocol stops answering it and nothing more is queued;
        # out of its channels when the close runs (a fan-out may be walking them).
        client.closing = True
        client.direct = None
        reason = f"outgoing buffer overflow ({self.max_buffer} bytes)"
        client.ending = (CloseCode.POLICY_VIOLATION, reason)
        self._spawn(self._close(client, CloseCode.POLICY_VIOLATION, reason))
        return False

    def _append(self, client: Client, message: Message) -> None:
        """``message`` to the end of the client's backlog (admitted), its sender started."""
        if client.queue is None:
            client.queue = deque()
            client.direct = None
        client.queue.append(message)
        client.queued_bytes += message.size
        if client.sender is None:
            client.sender = asyncio.get_running_loop().create_task(self._drain_backlog(client))

    def _drop_oldest(self, client: Client, room: int) -> None:
        """Drop the oldest queued messages until ``client`` holds at most ``room``."""
        count = 0
        while client.queue and client.queued_bytes > room:
            dropped = client.queue.popleft()
            client.queued_bytes -= dropped.size
            count += 1
        self.stats.dropped += count
        told = getattr(client.handler, "dropped", None)
        if told is not None and count:  # a protocol whose clients notice holes
            told(count)

    async def _drain_backlog(self, client: Client) -> None:
        """Send a client's backlog in order, then end: no task idles per client."""
        wire = client.wire
        queue = client.queue
        assert queue is not None  # _append creates it before starting this task
        connection = cast(Connection, client.connection)  # used only without a stream
        try:
            while queue and not client.closing:
                if wire is not None:
                    await wire.drain()  # wait until the transport has room again
                    if client.closing or not wire.open():
                        break
                    chunk = []
                    chunk_bytes = 0
                    while queue and chunk_bytes < self.direct_limit:
                        message = queue.popleft()
                        chunk.append(message.frame)
                        chunk_bytes += message.size
                    client.queued_bytes -= chunk_bytes
                    wire.transport.write(b"".join(chunk))
                else:
                    message = queue.popleft()
                    client.queued_bytes -= message.size
                    await connection.send(message.data)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The connection broke under us: forget the client now and close what is left.
            log.debug("client %d send failed: %r", client.id, exc)
            self._spawn(self._close(client, CloseCode.INTERNAL_ERROR, "send failed"))
        finally:
            client.sender = None
            if client.queue is queue and not queue:
                client.queue = None  # caught up: back to the fast path, no backlog kept
                self._refresh(client)

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _overflowed(self, client: Client, action: str) -> None:
        if not client.overflow_logged:
            client.overflow_logged = True
            log.warning(
                "client %d is not reading: its %d-byte buffer overflowed, %s",
                client.id,
                self.max_buffer,
                action,
            )
