"""RFC 6455 frames from a client, sans-IO: what a taken-over connection reads with.

Hypercorn reads a connection through a task, a stream reader, h11 and wsproto, about
8 KB of objects a connection. Once the fast path holds a socket (:mod:`.fastpath`),
this parser is all that reads it: a few slots on the connection's own protocol
object, no buffer kept between frames that arrived whole. Extensions are never
negotiated on such a connection, so every RSV bit must be clear.

It checks what wsproto checks (masking, opcodes, lengths in their shortest form,
control-frame rules, fragmentation, UTF-8, close codes) and what the hub's
:class:`.guard.IncomingLimits` bound (a message's size from the frame header,
before a byte of it is buffered; frames a second), and reports the first violation
as :class:`Failure` with its close code (tests/unit/test_frames_fuzz.py holds it to
wsproto's verdicts). It also encodes what the server sends: :func:`encode_frame`,
:func:`control_frame`.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Final, Literal, NamedTuple

from .closecode import CloseCode

if TYPE_CHECKING:
    from .guard import IncomingLimits

OP_CONTINUATION: Final = 0x0
OP_TEXT: Final = 0x1
OP_BINARY: Final = 0x2
OP_CLOSE: Final = 0x8
OP_PING: Final = 0x9
OP_PONG: Final = 0xA

_SHORT = struct.Struct("!H")
_LONG = struct.Struct("!Q")
#: Builds an event without NamedTuple's generated ``__new__`` (a Python call): the
#: per-frame cost stays a tuple's.
_new = tuple.__new__


# Events ---------------------------------------------------------------------------
# Each is a NamedTuple ``(opcode, data)``: typed for the reader, as cheap as a tuple
# to make, and equal to the ``(opcode, payload)`` tuples the parser returned before.


class Text(NamedTuple):
    """A whole text message, decoded."""

    opcode: Literal[0x1]
    data: str


class Binary(NamedTuple):
    """A whole binary message."""

    opcode: Literal[0x2]
    data: bytes


class Ping(NamedTuple):
    """A ping: answer with a pong carrying ``data``."""

    opcode: Literal[0x9]
    data: bytes


class Pong(NamedTuple):
    """A pong (an answer, or a unilateral heartbeat)."""

    opcode: Literal[0xA]
    data: bytes


class CloseStatus(NamedTuple):
    """What a close frame says: its code (1005 when it had none) and its reason."""

    code: int
    reason: str


class Close(NamedTuple):
    """The client's close frame."""

    opcode: Literal[0x8]
    data: CloseStatus

    @property
    def code(self) -> int:
        return self.data.code

    @property
    def reason(self) -> str:
        return self.data.reason


Event = Text | Binary | Ping | Pong | Close


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


