"""The session as the transport sees it: frames in, reply lines out, and its timers.

:class:`Session` puts the parts together (:mod:`.connect`, :mod:`.subscribe`,
:mod:`.commands`) and owns what runs around every command: the frame's decoding and
command budget, the dispatch to a handler, the encoding of its reply (an error, or a
refused connect), the order of replies and pushes, and pings, pongs and expiries.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from types import MappingProxyType
from typing import ClassVar

from ..codec import Command
from ..codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_CONNECTION_EXPIRED,
    DISCONNECT_NO_PONG,
    ERROR_INTERNAL,
    Disconnect,
    DisconnectError,
    Error,
)
from ..wire import Frame
from .commands import Commands
from .connect import Connecting
from .state import Result, logger


class Session(Connecting, Commands):
    """The protocol state of one connection."""

    __slots__ = ()

    #: Each method's handler, by name: one table for every session, not one each.
    _HANDLERS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "connect": "_connect",
            "subscribe": "_subscribe",
            "unsubscribe": "_unsubscribe",
            "publish": "_publish",
            "presence": "_presence",
            "presence_stats": "_presence_stats",
            "history": "_history",
            "rpc": "_rpc",
            "send": "_send",
            "refresh": "_refresh",
            "sub_refresh": "_sub_refresh",
        }
    )

    # -- frames ---------------------------------------------------------------------

    async def handle_frame(
        self, data: str | bytes, emit: Callable[[Frame], bool] | None = None
    ) -> list[Frame]:
        """Run a frame's commands in order; the reply lines to send, in order.

        With ``emit``, each command's reply (and the pushes right after it) goes out
        through it as the command finishes, as Centrifuge in Go does: a channel's
        publications then never go before its subscribe reply, and no frame's replies
        pile up. ``emit`` answering False (the client is closing: its buffer
        overflowed, say) ends the frame: nothing more is worked out for it.

        Raises DisconnectError (carrying the replies not sent yet) when the connection
        must close. After a refused connect the rest of the frame is skipped, as Go
        stops reading then.
        """
        if self._rejected:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        codec = self.codec
        commands = codec.decode_commands(data, self.options.max_commands)
        self._commands.spend(len(commands))  # 3013 past the connection's command budget
        replies: list[Frame] = []  # only without ``emit``: with it, each goes at once
        for command in commands:
            try:
                reply = await self._dispatch(command)
            except DisconnectError as exc:
                raise DisconnectError(exc.disconnect, [*replies, *exc.replies]) from None
            pushes = self._pushes  # publications that go right after that reply
            if emit is None:
                if reply is not None:
                    replies.append(reply)
                if pushes:
                    replies.extend(pushes)
                    pushes.clear()
            else:
                if pushes:
                    after = codec.join(pushes if reply is None else [reply, *pushes])
                    pushes.clear()
                    reply = after
                if reply is not None and not emit(reply):
                    break
            if self._rejected:
                break
        return replies

    async def _dispatch(self, command: Command) -> Frame | None:
        if not self._connected and command.method != "connect":
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        if command.method == "":
            self._pong()
            return None
        result: Result
        self._budget = self.options.reply_bytes
        # One clock reading at each end, and only while someone exports the time.
        metrics = self.options.metrics
        started = time.perf_counter() if metrics is not None else 0.0
        try:
            handler: Callable[[Command], Awaitable[Result]]
            handler = getattr(self, self._HANDLERS[command.method])
            result = await handler(command)
        except Error as exc:
            result = exc
        except DisconnectError:
            if metrics is not None:
                metrics.command(command.method, time.perf_counter() - started)
            raise
        except Exception:
            logger.exception("%s failed for client %s", command.method, self.client_id)
            result = ERROR_INTERNAL
        reply: Frame | None = None
        if command.method != "send":
            if isinstance(result, Error):
                if command.method == "connect":
                    self._rejected = True
                reply = self.codec.encode_error(command.id, result)
            else:
                reply = self.codec.encode_reply(command.id, command.method, result)
        if self._recovering is not None:
            if not isinstance(result, Error):  # the time of recoveries, not of failures
                self.backend.recovered(time.perf_counter() - self._recovering)
            self._recovering = None
        if metrics is not None:
            metrics.command(command.method, time.perf_counter() - started)
        return reply

    def _pong(self) -> None:
        if self._last_ping is None:
            # Go: a pong nobody asked for is a client bug.
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        self._last_ping = self._pong_deadline = None

    # -- timers ---------------------------------------------------------------------

    def ping_due(self, now: float) -> Frame | None:
        """The codec's ping (``{}`` in JSON) when one is due (and marks it sent), else None.

        Pings go out on their timer whatever the traffic: centrifuge-python only
        counts pings as a sign of life.
        """
        if not self._connected or self._next_ping is None or now < self._next_ping:
            return None
        self._last_ping = now
        self._next_ping = now + self.options.ping_interval
        if self.options.pong_timeout > 0:
            self._pong_deadline = now + self.options.pong_timeout
        return self.codec.ping

    def pong_overdue(self, now: float) -> Disconnect | None:
        """3012 "no pong" once a ping went unanswered for ``pong_timeout``."""
        if self._pong_deadline is not None and now >= self._pong_deadline:
            return DISCONNECT_NO_PONG
        return None

    def expired(self, now: float) -> Disconnect | None:
        """3005 once the connection expired and no refresh came within the grace."""
        if (
            self._connected
            and self._expire_at is not None
            and now >= self._expire_at + self.options.expired_close_delay
        ):
            return DISCONNECT_CONNECTION_EXPIRED
        return None

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (Unix time); None: never."""
        if not self._connected:
            return None
        deadlines = [self._next_ping, self._pong_deadline]
        if self._expire_at is not None:
            deadlines.append(self._expire_at + self.options.expired_close_delay)
        delay = self.options.expired_sub_close_delay
        deadlines.extend(
            sub.expire_at + delay for sub in self._subs.values() if sub.expire_at is not None
        )
        return min((d for d in deadlines if d is not None), default=None)

    async def tick(self, now: float) -> list[Frame]:
        """Run what is due: lines to send, or DisconnectError (3012, 3005)."""
        if disconnect := self.pong_overdue(now) or self.expired(now):
            raise DisconnectError(disconnect)
        lines = await self.expire_subscriptions(now)
        if ping := self.ping_due(now):
            lines.append(ping)
        return lines

    async def close(self) -> None:
        """The connection is gone: leave every channel; later frames get 3501."""
        self._connected, self._rejected = False, True
        self._next_ping = self._last_ping = self._pong_deadline = None
        await self._drop_all()
