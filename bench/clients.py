"""The load generator's other Centrifuge client protocols: the protobuf codec and HTTP streaming.

``loadgen.py`` keeps one client class and one account of deliveries (sequence
numbers, losses, latency) for every protocol, so CPU per delivery is comparable
between rows; this module holds only what differs on the wire, as pure functions and
parsers with no sockets (``tests/unit/test_bench_clients.py`` checks them):

- ``--protocol centrifuge-protobuf``: the WebSocket subprotocol ``centrifuge-protobuf``,
  binary frames of varint-length-delimited ``Command`` and ``Reply`` messages
  (centrifugal/protocol's ``client.proto``). The few messages a client sends are
  encoded by hand (:func:`protobuf_connect`, :data:`PROTOBUF_PONG`) and replies read
  field by field (:func:`protobuf_replies`): no protobuf runtime in the load generator,
  whose clients must stay cheap enough for 10,000 of them on one core.
- ``--protocol centrifuge-http-stream``: centrifuge-js's ``http_stream`` transport.
  ``POST /connection/http_stream`` with the connect command (JSON codec) as the body;
  the answer is a chunked body of newline-terminated replies and pushes
  (:class:`HttpStream`). Every later command (subscribe, a pong) is a ``POST
  /emulation`` of ``{"session", "node", "data"}`` with the commands as a JSON string
  in ``data`` (:func:`emulation_request`), as ``transport_http_stream.ts`` sends it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

#: The WebSocket subprotocol that asks for the protobuf codec.
PROTOBUF_SUBPROTOCOL = "centrifuge-protobuf"
#: A varint takes at most ten bytes (64 bits, seven a byte).
MAX_VARINT_BYTES = 10
#: The protobuf pong: an empty ``Command`` behind its length (the server's ping is an
#: empty ``Reply``, the same single byte).
PROTOBUF_PONG = b"\x00"
PROTOBUF_PING = b"\x00"
#: An HTTP response head or one chunk's size line longer than this fails the client.
MAX_HEAD = 65536
#: A stream line (one reply or push) longer than this fails the client.
MAX_LINE = 1 << 20

# client.proto's field numbers (wire type 2, length-delimited, unless said).
_COMMAND_ID = 1  # varint
_COMMAND_CONNECT = 4
_COMMAND_SUBSCRIBE = 5
_CONNECT_TOKEN = 1
_SUBSCRIBE_CHANNEL = 1
_REPLY_ID = 1  # varint
_REPLY_ERROR = 2
_REPLY_PUSH = 4
_REPLY_CONNECT = 5
_REPLY_SUBSCRIBE = 6
_ERROR_CODE = 1  # varint
_ERROR_MESSAGE = 2
_PUSH_CHANNEL = 2
_PUSH_PUB = 4
_PUB_DATA = 4


# Protobuf ----------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """``value`` (0 to 2**64 - 1) in protobuf's base-128 encoding."""
    if not 0 <= value < 1 << 64:
        raise ValueError(f"varint out of range: {value}")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; ValueError if cut or overlong."""
    value = shift = 0
    end = min(len(data), pos + MAX_VARINT_BYTES)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated or overlong varint")


def field(number: int, body: bytes) -> bytes:
    """A length-delimited field (wire type 2): its tag, the body's length, the body."""
    return varint(number << 3 | 2) + varint(len(body)) + body


def number(field_number: int, value: int) -> bytes:
    """A varint field (wire type 0); proto3 leaves a zero out."""
    return varint(field_number << 3) + varint(value) if value else b""


def fields(message: bytes) -> dict[int, int | bytes]:
    """A message's fields by number (the last one wins, as proto3 reads scalars).

    Varints are ints, length-delimited fields bytes; fixed32/64 are skipped. A
    truncated message, a length past its end or a group raises ValueError.
    """
    found: dict[int, int | bytes] = {}
    pos, size = 0, len(message)
    while pos < size:
        tag, pos = read_varint(message, pos)
        kind, key = tag & 7, tag >> 3
        if kind == 0:
            found[key], pos = read_varint(message, pos)
        elif kind == 2:
            length, pos = read_varint(message, pos)
            if pos + length > size:
                raise ValueError(f"field {key}: length {length} past the message's end")
            found[key], pos = message[pos : pos + length], pos + length
        elif kind in (1, 5):
            pos += 8 if kind == 1 else 4
            if pos > size:
                raise ValueError(f"field {key}: fixed value past the message's end")
        else:
            raise ValueError(f"field {key}: wire type {kind} not in client.proto")
    return found


def delimited(messages: list[bytes]) -> bytes:
    """Messages as one frame: each behind its varint length."""
    return b"".join(varint(len(m)) + m for m in messages)


def split_delimited(frame: bytes) -> list[bytes]:
    """The messages of a frame of varint-delimited messages (empty ones included)."""
    out, pos, size = [], 0, len(frame)
    while pos < size:
        length, pos = read_varint(frame, pos)
        if pos + length > size:
            raise ValueError(f"message length {length} past the frame's end")
        out.append(frame[pos : pos + length])
        pos += length
    return out


