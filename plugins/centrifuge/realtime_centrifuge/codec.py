"""The JSON codec of the Centrifuge client protocol v2: commands in, replies and pushes out.

A WebSocket text frame holds one or more JSON objects separated by ``\\n``. Decoding
is as strict as Go's (centrifugal/protocol ``decode_stream.go``, which parses into
typed structs): a line that is not a JSON object, a known field of the wrong type, a
command with an id but no known request, or an empty command with an id all close the
connection with 3501 "bad request". Unknown fields are ignored, as clients send some
(``"flag"``). Checks on values (an empty channel, a missing token) belong to the session.

Encoding is compact with Go's ``omitempty``: ``None``, ``False``, ``0``, ``""`` and
empty containers are left out, except where clients need the field (a ``ClientInfo``'s
``user`` and ``client``; the presence and history results). Payloads (``data``,
``conn_info``, ``chan_info``) are JSON values kept as they are, ``0`` or ``false``
included; a :class:`RawJSON` is embedded verbatim, so a publication encoded once is
never serialised again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .codes import DISCONNECT_BAD_REQUEST, DisconnectError, Error

#: Requests a command can carry, in the order Go's dispatcher looks for them: the
#: first one present is the command's method. (The legacy ``ping`` is not there:
#: Go closes with 3501 on it, like on any command without a known request.)
METHODS = (
    "connect", "subscribe", "unsubscribe", "publish", "presence", "presence_stats",
    "history", "rpc", "send", "refresh", "sub_refresh",
)  # fmt: skip
#: What a push can carry besides its channel.
PUSH_KINDS = frozenset(
    {"pub", "join", "leave", "unsubscribe", "subscribe", "message", "disconnect", "connect",
     "refresh"}
)  # fmt: skip


class RawJSON(str):
    """JSON text encoded already: embedded as is instead of as a string.

    Counts only as a whole value (a publication's ``data``, a client's ``info``, a
    push body); inside a dict or list it would be a plain string. Line breaks in it
    are turned into spaces on output (outside strings they are only whitespace), so
    pretty-printed text cannot split a command line.
    """

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Command:
    """One decoded command; its params have been type-checked against the protocol."""

    id: int
    #: One of :data:`METHODS`, or ``""`` for the empty command, the client's pong.
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    #: A protobuf client's publish ``data`` as it sent it, when that is JSON text
    #: (``params`` holds its value): published byte for byte, as Centrifugo passes it on.
    raw_data: RawJSON | None = field(default=None, compare=False)

    def published_data(self) -> Any:
        """``data`` as a publication carries it: the client's own JSON text where kept."""
        return self.params.get("data") if self.raw_data is None else self.raw_data

    def get_str(self, key: str) -> str:
        """A string field; ``""`` when absent, as Go reads it."""
        value = self.params.get(key)
        return value if isinstance(value, str) else ""

    def get_bool(self, key: str) -> bool:
        """A boolean field; ``False`` when absent."""
        return self.params.get(key) is True

    def get_int(self, key: str) -> int:
        """An integer field; ``0`` when absent."""
        value = self.params.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    def get_map(self, key: str) -> Mapping[str, Any]:
        """An object field; empty when absent."""
        value = self.params.get(key)
        return value if isinstance(value, dict) else {}


# -- decoding -----------------------------------------------------------------------

Check = Callable[[Any], bool]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_any(value: Any) -> bool:
    return True


