"""What a session needs of a codec: commands in, replies and pushes out, in JSON or protobuf.

The protocol's logic (:mod:`.session`) works on :class:`.codec.Command` objects and
on results and push bodies as plain mappings, the shape ``client.proto`` gives them.
A :class:`Codec` turns a transport's frame into commands and those mappings into
the frames the transport sends: text for JSON (one object a line), bytes for protobuf
(each message behind its varint length). One object per codec serves every
connection speaking it, and a channel's publication is encoded once per codec.

Payload fields (``data``, ``info``, ``conn_info``, ``chan_info``) may hold a JSON
value, a :class:`.codec.RawJSON` (JSON text encoded already), or ``bytes`` (an opaque
payload: base64 text in JSON, itself in protobuf). A command's ``data`` decodes to
the JSON value it holds, or to ``bytes`` when a protobuf client sent something that
is not JSON.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from realtime_broker import Publication

from .codec import (
    Command,
    RawJSON,
    decode_commands,
    encode_error,
    encode_publication,
    encode_push,
    encode_reply,
)
from .codes import DISCONNECT_BAD_REQUEST, DisconnectError, Error

#: One encoded message or frame: ``str`` for the JSON codec, ``bytes`` for protobuf.
Frame = str | bytes


class Codec(Protocol):
    """One wire format of the Centrifuge protocol."""

    #: ``"json"`` or ``"protobuf"``: the label in logs and metrics.
    name: str
    #: Frames are bytes (WebSocket binary messages, a binary HTTP body).
    binary: bool
    #: The server's ping: an empty reply (``{}`` in JSON).
    ping: Frame

    def decode_commands(self, data: str | bytes, max_commands: int) -> list[Command]:
        """Every command of a frame, in order; :class:`DisconnectError` 3501 for a
        malformed frame, an empty one, one of the wrong type (bytes to JSON, text to
        protobuf) or one with more than ``max_commands`` commands."""
        ...

    def encode_reply(self, command_id: int, method: str, result: Mapping[str, Any]) -> Frame:
        """The answer to a command: its id and its method's result."""
        ...

    def encode_error(self, command_id: int, error: Error) -> Frame:
        """The error answering a command (``temporary`` included when set)."""
        ...

    def encode_push(self, channel: str, kind: str, body: Mapping[str, Any]) -> Frame:
        """A push (``pub``, ``join``, ``leave``, ``subscribe``, ``unsubscribe``,
        ``refresh``, ``message``, ``disconnect``, ``connect``) with no command behind it."""
        ...

    def encode_publication(
        self,
        channel: str,
        data: Any,
        info: Mapping[str, Any] | RawJSON | None = None,
        offset: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Frame:
        """The ``pub`` push subscribers of ``channel`` get (``data`` always sent)."""
        ...

    def payload(self, pub: Publication) -> Any:
        """A publication's ``data`` as this codec carries it, for results and pushes."""
        ...

    def join(self, frames: Sequence[Frame]) -> Frame:
        """Several encoded messages as one frame, in order."""
        ...


class JSONCodec:
    """The JSON codec (:mod:`.codec`): the default, and what ``cent`` and browsers speak."""

    __slots__ = ()

    name = "json"
    binary = False
    ping: Frame = "{}"

    def decode_commands(self, data: str | bytes, max_commands: int) -> list[Command]:
        if not isinstance(data, str):
            raise DisconnectError(DISCONNECT_BAD_REQUEST)  # binary: not this codec
        return decode_commands(data, max_commands)

    def encode_reply(self, command_id: int, method: str, result: Mapping[str, Any]) -> Frame:
        return encode_reply(command_id, method, result)

    def encode_error(self, command_id: int, error: Error) -> Frame:
        return encode_error(command_id, error)

    def encode_push(self, channel: str, kind: str, body: Mapping[str, Any]) -> Frame:
        return encode_push(channel, kind, body)

    def encode_publication(
        self,
        channel: str,
        data: Any,
        info: Mapping[str, Any] | RawJSON | None = None,
        offset: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Frame:
        return encode_publication(channel, data, info, offset, tags)

    def payload(self, pub: Publication) -> Any:
        if pub.json:
            return RawJSON(pub.data)
        if isinstance(pub.data, bytes):
            # The JSON codec carries no bytes: binary broadcasts arrive as base64 text.
            return base64.b64encode(pub.data).decode("ascii")
        return pub.data

    def join(self, frames: Sequence[Frame]) -> Frame:
        if len(frames) == 1:
            return frames[0]
        return "\n".join(frames)  # type: ignore[arg-type]  # every frame is str here


#: The JSON codec, shared by every connection speaking it.
JSON = JSONCodec()
