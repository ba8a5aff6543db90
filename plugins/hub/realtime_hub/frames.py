"""RFC 6455 frames from a client, sans-IO: what a taken-over connection reads with.

Hypercorn reads a connection through a task, a stream reader, h11 and wsproto, about
8 KB of objects a connection. Once the fast path holds a socket (:mod:`.fastpath`),
this parser is all that reads it: a few slots on the connection's own protocol
object, no buffer kept between frames that arrived whole. Extensions are never
negotiated on such a connection, so every RSV bit must be clear.

It checks what wsproto checks (masking, opcodes, lengths in their shortest form,
control-frame rules, fragmentation, UTF-8, close codes) and what the hub's
:class:`.fastpath.IncomingLimits` bound (a message's size from the frame header,
before a byte of it is buffered; frames a second), and reports the first violation
as :class:`Failure` with its close code.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .fastpath import IncomingLimits

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: RFC 6455 close codes the parser reports.
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
#: "No status received": what a close frame without a code means (never sent).
CLOSE_NO_STATUS = 1005

#: What a fragment that does not end its message yields: nothing yet.
_FRAGMENT = (-1, None)

_SHORT = struct.Struct("!H")
_LONG = struct.Struct("!Q")


class Failure(Exception):
    """The client broke the protocol or a limit: close with ``code``.

    ``limit`` tells a refusal (over the size or the rate: worth a warning) from a
    protocol error (a broken client: worth a debug line).
    """

    def __init__(self, code: int, reason: str, *, limit: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.limit = limit


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (RFC 6455 §7.4): the defined ones and 3000-4999."""
    return (1000 <= code <= 1014 and code not in (1004, 1005, 1006)) or 3000 <= code <= 4999


def unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR ``payload`` with the 4-byte ``mask`` repeated: one big-integer operation."""
    length = len(payload)
    if not length:
        return b""
    key = (mask * ((length + 3) >> 2))[:length]
    value = int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")
    return value.to_bytes(length, "big")


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's payload: the code, then a reason cut to fit 125 bytes whole."""
    encoded = reason.encode()[:123]
    return _SHORT.pack(code) + encoded.decode(errors="ignore").encode()


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """An unmasked server control frame (payload at most 125 bytes)."""
    return bytes((0x80 | opcode, len(payload))) + payload


