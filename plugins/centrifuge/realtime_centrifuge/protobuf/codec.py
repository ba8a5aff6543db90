"""The protobuf codec: the ``centrifuge-protobuf`` subprotocol, as the Dart, Swift, Java
SDKs and centrifuge-js's protobuf build speak it.

A frame is binary: varint-delimited ``Command`` messages in, varint-delimited
``Reply`` messages out (several in one frame when the session sends them together).
See :mod:`.decode` and :mod:`.encode` for how each side maps onto the session's
JSON-shaped commands and results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from realtime_broker import Publication

from ..codec import PUSH_KINDS, Command, RawJSON
from ..codes import Error
from ..wire import Frame
from .decode import decode_commands
from .encode import SCHEMAS, delimited, message, payload, text, varint

_REPLY = SCHEMAS["Reply"]
_PUSH = SCHEMAS["Push"]
#: The result message of each method a reply answers (send has none).
_RESULTS: Mapping[str, tuple[bytes, Any]] = {
    name: (tag, sub)
    for name, (tag, _, sub) in _REPLY.fields.items()
    if name not in ("id", "error", "push", "ping")
}
#: Each push kind's field of ``Push``.
_PUSHES: Mapping[str, tuple[bytes, Any]] = {
    kind: (_PUSH.fields[kind][0], _PUSH.fields[kind][2]) for kind in PUSH_KINDS
}
_ERROR = SCHEMAS["Error"]
_CLIENT_INFO = SCHEMAS["ClientInfo"]
_TAGS = SCHEMAS["Publication"].fields["tags"][0]
# Tags of the fields a publication push writes by hand (client.proto's numbers).
_REPLY_ID = b"\x08"  # Reply.id = 1
_REPLY_ERROR = b"\x12"  # Reply.error = 2
_REPLY_PUSH = b"\x22"  # Reply.push = 4
_PUSH_CHANNEL = b"\x12"  # Push.channel = 2
_PUSH_PUB = b"\x22"  # Push.pub = 4
_PUB_DATA = b"\x22"  # Publication.data = 4
_PUB_INFO = b"\x2a"  # Publication.info = 5
_PUB_OFFSET = b"\x30"  # Publication.offset = 6


def _framed(reply: bytes) -> bytes:
    """One ``Reply`` message behind its length, as a frame holds it."""
    return varint(len(reply)) + reply


class ProtobufCodec:
    """The protobuf codec of the Centrifuge client protocol v2 (see :mod:`..wire`)."""

    __slots__ = ()

    name = "protobuf"
    binary = True
    #: An empty ``Reply`` (length 0), the protobuf ``{}``.
    ping: Frame = b"\x00"

    def decode_commands(self, data: str | bytes, max_commands: int) -> list[Command]:
        return decode_commands(data, max_commands)

    def encode_reply(self, command_id: int, method: str, result: Mapping[str, Any]) -> Frame:
        spec = _RESULTS.get(method)
        if spec is None:
            raise ValueError(f"no reply for {method!r}")
        if not 0 < command_id < 2**32:
            raise ValueError("a reply needs the command's id")
        tag, schema = spec
        return _framed(_REPLY_ID + varint(command_id) + delimited(tag, message(schema, result)))

    def encode_error(self, command_id: int, error: Error) -> Frame:
        body = {"code": error.code, "message": error.message, "temporary": error.temporary}
        reply = delimited(_REPLY_ERROR, message(_ERROR, body))
        if command_id:
            reply = _REPLY_ID + varint(command_id) + reply
        return _framed(reply)

    def encode_push(self, channel: str, kind: str, body: Mapping[str, Any]) -> Frame:
        spec = _PUSHES.get(kind)
        if spec is None:
            raise ValueError(f"unknown push kind {kind!r}")
        tag, schema = spec
        push = delimited(tag, message(schema, body))
        if channel:
            push = delimited(_PUSH_CHANNEL, text(channel)) + push
        return _framed(delimited(_REPLY_PUSH, push))

    def encode_publication(
        self,
        channel: str,
        data: Any,
        info: Mapping[str, Any] | RawJSON | None = None,
        offset: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Frame:
        """Written by hand, field by field: this runs once per publication."""
        pub = b"" if data is None else delimited(_PUB_DATA, payload(data))
        if info is not None:
            pub += delimited(_PUB_INFO, message(_CLIENT_INFO, info))
        if offset:
            pub += _PUB_OFFSET + varint(offset)
        if tags:
            for key, value in tags.items():
                entry = delimited(b"\x0a", text(key)) + delimited(b"\x12", text(value))
                pub += delimited(_TAGS, entry)
        push = delimited(_PUSH_PUB, pub)
        if channel:
            push = delimited(_PUSH_CHANNEL, text(channel)) + push
        return _framed(delimited(_REPLY_PUSH, push))

    def payload(self, pub: Publication) -> Any:
        """The publication's bytes: its JSON text or text as UTF-8, bytes as they are."""
        data = pub.data
        return data if isinstance(data, bytes) else text(data)

    def join(self, frames: Sequence[Frame]) -> Frame:
        if len(frames) == 1:
            return frames[0]
        return b"".join(frames)  # type: ignore[arg-type]  # every frame is bytes here


#: The protobuf codec, shared by every connection speaking it (it holds no state).
PROTOBUF = ProtobufCodec()