def _int_between(low: int, high: int) -> Check:
    def check(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high

    return check


def _fields(schema: Mapping[str, Check]) -> Check:
    """An object whose known fields have their types (``null`` is Go's zero value)."""

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        # Over the fields present (a command carries few of those it may have).
        for name, field_value in value.items():
            ok = schema.get(name)
            if ok is not None and field_value is not None and not ok(field_value):
                return False
        return True

    return check


def _map_of(item: Check) -> Check:
    def check(value: Any) -> bool:
        return isinstance(value, dict) and all(v is None or item(v) for v in value.values())

    return check


def _list_of(item: Check) -> Check:
    def check(value: Any) -> bool:
        return isinstance(value, list) and all(v is None or item(v) for v in value)

    return check


_U32 = _int_between(0, 2**32 - 1)
_U64 = _int_between(0, 2**64 - 1)
_I32 = _int_between(-(2**31), 2**31 - 1)
_I64 = _int_between(-(2**63), 2**63 - 1)
_OBJECT = _fields({})
_SUBSCRIBE = {
    "channel": _is_str, "token": _is_str, "recover": _is_bool, "epoch": _is_str,
    "offset": _U64, "data": _is_any, "positioned": _is_bool, "recoverable": _is_bool,
    "join_leave": _is_bool, "delta": _is_str, "tf": _OBJECT, "flag": _I64, "type": _I32,
    "phase": _I32, "cursor": _is_str, "limit": _I32, "asc": _is_bool,
}  # fmt: skip
_CHANNEL = {"channel": _is_str}
#: Field types of each request, from definitions/client.proto.
_REQUESTS: Mapping[str, Check] = MappingProxyType(
    {
        "connect": _fields({
            "token": _is_str, "data": _is_any, "subs": _map_of(_fields(_SUBSCRIBE)),
            "name": _is_str, "version": _is_str, "headers": _map_of(_is_str), "flag": _I64,
            "profile": _is_str, "dict": _is_str,
        }),
        "subscribe": _fields(_SUBSCRIBE),
        "unsubscribe": _fields(_CHANNEL),
        "publish": _fields({
            "channel": _is_str, "data": _is_any, "type": _I32, "key": _is_str,
            "removed": _is_bool,
        }),
        "presence": _fields(_CHANNEL),
        "presence_stats": _fields(_CHANNEL),
        "history": _fields({
            "channel": _is_str, "limit": _I32,
            "since": _fields({"offset": _U64, "epoch": _is_str}), "reverse": _is_bool,
        }),
        "rpc": _fields({"data": _is_any, "method": _is_str}),
        "send": _fields({"data": _is_any}),
        "refresh": _fields({"token": _is_str}),
        "sub_refresh": _fields({
            "channel": _is_str, "token": _is_str, "type": _I32, "track": _list_of(_OBJECT),
            "untrack": _list_of(_is_str),
        }),
    }
)  # fmt: skip


def _bad_request() -> DisconnectError:
    return DisconnectError(DISCONNECT_BAD_REQUEST)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_loads(decoder: json.JSONDecoder) -> Callable[[str], Any]:
    """``decoder.decode``, that is ``json.loads``, minus its two whitespace matches
    when there is no whitespace around the value (commands, tokens: as encoders write)."""
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
    decode = decoder.decode

    def loads(text: str) -> Any:
        try:
            value, end = scan(text, 0)
        except StopIteration:
            return decode(text)  # whitespace first, or not JSON: its error
        if end != len(text):
            return decode(text)  # whitespace after, or more: as json.loads
        return value

    return loads


#: ``json.loads(line, parse_constant=...)`` without a new decoder for every line.
_loads = json_loads(json.JSONDecoder(parse_constant=_no_constant))


def decode_command(line: str) -> Command:
    """One command line, or :class:`DisconnectError` (3501) if Go would refuse it."""
    try:
        obj = _loads(line)
    except (ValueError, RecursionError):
        raise _bad_request() from None
    if not isinstance(obj, dict):
        raise _bad_request()
    command_id = obj.get("id")
    if command_id is None:
        command_id = 0
    if not _U32(command_id):
        raise _bad_request()
    method, params = "", {}
    for name in METHODS:
        request = obj.get(name)
        if request is None:
            continue
        if not _REQUESTS[name](request):
            raise _bad_request()
        if not method:
            method, params = name, request
    if method == "send":
        return Command(command_id, method, params)
    if (command_id == 0) != (method == ""):
        # An id without a known request, or a request without an id (send aside).
        raise _bad_request()
    return Command(command_id, method, params)


def decode_commands(text: str, max_commands: int) -> list[Command]:
    """Every command of a frame, in order; 3501 for an empty or malformed frame.

    All lines are decoded before any is run: a frame with one bad line runs none
    (Go runs the lines before it, then closes; either way the client is closed).
    """
    if text.endswith("\n"):
        text = text[:-1]
    if not text or text.count("\n") >= max_commands:
        raise _bad_request()
    return [decode_command(line) for line in text.split("\n")]


# -- encoding -----------------------------------------------------------------------

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode
#: Arbitrary JSON values: kept whatever they are, only ``None`` (absent) is left out.
_PAYLOADS = frozenset({"data", "conn_info", "chan_info"})
#: ``map<string, X>`` fields: every entry is kept, even an empty ``{}`` result.
_MAPS = frozenset({"subs", "presence", "tags"})
#: ``ClientInfo.user`` and ``.client``: emitted even when empty.
_ALWAYS = frozenset({"user", "client"})
#: Result fields emitted even when empty, by method (Go has no omitempty on them).
_RESULT_ALWAYS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "presence": frozenset({"presence"}),
        "presence_stats": frozenset({"num_clients", "num_users"}),
        "history": frozenset({"publications", "epoch", "offset"}),
    }
)