class FrameParser:
    """Incremental reader of one client's frames.

    :meth:`feed` bytes as they arrive, then call :meth:`next_event` until it returns
    ``None``. Events are ``(opcode, payload)``: ``OP_TEXT`` with a ``str``,
    ``OP_BINARY``, ``OP_PING`` and ``OP_PONG`` with ``bytes``, ``OP_CLOSE`` with
    ``(code, reason)``. A violation raises :class:`Failure`; the parser is then done.
    """

    __slots__ = ("_limits", "_message", "_opcode", "_pending", "_pos", "_size", "_tat")

    def __init__(self, limits: IncomingLimits) -> None:
        self._limits = limits
        self._pending = b""  # bytes received, parsed up to ``_pos``
        self._pos = 0
        self._opcode = 0  # of the fragmented message under assembly, 0 if none
        self._message: list[bytes] | None = None  # its fragments
        self._size = 0  # its bytes so far
        self._tat = 0.0  # the rate limit's virtual clock (GCRA, as IncomingGuard)

    def feed(self, data: bytes) -> None:
        pending = self._pending
        if self._pos:  # frames parsed off the front: copied away once per read, not per frame
            pending = pending[self._pos :]
            self._pos = 0
        self._pending = pending + data if pending else data

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet."""
        return len(self._pending) - self._pos

    def discard(self) -> None:
        """Drop what is buffered: nothing more will be parsed."""
        self._pending = b""
        self._pos = 0

    def next_event(self) -> tuple[int, object] | None:
        while True:
            event = self._next_frame()
            if event is not _FRAGMENT:
                return event

    def _next_frame(self) -> tuple[int, object] | None:
        data, start = self._pending, self._pos
        available = len(data) - start
        if available < 2:
            return None
        first, second = data[start], data[start + 1]
        length = second & 0x7F
        offset = 2
        if length == 126:
            if available < 4:
                return None
            (length,) = _SHORT.unpack_from(data, start + 2)
            offset = 4
            if length < 126:
                raise Failure(CLOSE_PROTOCOL_ERROR, "a length not in its shortest form")
        elif length == 127:
            if available < 10:
                return None
            (length,) = _LONG.unpack_from(data, start + 2)
            offset = 10
            if length < 1 << 16 or length >> 63:
                raise Failure(CLOSE_PROTOCOL_ERROR, "a length not in its shortest form")
        opcode = first & 0x0F
        fin = first & 0x80
        self._check_header(first, second, opcode, fin, length)
        end = offset + 4 + length
        if available < end:
            return None  # the header was checked: the payload is within the limits
        mask = data[start + offset : start + offset + 4]
        payload = unmask(data[start + offset + 4 : start + end], mask)
        if end < available:
            self._pos = start + end
        else:
            self.discard()
        self._count_frame()
        if opcode >= OP_CLOSE:
            return self._control(opcode, payload)
        return self._data(opcode, fin, payload)

    def _check_header(self, first: int, second: int, opcode: int, fin: int, length: int) -> None:
        if first & 0x70:
            raise Failure(CLOSE_PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise Failure(CLOSE_PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise Failure(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if not fin or length > 125:
                raise Failure(CLOSE_PROTOCOL_ERROR, "a control frame fragmented or over 125 bytes")
            return
        if opcode > OP_BINARY:
            raise Failure(CLOSE_PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if not self._opcode:
                raise Failure(CLOSE_PROTOCOL_ERROR, "continuation frame outside a message")
        elif self._opcode:
            raise Failure(CLOSE_PROTOCOL_ERROR, "new message before the last one finished")
        max_size = self._limits.max_size
        if length > max_size - self._size:
            raise Failure(CLOSE_TOO_BIG, f"a message over {max_size} bytes", limit=True)

    def _count_frame(self) -> None:
        limits = self._limits
        if not limits.rate:
            return
        now = time.monotonic()
        tat = max(self._tat, now) + limits.interval
        if tat > now + limits.window:
            raise Failure(
                CLOSE_POLICY_VIOLATION,
                f"over {limits.rate} frames a second (bursts of {limits.burst})",
                limit=True,
            )
        self._tat = tat

    def _control(self, opcode: int, payload: bytes) -> tuple[int, object]:
        if opcode != OP_CLOSE:
            return opcode, payload
        if not payload:
            return OP_CLOSE, (CLOSE_NO_STATUS, "")
        if len(payload) == 1:
            raise Failure(CLOSE_PROTOCOL_ERROR, "a close frame with a 1-byte payload")
        (code,) = _SHORT.unpack_from(payload)
        if not valid_close_code(code):
            raise Failure(CLOSE_PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise Failure(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
        return OP_CLOSE, (code, reason)

    def _data(self, opcode: int, fin: int, payload: bytes) -> tuple[int, object]:
        if opcode == OP_CONTINUATION:
            assert self._message is not None
            if payload:
                self._message.append(payload)
                self._size += len(payload)
            if not fin:
                return _FRAGMENT
            opcode = self._opcode
            payload = b"".join(self._message)
            self._opcode = 0
            self._message = None
            self._size = 0
        elif not fin:
            self._opcode = opcode
            self._message = [payload]
            self._size = len(payload)
            return _FRAGMENT
        if opcode == OP_BINARY:
            return OP_BINARY, payload
        try:
            return OP_TEXT, payload.decode()
        except UnicodeDecodeError:
            raise Failure(CLOSE_INVALID_DATA, "text message is not UTF-8") from None
