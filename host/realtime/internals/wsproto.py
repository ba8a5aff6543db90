"""wsproto's internals the guard uses (part of :mod:`realtime.internals`, the fence).

- A ``Connection`` keeps its frame protocol as ``_proto``, and that its negotiated
  extensions as ``extensions``: the guard finds permessage-deflate there.
- :class:`BoundedDeflate` overrides ``PerMessageDeflate``'s two inbound hooks (public
  extension API) and reads its state (``_decompressor``, ``_inbound_compressed``,
  ``_inbound_is_compressible``) to inflate no more than a message may still grow by.

Tested on wsproto 1.2 and 1.3 (:data:`realtime.internals.KNOWN`).
"""

from __future__ import annotations

import zlib

from wsproto.connection import Connection
from wsproto.extensions import PerMessageDeflate
from wsproto.frame_protocol import CloseReason, FrameDecoder, FrameProtocol

#: Attributes of PerMessageDeflate that BoundedDeflate reads and writes.
_DEFLATE_STATE = ("_decompressor", "_inbound_compressed", "_inbound_is_compressible")


def missing() -> list[str]:
    """The names used here that this wsproto lacks (for the probe)."""
    absent = []
    if "_proto" not in Connection.__init__.__code__.co_names:
        absent.append("Connection._proto")
    if "extensions" not in FrameProtocol.__init__.__code__.co_names:
        absent.append("FrameProtocol.extensions")
    state = PerMessageDeflate()
    absent += [f"PerMessageDeflate.{name}" for name in _DEFLATE_STATE if not hasattr(state, name)]
    return absent


class BoundedDeflate(PerMessageDeflate):
    """permessage-deflate that inflates no more than what is left of the message's budget.

    wsproto inflates a frame's payload in one call, so 200 KB on the wire became
    200 MiB in memory before any size check ran. Here every call is capped at
    ``room`` (kept current by the guard) plus one byte; getting that byte fails the
    frame with 1009 and leaves ``room`` at -1. Connections get this class by swapping
    ``__class__`` on the instance Hypercorn negotiated (:func:`bound_deflate`), which
    keeps its state and every list holding it.
    """

    #: Bytes the message under assembly may still grow by; -1 once it went past.
    room: int

    def frame_inbound_payload_data(
        self, proto: FrameDecoder | FrameProtocol, data: bytes
    ) -> bytes | CloseReason:
        if not self._inbound_compressed or not self._inbound_is_compressible:
            return data
        return self._inflate(bytes(data))

    def frame_inbound_complete(
        self, proto: FrameDecoder | FrameProtocol, fin: bool
    ) -> bytes | CloseReason | None:
        if not fin:
            return None
        if not self._inbound_is_compressible or not self._inbound_compressed:
            self._inbound_compressed = None
            return None
        # The tail every compressed message lost on the wire. No flush() after it: a
        # capped decompress that stopped short of the cap has consumed all its input.
        data = self._inflate(b"\x00\x00\xff\xff")
        if isinstance(data, CloseReason):
            return data
        if proto.client:
            no_context_takeover = self.server_no_context_takeover
        else:
            no_context_takeover = self.client_no_context_takeover
        if no_context_takeover:
            self._decompressor = None
        self._inbound_compressed = None
        return data

    def _inflate(self, data: bytes) -> bytes | CloseReason:
        decompressor = self._decompressor
        assert decompressor is not None  # frame_inbound_header made it for this message
        room = self.room
        try:
            inflated = decompressor.decompress(data, max(room, 0) + 1)  # 0 would mean no cap
        except zlib.error:
            return CloseReason.INVALID_FRAME_PAYLOAD_DATA
        if len(inflated) > room:
            self.room = -1
            return CloseReason.MESSAGE_TOO_BIG
        self.room = room - len(inflated)
        return inflated


def bound_deflate(connection: Connection, room: int) -> BoundedDeflate | None:
    """Make ``connection``'s negotiated permessage-deflate a :class:`BoundedDeflate`
    with ``room`` bytes to start with; ``None`` when none was negotiated."""
    bounded = None
    for extension in getattr(getattr(connection, "_proto", None), "extensions", ()):
        if type(extension) is PerMessageDeflate:  # the negotiated (enabled) one
            extension.__class__ = BoundedDeflate
            assert isinstance(extension, BoundedDeflate)
            extension.room = room
            bounded = extension
    return bounded