def _raw(text: RawJSON) -> str | None:
    if not text or text.isspace():
        return None
    if "\n" in text or "\r" in text:
        return text.replace("\r", " ").replace("\n", " ")
    return str(text)


def _value(value: Any) -> str | None:
    """A value inside a message: containers are walked for RawJSON and omitempty."""
    if isinstance(value, RawJSON):
        return _raw(value)
    if isinstance(value, Mapping):
        return _object(value)
    if isinstance(value, list | tuple):
        items = (_value(item) for item in value)
        return "[" + ",".join("null" if item is None else item for item in items) + "]"
    return _dumps(value)


def _object(obj: Mapping[str, Any], keep: frozenset[str] = frozenset()) -> str:
    parts = []
    for key, value in obj.items():
        if value is None:
            continue
        encoded: str | None
        if isinstance(value, RawJSON):
            encoded = _raw(value)
        elif key in _PAYLOADS:
            encoded = _dumps(value)
        elif not value and key not in _ALWAYS and key not in keep:
            continue
        elif key in _MAPS:
            entries = ((_dumps(k), _value(v)) for k, v in value.items())
            encoded = "{" + ",".join(f"{k}:{'null' if v is None else v}" for k, v in entries) + "}"
        else:
            encoded = _value(value)
        if encoded is not None:
            parts.append(f"{_dumps(key)}:{encoded}")
    return "{" + ",".join(parts) + "}"


def _body(body: Mapping[str, Any] | RawJSON, keep: frozenset[str] = frozenset()) -> str:
    """A result or push body: always an object, at least ``{}``, as clients read it."""
    if isinstance(body, RawJSON):
        return _raw(body) or "{}"
    return _object(body, keep)


def encode_json(value: Any) -> RawJSON:
    """A payload (``data``, ``conn_info``...) as compact JSON, encoded once to embed often.

    Plain JSON: no field is left out of a payload, whatever its value.
    """
    return value if isinstance(value, RawJSON) else RawJSON(_dumps(value))


def encode_reply(command_id: int, method: str, result: Mapping[str, Any] | RawJSON) -> str:
    """``{"id":N,"<method>":{result}}``: the answer to a command, ``{}`` at least."""
    if method not in _REQUESTS or method == "send":
        raise ValueError(f"no reply for {method!r}")
    if not 0 < command_id < 2**32:
        raise ValueError("a reply needs the command's id")
    body = _body(result, _RESULT_ALWAYS.get(method, frozenset()))
    return f'{{"id":{command_id},"{method}":{body}}}'


def encode_error(command_id: int, error: Error) -> str:
    """``{"id":N,"error":{"code":..,"message":..}}``, ``"temporary":true`` if so."""
    body = {"code": error.code, "message": error.message, "temporary": error.temporary}
    return f'{{"id":{command_id},"error":{_object(body)}}}'


def encode_push(channel: str, kind: str, body: Mapping[str, Any] | RawJSON) -> str:
    """``{"push":{"channel":..,"<kind>":{body}}}``: a message with no command behind it.

    The result is the same for every client on this codec, so a fan-out encodes it
    once; ``body`` may itself be pre-encoded JSON text (:class:`RawJSON`).
    """
    if kind not in PUSH_KINDS:
        raise ValueError(f"unknown push kind {kind!r}")
    channel_part = f'"channel":{_dumps(channel)},' if channel else ""
    return f'{{"push":{{{channel_part}"{kind}":{_body(body)}}}}}'


def encode_publication(
    channel: str,
    data: Any,
    info: Mapping[str, Any] | RawJSON | None = None,
    offset: int = 0,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The ``pub`` push subscribers of ``channel`` get; ``data`` is always sent.

    ``info`` is the publisher's ``ClientInfo`` (``user``, ``client``, ``conn_info``,
    ``chan_info``), set for publications coming from a client.
    """
    body = {"data": RawJSON("null") if data is None else data, "info": info,
            "offset": offset, "tags": tags}  # fmt: skip
    return encode_push(channel, "pub", body)