def protobuf_connect(token: str, channel: str) -> bytes:
    """A client's first binary frame: ``Command`` connect (id 1), subscribe (id 2)."""
    connect = field(_CONNECT_TOKEN, token.encode()) if token else b""
    commands = [
        number(_COMMAND_ID, 1) + field(_COMMAND_CONNECT, connect),
        number(_COMMAND_ID, 2)
        + field(_COMMAND_SUBSCRIBE, field(_SUBSCRIBE_CHANNEL, channel.encode())),
    ]
    return delimited(commands)


@dataclass(frozen=True, slots=True)
class Reply:
    """What the load generator reads of one ``Reply``.

    ``kind``: ``"pub"`` (a publication push: ``data`` is its data bytes), ``"ping"``
    (the empty reply), ``"connect"`` / ``"subscribe"`` (the answer to command ``id``),
    ``"error"`` (``data`` says ``code message``), or ``"other"`` (any other push or
    reply: ``data`` is its bytes, for the report).
    """

    kind: str
    id: int = 0
    data: bytes = b""


def protobuf_reply(message: bytes) -> Reply:
    """One ``Reply`` message (without its length prefix)."""
    if not message:
        return Reply("ping")
    got = fields(message)
    reply_id = got.get(_REPLY_ID, 0)
    assert isinstance(reply_id, int)
    error = got.get(_REPLY_ERROR)
    if isinstance(error, bytes):
        err = fields(error)
        code, text = err.get(_ERROR_CODE, 0), err.get(_ERROR_MESSAGE, b"")
        detail = f"{code} ".encode() + (text if isinstance(text, bytes) else b"")
        return Reply("error", reply_id, detail)
    push = got.get(_REPLY_PUSH)
    if isinstance(push, bytes):
        pub = fields(push).get(_PUSH_PUB)
        if isinstance(pub, bytes):
            data = fields(pub).get(_PUB_DATA, b"")
            return Reply("pub", 0, data if isinstance(data, bytes) else b"")
        return Reply("other", 0, message)
    for key, kind in ((_REPLY_CONNECT, "connect"), (_REPLY_SUBSCRIBE, "subscribe")):
        if key in got:
            return Reply(kind, reply_id, message)
    return Reply("other", reply_id, message)


def _length(frame: bytes, pos: int) -> tuple[int, int]:
    """A varint length at ``pos``: one byte inline, the rest by read_varint."""
    byte = frame[pos]
    return (byte, pos + 1) if byte < 0x80 else read_varint(frame, pos)


def publication_fast(frame: bytes) -> bytes | None:
    """The data of a frame that is one publication push and nothing else, or None.

    Most frames a subscriber gets are that (``Reply{push{channel, pub{data, ...}}}``,
    in field order, as the server writes it): read in a few index operations, so the
    load generator's cost per delivery stays near the JSON clients' ``find``. Anything
    else (a batch, a ping, a reply, a push with an id) is None: :func:`protobuf_replies`
    reads it.
    """
    try:
        size, pos = _length(frame, 0)
        end = len(frame)
        if pos + size != end or frame[pos] != 0x22:  # Reply.push
            return None
        _, pos = _length(frame, pos + 1)
        if frame[pos] == 0x12:  # Push.channel
            size, pos = _length(frame, pos + 1)
            pos += size
        if frame[pos] != 0x22:  # Push.pub
            return None
        _, pos = _length(frame, pos + 1)
        if frame[pos] != 0x22:  # Publication.data
            return None
        size, pos = _length(frame, pos + 1)
    except (IndexError, ValueError):
        return None
    return frame[pos : pos + size] if pos + size <= end else None


def protobuf_replies(frame: bytes) -> list[Reply]:
    """Every ``Reply`` of a binary frame, in order; ValueError for a malformed frame."""
    return [protobuf_reply(m) for m in split_delimited(frame)]


def publication_data(data: bytes) -> bytes:
    """The message a publication carries, as the JSON clients take it.

    Protobuf carries a JSON payload as its JSON text: ``send.py``'s string arrives
    quoted (``"m1.…"``), and the quotes go, as the JSON clients read the string.
    """
    if len(data) >= 2 and data[:1] == b'"' and data[-1:] == b'"':
        return data[1:-1]
    return data


# HTTP streaming ----------------------------------------------------------------------


def json_command(command_id: int, method: str, body: dict[str, Any]) -> str:
    """One JSON-codec command, as centrifuge-js's ``JSON.stringify`` writes it."""
    return json.dumps({"id": command_id, method: body}, separators=(",", ":"))


def connect_command(token: str) -> str:
    """The connect command an emulation transport's first request carries (id 1)."""
    return json_command(1, "connect", {"token": token} if token else {})


