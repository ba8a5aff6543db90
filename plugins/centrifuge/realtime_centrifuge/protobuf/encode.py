"""Protobuf replies and pushes out: the session's mappings as ``Reply`` messages.

The session hands results and push bodies over as the JSON codec gets them
(:mod:`..wire`): mappings keyed by ``client.proto``'s field names, payloads as
:class:`~..codec.RawJSON`, ``bytes`` or plain JSON values, publishers' ``ClientInfo``
as RawJSON objects. They are written straight to the wire format, field by field,
with a table read once from the generated descriptors (so it follows client.proto):
no message objects are built, and a publication, encoded once per codec for all its
subscribers, costs a few byte concatenations.

Proto3's defaults are left out (``0``, ``False``, ``""``, empty bytes and lists), as
Go writes them; so are keys that client.proto does not have, and ``None``. Payload
fields carry bytes: RawJSON as its UTF-8, ``bytes`` as they are, other values as
compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..codec import RawJSON
from . import client_pb2 as pb

# FieldDescriptor.type values (descriptor.proto).
_INTEGERS = frozenset({3, 4, 5, 8, 13, 14})  # int64 uint64 int32 bool uint32 enum
_ZIGZAG = frozenset({17, 18})  # sint32 sint64
_TYPE_STRING = 9
_TYPE_MESSAGE = 11
_TYPE_BYTES = 12
_MASK64 = (1 << 64) - 1

# How a value is written.
_INT = 0
_SINT = 1
_STRING = 2
_BYTES = 3
_MESSAGE = 4
_MAP = 5
_LIST_MESSAGE = 6
_LIST_STRING = 7

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
_dumps_ascii = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def varint(value: int) -> bytes:
    """``value`` (taken as 64 bits unsigned) in protobuf's base-128 encoding."""
    value &= _MASK64
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_SMALL = tuple(bytes((n,)) for n in range(0x80))


def delimited(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: its tag, the body's length, the body."""
    return tag + varint(len(body)) + body


def text(value: str) -> bytes:
    """A string field's UTF-8; a lone surrogate (``"\\ud800"`` in JSON) becomes ``?``
    rather than the invalid UTF-8 that would make the client refuse the whole frame."""
    return value.encode("utf-8", "replace")


def payload(value: Any) -> bytes:
    """A payload field's bytes: RawJSON as its text, bytes as they are, else JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, RawJSON):
        try:
            return value.encode()
        except UnicodeEncodeError:
            value = json.loads(value)  # a lone surrogate: escaped, as JSON allows
    elif isinstance(value, bytearray | memoryview):
        return bytes(value)
    try:
        return _dumps(value).encode()
    except UnicodeEncodeError:
        return _dumps_ascii(value).encode()


class Schema:
    """One message type's fields, by name: tag bytes, how to write them, the nested
    type's schema for messages (map values: the value's)."""

    __slots__ = ("fields", "name")

    def __init__(self, name: str) -> None:
        self.name = name
        self.fields: dict[str, tuple[bytes, int, Schema | None]] = {}


def _schemas() -> Mapping[str, Schema]:
    """Every message type of client.proto, read from the generated descriptors."""
    descriptors = dict(pb.DESCRIPTOR.message_types_by_name)
    schemas = {name: Schema(name) for name in descriptors}
    for name, descriptor in descriptors.items():
        fields = schemas[name].fields
        for field in descriptor.fields:
            kind, sub = _how(field, schemas)
            wire = 0 if kind in (_INT, _SINT) else 2
            fields[field.name] = (varint(field.number << 3 | wire), kind, sub)
    return MappingProxyType(schemas)


def _how(field: Any, schemas: Mapping[str, Schema]) -> tuple[int, Schema | None]:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        key, value = message.fields_by_name["key"], message.fields_by_name["value"]
        if key.type != _TYPE_STRING or value.type not in (_TYPE_STRING, _TYPE_MESSAGE):
            raise TypeError(f"{field.full_name}: a map this encoder does not write")
        if value.type == _TYPE_STRING:
            return _MAP, None
        return _MAP, schemas[value.message_type.name]
    if field.is_repeated:
        if field.type == _TYPE_MESSAGE:
            return _LIST_MESSAGE, schemas[message.name]
        if field.type == _TYPE_STRING:
            return _LIST_STRING, None
        raise TypeError(f"{field.full_name}: a repeated field this encoder does not write")
    if field.type == _TYPE_MESSAGE:
        return _MESSAGE, schemas[message.name]
    if field.type in _INTEGERS:
        return _INT, None
    if field.type in _ZIGZAG:
        return _SINT, None
    if field.type == _TYPE_STRING:
        return _STRING, None
    if field.type == _TYPE_BYTES:
        return _BYTES, None
    raise TypeError(f"{field.full_name}: a type this encoder does not write")


#: Every message of client.proto by name (``"Reply"``, ``"ClientInfo"``...).
SCHEMAS = _schemas()


def _as_mapping(value: Any) -> Mapping[str, Any] | None:
    """A message's value as a mapping: RawJSON (a ClientInfo as JSON text) is parsed."""
    if isinstance(value, RawJSON):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value if isinstance(value, Mapping) else None


def message(schema: Schema, obj: Mapping[str, Any] | RawJSON) -> bytes:
    """``obj``'s fields in ``schema``'s message, each as Go would write it."""
    mapping = _as_mapping(obj)
    if mapping is None:
        return b""
    parts: list[bytes] = []
    fields = schema.fields
    for key, value in mapping.items():
        if value is None:
            continue
        spec = fields.get(key)
        if spec is None:
            continue  # not in client.proto (a JSON-only field): not sent
        tag, kind, sub = spec
        if kind == _INT:
            if value:
                parts.append(tag + varint(int(value)))
        elif kind == _STRING:
            if value:
                parts.append(delimited(tag, text(value)))
        elif kind == _BYTES:
            raw = payload(value)
            if raw:
                parts.append(delimited(tag, raw))
        elif kind == _MESSAGE:
            assert sub is not None
            body = message(sub, value)
            if body or value:  # an empty body is kept for a non-empty value (all zeros)
                parts.append(delimited(tag, body))
        elif kind == _MAP:
            for entry_key, entry_value in value.items():
                entry = delimited(b"\x0a", text(entry_key))
                if entry_value is not None:
                    raw = text(entry_value) if sub is None else message(sub, entry_value)
                    entry += delimited(b"\x12", raw)
                parts.append(delimited(tag, entry))
        elif kind == _LIST_MESSAGE:
            assert sub is not None
            parts.extend(delimited(tag, message(sub, item)) for item in value)
        elif kind == _LIST_STRING:
            parts.extend(delimited(tag, text(item)) for item in value)
        else:  # _SINT
            number = int(value)
            if number:
                parts.append(tag + varint((number << 1) ^ (number >> 63)))
    return b"".join(parts)