#: The registered codes a peer may send: every :class:`CloseCode` but the two that
#: only report (1005, 1006); 1004 is reserved and not a member.
_PEER_CODES = frozenset(CloseCode) - {CloseCode.NO_STATUS, CloseCode.ABNORMAL}


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (RFC 6455 §7.4): the registered ones and 3000-4999."""
    return code in _PEER_CODES or 3000 <= code <= 4999


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


def encode_frame(payload: bytes, text: bool) -> bytes:
    """One unmasked, unfragmented server data frame (RFC 6455 §5.2), RSV bits clear."""
    first = 0x81 if text else 0x82  # FIN and the opcode
    length = len(payload)
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 126, length)
    else:
        header = struct.pack("!BBQ", first, 127, length)
    return header + payload


class FrameParser:
    """Incremental reader of one client's frames.

    :meth:`feed` bytes as they arrive, then call :meth:`next_event` until it returns
    ``None``. Events are :class:`Text` (a ``str``), :class:`Binary`, :class:`Ping`,
    :class:`Pong` (``bytes``) and :class:`Close` (a :class:`CloseStatus`), each an
    ``(opcode, data)`` NamedTuple. A violation raises :class:`Failure`; the parser
    is then done.
    """

    __slots__ = ("_limits", "_message", "_opcode", "_pending", "_pos", "_size", "_tat")

    def __init__(self, limits: IncomingLimits) -> None:
        self._limits = limits
        self._pending = b""  # bytes received, parsed up to ``_pos``
        self._pos = 0
        self._opcode = 0  # of the fragmented message under assembly, 0 if none
        self._message: list[bytes] | None = None  # its fragments
        self._size = 0  # its bytes so far
        self._tat = 0.0  # the frame rate's clock (realtime.rate.Rate, as IncomingGuard)

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

    def next_event(self) -> Event | None:
        """The next whole event, or ``None`` until more is fed; :class:`Failure` if bad.

        Whole text and binary frames, what a client nearly always sends, are read
        here without another call; the rest goes through the helpers below.
        """
        while True:
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
                    raise Failure(CloseCode.PROTOCOL_ERROR, "a length not in its shortest form")
            elif length == 127:
                if available < 10:
                    return None
                (length,) = _LONG.unpack_from(data, start + 2)
                offset = 10
                if length < 1 << 16 or length >> 63:
                    raise Failure(CloseCode.PROTOCOL_ERROR, "a length not in its shortest form")
            whole = (first == 0x81 or first == 0x82) and second & 0x80 and not self._opcode
            if whole:  # FIN, text or binary, masked, no message under assembly
                max_size = self._limits.max_size
                if length > max_size:
                    raise Failure(
                        CloseCode.MESSAGE_TOO_BIG, f"a message over {max_size} bytes", limit=True
                    )
            else:
                self._check_header(first, second, length)
            end = offset + 4 + length
            if available < end:
                return None  # the header was checked: the payload is within the limits
            mask = data[start + offset : start + offset + 4]
            payload = unmask(data[start + offset + 4 : start + end], mask)
            if end < available:
                self._pos = start + end
            else:
                self._pending = b""
                self._pos = 0
            rate = self._limits.frames
            if rate.interval:
                now = time.monotonic()
                tat = rate.take(self._tat, now)
                if tat < 0:
                    raise Failure(CloseCode.POLICY_VIOLATION, rate.describe("frames"), limit=True)
                self._tat = tat
            if first == 0x81 and whole:
                try:
                    return _new(Text, (OP_TEXT, payload.decode()))
                except UnicodeDecodeError:
                    raise Failure(CloseCode.INVALID_DATA, "text message is not UTF-8") from None
            if first == 0x82 and whole:
                return _new(Binary, (OP_BINARY, payload))
            opcode = first & 0x0F
            event = (
                self._control(opcode, payload)
                if opcode >= OP_CLOSE
                else self._data(opcode, first & 0x80, payload)
            )
            if event is not None:  # else a fragment that does not end its message
                return event

    def _check_header(self, first: int, second: int, length: int) -> None:
        opcode = first & 0x0F
        if first & 0x70:
            raise Failure(CloseCode.PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise Failure(CloseCode.PROTOCOL_ERROR, "client frames must be masked")
        if opcode >= OP_CLOSE:
            if opcode > OP_PONG:
                raise Failure(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
            if not first & 0x80 or length > 125:
                raise Failure(
                    CloseCode.PROTOCOL_ERROR, "a control frame fragmented or over 125 bytes"
                )
            return
        if opcode > OP_BINARY:
            raise Failure(CloseCode.PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if opcode == OP_CONTINUATION:
            if not self._opcode:
                raise Failure(CloseCode.PROTOCOL_ERROR, "continuation frame outside a message")
        elif self._opcode:
            raise Failure(CloseCode.PROTOCOL_ERROR, "new message before the last one finished")
        max_size = self._limits.max_size
        if length > max_size - self._size:
            raise Failure(CloseCode.MESSAGE_TOO_BIG, f"a message over {max_size} bytes", limit=True)

    def _control(self, opcode: int, payload: bytes) -> Ping | Pong | Close:
        if opcode == OP_PING:
            return _new(Ping, (OP_PING, payload))
        if opcode == OP_PONG:
            return _new(Pong, (OP_PONG, payload))
        if not payload:
            return Close(OP_CLOSE, CloseStatus(CloseCode.NO_STATUS, ""))
        if len(payload) == 1:
            raise Failure(CloseCode.PROTOCOL_ERROR, "a close frame with a 1-byte payload")
        (code,) = _SHORT.unpack_from(payload)
        if not valid_close_code(code):
            raise Failure(CloseCode.PROTOCOL_ERROR, f"invalid close code {code}")
        try:
            reason = payload[2:].decode()
        except UnicodeDecodeError:
            raise Failure(CloseCode.INVALID_DATA, "close reason is not UTF-8") from None
        return Close(OP_CLOSE, CloseStatus(code, reason))

    def _data(self, opcode: int, fin: int, payload: bytes) -> Text | Binary | None:
        """A message that a fragment completes; ``None`` for one that does not end it."""
        if opcode == OP_CONTINUATION:
            assert self._message is not None
            if payload:
                self._message.append(payload)
                self._size += len(payload)
            if not fin:
                return None
            opcode = self._opcode
            payload = b"".join(self._message)
            self._opcode = 0
            self._message = None
            self._size = 0
        elif not fin:
            self._opcode = opcode
            self._message = [payload]
            self._size = len(payload)
            return None
        if opcode == OP_BINARY:
            return _new(Binary, (OP_BINARY, payload))
        try:
            return _new(Text, (OP_TEXT, payload.decode()))
        except UnicodeDecodeError:
            raise Failure(CloseCode.INVALID_DATA, "text message is not UTF-8") from None
