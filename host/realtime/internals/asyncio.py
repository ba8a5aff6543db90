"""asyncio's internals the fast path uses (part of :mod:`realtime.internals`, the fence).

- A plain TCP transport of the selector loop (``selector_events._SelectorSocketTransport``)
  keeps its socket as ``_sock``: while the transport holds nothing back, a frame can go
  to ``socket.send`` directly, a C call with no Python frame per client of a fan-out.
- ``StreamReader`` keeps what it read ahead in ``_buffer`` and pauses its transport
  for that buffer's sake (``_paused``): a takeover takes the bytes, and a refusal
  makes the reader forget a pause it would otherwise undo.
- ``StreamWriter`` closes its transport (``_transport``) when collected: a taken-over
  connection's writer gets a stand-in that is already closing.

Tested on CPython 3.11 to 3.14 (:data:`realtime.internals.KNOWN`); uvloop's
transports are not selector transports and simply take the ``write`` path.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import selector_events
from collections.abc import Callable
from typing import Any

#: asyncio's plain TCP transport (not in typeshed): its ``_sock`` is the socket itself.
_SELECTOR_TRANSPORT: type = getattr(selector_events, "_SelectorSocketTransport", type(None))


def missing() -> list[str]:
    """The names used here that this Python's asyncio lacks (for the probe)."""
    absent = []
    if _SELECTOR_TRANSPORT is type(None):
        absent.append("selector_events._SelectorSocketTransport")
    names = asyncio.StreamReader.__init__.__code__.co_names
    absent += [f"StreamReader.{name}" for name in ("_buffer", "_paused") if name not in names]
    if "_transport" not in asyncio.StreamWriter.__init__.__code__.co_names:
        absent.append("StreamWriter._transport")
    return absent


def socket_send(transport: Any) -> Callable[[bytes], int] | None:
    """The socket's own ``send`` beneath a plain selector TCP transport, else ``None``.

    Only for a caller that writes through it solely while the transport buffers
    nothing (else bytes would overtake what the transport holds).
    """
    sock = getattr(transport, "_sock", None)
    if isinstance(transport, _SELECTOR_TRANSPORT) and isinstance(sock, socket.socket):
        send: Callable[[bytes], int] = sock.send
        return send
    return None


def reader_takes(reader: Any) -> bool:
    """Whether ``reader`` is a ``StreamReader`` whose read-ahead :func:`take_buffered` can take."""
    return isinstance(reader, asyncio.StreamReader) and isinstance(
        getattr(reader, "_buffer", None), bytearray
    )


def take_buffered(reader: Any) -> bytes:
    """What ``reader`` read ahead and nobody consumed yet, removed from it."""
    buffered: bytearray = reader._buffer
    early = bytes(buffered)
    buffered.clear()
    return early


def forget_read_pause(reader: Any) -> None:
    """Make a ``StreamReader`` forget it paused its transport for its buffer's sake.

    It would resume reading once its buffer was read: after a refusal that must not
    happen, the caller paused reading for good.
    """
    if getattr(reader, "_paused", False):
        reader._paused = False


class _Elsewhere:
    """Stands in for the transport inside a ``StreamWriter`` that no longer owns it:
    the writer closes its transport when collected unless that one is closing."""

    def is_closing(self) -> bool:
        return True

    def close(self) -> None:
        pass


_ELSEWHERE = _Elsewhere()


def disown_transport(writer: asyncio.StreamWriter) -> None:
    """Keep ``writer`` from ever closing its transport (someone else owns it now)."""
    writer._transport = _ELSEWHERE  # type: ignore[attr-defined]