def subscribe_command(channel: str) -> str:
    """The subscribe command sent through ``/emulation`` once connected (id 2)."""
    return json_command(2, "subscribe", {"channel": channel})


def post(path: str, host: str, body: bytes, keep_alive: bool = False) -> bytes:
    """An HTTP/1.1 POST of a JSON body, as ``fetch`` sends centrifuge-js's requests."""
    connection = "keep-alive" if keep_alive else "close"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: {connection}\r\n"
        "Accept: application/json\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def http_stream_request(path: str, host: str, token: str) -> bytes:
    """The request that opens a stream: ``POST /connection/http_stream`` with connect."""
    return post(path, host, connect_command(token).encode(), keep_alive=True)


def emulation_request(path: str, host: str, session: str, node: str, data: str) -> bytes:
    """``POST /emulation``: commands for the session's stream, JSON codec (``data`` text)."""
    body = json.dumps({"session": session, "node": node, "data": data}, separators=(",", ":"))
    return post(path, host, body.encode())


def response_status(head: bytes) -> int:
    """The status code of an HTTP response head; ValueError if it is none."""
    parts = head.split(b"\r\n", 1)[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {head[:80]!r}")
    return int(parts[1])


class HttpStream:
    """An HTTP streaming response in, newline-terminated lines out.

    :meth:`feed` takes the bytes as they arrive and returns the complete lines so far
    (without their ``\\n``; empty lines dropped). The head must say 200; the body may be
    chunked (HTTP/1.1 with no length, as the server streams) or plain until the
    connection closes. ``error`` is set, and nothing more returned, on a bad status, a
    malformed chunk or an oversized head, chunk-size line or line. ``ended`` is set by
    the terminating chunk.
    """

    __slots__ = ("_body", "_buf", "_chunk_left", "chunked", "ended", "error", "head", "status")

    def __init__(self) -> None:
        self._buf = bytearray()  # undecoded bytes: the head, or a chunk's size line
        self._body = bytearray()  # decoded body bytes not yet a whole line
        self._chunk_left = 0  # bytes of the current chunk still to come (+2 for its CRLF)
        self.head: bytes | None = None
        self.status = 0
        self.chunked = False
        self.ended = False
        self.error: str | None = None

    def between_chunks(self) -> bool:
        """A chunked body with nothing pending: the next byte starts a chunk's size line."""
        return (
            self.chunked
            and not (self._chunk_left or self._buf or self._body or self.ended)
            and self.error is None
        )

    def feed(self, data: bytes) -> list[bytes]:
        if self.error is not None or self.ended:
            return []
        if self.head is None:
            self._buf += data
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self._buf) > MAX_HEAD:
                    self.error = "oversized response head"
                return []
            self.head = bytes(self._buf[:end])
            data = bytes(self._buf[end + 4 :])
            self._buf.clear()
            try:
                self.status = response_status(self.head)
            except ValueError as exc:
                self.error = str(exc)
                return []
            if self.status != 200:
                self.error = "stream refused: " + self.head.split(b"\r\n", 1)[0].decode("latin-1")
                return []
            for line in self.head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"transfer-encoding":
                    self.chunked = b"chunked" in value.lower()
        if self.chunked:
            self._dechunk(data)
        else:
            self._body += data
        return self._lines()

    def _dechunk(self, data: bytes) -> None:
        pos, size = 0, len(data)
        while pos < size and self.error is None and not self.ended:
            if self._chunk_left:
                take = min(self._chunk_left, size - pos)
                # The last two bytes of a chunk are its CRLF, not body.
                body_left = self._chunk_left - 2
                if body_left > 0:
                    self._body += data[pos : pos + min(take, body_left)]
                self._chunk_left -= take
                pos += take
                continue
            self._buf += data[pos:]
            pos = size
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > 1024:
                    self.error = "oversized chunk-size line"
                return
            line = bytes(self._buf[:end]).split(b";", 1)[0].strip()
            rest = bytes(self._buf[end + 2 :])
            self._buf.clear()
            try:
                length = int(line, 16)
            except ValueError:
                self.error = f"bad chunk size {line[:20]!r}"
                return
            if length == 0:
                self.ended = True
                return
            self._chunk_left = length + 2
            data, pos, size = rest, 0, len(rest)

    def _lines(self) -> list[bytes]:
        body = self._body
        end = body.rfind(b"\n")
        if end < 0:
            if len(body) > MAX_LINE:
                self.error = "oversized stream line"
            return []
        lines = [line for line in bytes(body[:end]).split(b"\n") if line]
        del body[: end + 1]
        return lines


def connect_result(line: bytes) -> tuple[str, str] | None:
    """The ``(session, node)`` of a connect reply line (id 1), or None if it is not one."""
    try:
        reply = json.loads(line)
    except ValueError:
        return None
    result = reply.get("connect") if isinstance(reply, dict) and reply.get("id") == 1 else None
    if not isinstance(result, dict):
        return None
    return str(result.get("session", "")), str(result.get("node", ""))
