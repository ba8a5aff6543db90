"""Keepalive for taken-over sockets: one timer for all of them.

Hypercorn pings a WebSocket from a task of its own per connection and drops it at a
read timeout; a socket the hub took over (:mod:`.takeover`) has neither, so
:class:`Keepalive` pings them all from one timer.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .closecode import CloseCode
from .frames import OP_PING, control_frame

if TYPE_CHECKING:
    from .takeover import Socket

log = logging.getLogger("realtime.hub")

_PING = control_frame(OP_PING)
#: Turns one interval's pings are spread over: at 15,000 sockets, pinging all at once
#: (and reading their 15,000 pongs at once) held the loop for half a second.
SLICES = 20


class Keepalive:
    """Pings every taken-over socket each ``interval``; drops one silent ``timeout`` after.

    One timer for all of them, in place of Hypercorn's ping task per connection and
    its read timeout. Any frame from a client counts as an answer, unless the socket
    holds data back that the client does not take (writing paused): then only taking
    it counts, so a client that pings but never reads cannot keep itself alive. The
    timer fires :data:`SLICES` times an interval and pings one slice of the sockets
    each time (by client id), so pings and their answers come spread out.
    """

    def __init__(self, interval: float, timeout: float) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("keepalive interval and timeout must be positive")
        self.interval = interval
        self.timeout = timeout
        self.sockets: set[Socket] = set()
        #: Sockets dropped for silence so far.
        self.dropped = 0
        self._turn = 0
        self._period = min(interval / SLICES, timeout)
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._period, self._tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        turn = self._turn = (self._turn + 1) % SLICES
        deadline = now - self.timeout + 0.01  # timers fire a hair early or late
        for sock in list(self.sockets):
            pinged_at = sock.pinged_at
            if pinged_at is not None:
                if pinged_at <= deadline:
                    self.dropped += 1
                    if sock.ended is None:
                        sock.ended = (CloseCode.ABNORMAL, "no answer to a ping")
                    log.debug("client %d: no answer to a ping in %.0f s", sock.client, self.timeout)
                    self.sockets.discard(sock)  # dropped once, whenever the hub forgets it
                    sock.abort()
            elif sock.client % SLICES == turn and sock.open():
                sock.pinged_at = now
                sock.transport.write(_PING)
        self._timer = loop.call_later(self._period, self._tick)
