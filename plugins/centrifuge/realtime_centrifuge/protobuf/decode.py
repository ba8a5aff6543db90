"""Protobuf commands in: a binary frame of varint-delimited ``Command`` messages.

Each message is parsed by the ``protobuf`` runtime (upb, in C) into the classes
generated from ``client.proto``, then turned into the :class:`~..codec.Command` the
JSON decoder gives: the request's fields that are set (proto3 has no presence for
scalars, so a zero value is as good as absent, as Go reads it), with JSON-style
values, so one session logic serves both codecs. A ``bytes`` payload (``data``) is
the JSON value it holds, or ``bytes`` when it is not JSON.

As strict as Go's decoder (``decode.go``, ``UnmarshalVT``): a text frame, an empty
one, a truncated or overlong varint, a length past the end of the frame, a message
that does not parse (a field of the wrong wire type included: upb would keep it as
an unknown field, vtproto refuses it), more than ``max_commands`` messages, or an id
without a known request close the connection with 3501. Unknown field numbers are
skipped, as newer clients may send some. Nothing is allocated from a claimed length:
it is compared with what the frame holds before any slice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from google.protobuf.unknown_fields import (  # type: ignore[import-untyped,unused-ignore]
    UnknownFieldSet,
)

from ..codec import METHODS, Command, RawJSON, json_loads
from ..codes import DISCONNECT_BAD_REQUEST, DisconnectError
from . import client_pb2 as pb

#: A varint takes at most ten bytes (64 bits, seven a byte).
MAX_VARINT_BYTES = 10

# FieldDescriptor.type values (descriptor.proto) the decoder tells apart.
_TYPE_MESSAGE = 11
_TYPE_BYTES = 12

# How a field's value becomes a JSON-style value.
_PLAIN = 0  # str, int, bool: as they are
_DATA = 1  # bytes: the JSON value, else bytes
_MESSAGE = 2  # a nested message: a dict
_MAP_PLAIN = 3  # map<string, string>: a dict
_MAP_MESSAGE = 4  # map<string, Message>: a dict of dicts
_LIST_PLAIN = 5  # repeated string: a list
_LIST_MESSAGE = 6  # repeated Message: a list of dicts


def _bad_request() -> DisconnectError:
    return DisconnectError(DISCONNECT_BAD_REQUEST)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_loads = json_loads(json.JSONDecoder(parse_constant=_no_constant))


class _Schema:
    """What the decoder needs of one message type, read once from its descriptor."""

    __slots__ = ("kinds", "known")

    def __init__(self, descriptor: Any) -> None:
        #: Field numbers the type defines: an unknown field with one is of the wrong type.
        self.known = frozenset(field.number for field in descriptor.fields)
        #: Each field's conversion, by name.
        self.kinds: Mapping[str, int] = MappingProxyType(
            {field.name: _kind(field) for field in descriptor.fields}
        )


def _kind(field: Any) -> int:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        value = message.fields_by_name["value"]
        return _MAP_MESSAGE if value.type == _TYPE_MESSAGE else _MAP_PLAIN
    if field.is_repeated:
        return _LIST_MESSAGE if field.type == _TYPE_MESSAGE else _LIST_PLAIN
    if field.type == _TYPE_MESSAGE:
        return _MESSAGE
    return _DATA if field.type == _TYPE_BYTES else _PLAIN


#: Every generated class of client.proto (the top-level messages; map entries are
#: never walked as messages), by class: what a parsed message needs, at no lookup cost.
_SCHEMAS: Mapping[type, _Schema] = MappingProxyType(
    {
        getattr(pb, name): _Schema(descriptor)
        for name, descriptor in pb.DESCRIPTOR.message_types_by_name.items()
    }
)


def data_value(raw: bytes) -> Any:
    """A payload as the session takes it: the JSON value, or the bytes themselves."""
    try:
        return _loads(raw.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        return raw


def _params(message: Any) -> dict[str, Any]:
    """A parsed message as the JSON decoder's dict: set fields only, JSON-style values."""
    schema = _SCHEMAS[type(message)]
    unknown = UnknownFieldSet(message)
    if len(unknown):
        for item in unknown:
            if item.field_number in schema.known:
                raise _bad_request()  # a known field with the wrong wire type
    out: dict[str, Any] = {}
    kinds = schema.kinds
    for field, value in message.ListFields():
        name = field.name
        kind = kinds[name]
        if kind == _PLAIN:
            out[name] = value
        elif kind == _DATA:
            out[name] = data_value(value)
        elif kind == _MESSAGE:
            out[name] = _params(value)
        elif kind == _MAP_PLAIN:
            out[name] = dict(value)
        elif kind == _MAP_MESSAGE:
            out[name] = {key: _params(item) for key, item in value.items()}
        elif kind == _LIST_PLAIN:
            out[name] = list(value)
        else:
            out[name] = [_params(item) for item in value]
    return out


def _varint(frame: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it; 3501 when truncated or overlong."""
    value = shift = 0
    end = min(len(frame), pos + MAX_VARINT_BYTES)
    while pos < end:
        byte = frame[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise _bad_request()


def _parse(raw: bytes) -> Any:
    try:
        return pb.Command.FromString(raw)
    except Exception:
        # DecodeError, or whatever else the runtime makes of hostile bytes (a message
        # nested past its recursion limit...): the client sent something unparsable.
        raise _bad_request() from None


def decode_command(raw: bytes) -> Command:
    """One ``Command`` message (without its length), or :class:`DisconnectError` 3501."""
    message = _parse(raw)
    requests = _params(message)
    command_id = requests.pop("id", 0)
    method = ""
    for name in METHODS:
        if name in requests:
            method = name
            break
    params = requests[method] if method else {}
    if method != "send" and (command_id == 0) != (method == ""):
        # An id without a known request, or a request without an id (send aside).
        raise _bad_request()
    if method == "publish" and "data" in params and not isinstance(params["data"], bytes):
        # Published as sent (whitespace, key order), as Centrifugo keeps a client's bytes.
        return Command(command_id, method, params, RawJSON(message.publish.data.decode()))
    return Command(command_id, method, params)


def decode_commands(frame: str | bytes, max_commands: int) -> list[Command]:
    """Every command of a binary frame, in order; 3501 for a bad frame (see above).

    All messages are decoded before any is run, as the JSON decoder does.
    """
    if isinstance(frame, str) or not frame:
        raise _bad_request()
    size = len(frame)
    pos = 0
    commands: list[Command] = []
    while pos < size:
        if len(commands) >= max_commands:
            raise _bad_request()
        length = frame[pos]
        if length < 0x80:
            pos += 1
        else:
            length, pos = _varint(frame, pos)
        end = pos + length
        if end > size:
            raise _bad_request()  # compared before anything is read or allocated
        commands.append(decode_command(frame[pos:end]))
        pos = end
    return commands
