"""What the hub keeps of its clients' comings and goings: counts, and recent disconnects.

Recorded once per connect and once per disconnect (never per delivery), into the
hub's :class:`.HubStats`, which telemetry samples (:mod:`.metrics`), and into a short
list of recent disconnects the admin page shows. Every label a metric gets from here
comes from a small set: a protocol plugin's name, or a close code out of a bounded
few (a client may send any code from 1000 to 4999; only the registered ones are kept).
"""

from __future__ import annotations

import time
from collections import deque
from typing import NamedTuple

from .clients import Client, HubStats
from .closecode import CloseCode

#: Disconnects :attr:`.Hub.recent_disconnects` keeps, newest last.
MAX_RECENT = 100
#: Close codes counted apart; past it (or for a code a client made up) ``other``.
MAX_CODES = 32
#: Longest reason kept, UTF-8 bytes: what a close frame can carry.
MAX_REASON = 123
#: The label of codes not counted apart.
OTHER = "other"

_REGISTERED = frozenset(int(code) for code in CloseCode)


class Disconnect(NamedTuple):
    """One ended connection: when (``time.time()``), its close code and reason, its protocol."""

    time: float
    code: int
    reason: str
    protocol: str


def close_of(client: Client) -> tuple[int, str, bool]:
    """How ``client``'s connection ended: code, reason, and whether the server decided it.

    The server's decision first (:attr:`.Client.ending`); else what the connection
    recorded (``ended``: a taken-over socket's or an ASGI connection's, the client's
    close frame or the server's refusal); else it dropped with no close frame (1006).
    """
    if client.ending is not None:
        code, reason = client.ending
        return code, reason, True
    ended: tuple[int, str] | None = getattr(client.connection, "ended", None)
    if ended is not None:
        return ended[0], ended[1], False
    return CloseCode.ABNORMAL, "", False


def code_label(code: int, counted: dict[str, int], by_server: bool) -> str:
    """``code`` as a label: itself while fewer than :data:`MAX_CODES` are counted and it
    is a code the server sends (1000-4999) or a registered one a client sent; else
    :data:`OTHER`, so a client cycling through made-up codes adds no label."""
    label = str(code)
    if label in counted:
        return label
    if len(counted) >= MAX_CODES - 1:  # one key left for OTHER
        return OTHER
    if code in _REGISTERED or (by_server and 1000 <= code <= 4999):
        return label
    return OTHER


def arrived(stats: HubStats, client: Client) -> None:
    """A connection became a hub client."""
    stats.accepted += 1
    protocols = stats.protocols
    protocols[client.protocol] = protocols.get(client.protocol, 0) + 1


def departed(stats: HubStats, recent: deque[Disconnect], client: Client) -> Disconnect:
    """A hub client is gone (called once for it): counted by protocol and code, recorded;
    the record is returned (for the hub's watchers)."""
    protocols = stats.protocols
    protocols[client.protocol] = protocols.get(client.protocol, 1) - 1
    code, reason, by_server = close_of(client)
    counted = stats.disconnects
    label = code_label(code, counted, by_server)
    counted[label] = counted.get(label, 0) + 1
    if len(reason) > MAX_REASON // 4:  # may be over MAX_REASON bytes
        reason = reason.encode(errors="replace")[:MAX_REASON].decode(errors="ignore")
    record = Disconnect(time.time(), code, reason, client.protocol)
    recent.append(record)
    return record
