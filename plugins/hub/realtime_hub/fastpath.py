"""The hub's fast path, by job: what the engine imports, from one place.

- :mod:`.frames`: encoding server frames (:func:`encode_frame`) and parsing a client's;
- :mod:`.guard`: what a client may send (:class:`IncomingLimits`), checked under
  ASGI by :func:`guard` before Hypercorn buffers it;
- :mod:`.takeover`: a WebSocket taken away from Hypercorn once the handshake is done
  (:func:`take_over`, :class:`Socket`);
- :mod:`.keepalive`: one timer that pings every taken-over socket.

None of these reaches beneath a library's public API: what Hypercorn, wsproto and
asyncio do not promise is fenced in :mod:`realtime.internals`, which also decides,
once per process, whether the takeover and the guard may engage at all (where not,
:func:`take_over` and :func:`guard` return ``None`` and the hub stays on ASGI).
"""

from __future__ import annotations

from realtime.internals.wsproto import BoundedDeflate

from .frames import encode_frame
from .guard import (
    GuardTransport,
    IncomingGuard,
    IncomingLimits,
    Transport,
    decline_compression,
    guard,
)
from .keepalive import Keepalive
from .takeover import CLOSED, CLOSING, OPEN, Socket, take_over

__all__ = [
    "CLOSED",
    "CLOSING",
    "OPEN",
    "BoundedDeflate",
    "GuardTransport",
    "IncomingGuard",
    "IncomingLimits",
    "Keepalive",
    "Socket",
    "Transport",
    "decline_compression",
    "encode_frame",
    "guard",
    "take_over",
]
