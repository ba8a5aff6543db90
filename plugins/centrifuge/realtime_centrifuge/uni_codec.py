"""The JSON codec of Centrifugo's one-way (unidirectional) transports.

A one-way client sends a single thing, its connect request (a ``ConnectRequest``:
``token``, ``data``, ``subs``, ``name``, ``version``), and then only reads. What it
reads are bare ``Push`` objects, one JSON object a message, never wrapped in a
``Reply``: ``{"connect":{...}}`` first, then ``{"channel":"news","pub":{...}}``,
``join``, ``leave``, ``subscribe``, ``unsubscribe``, ``message``, ``refresh``, and
``{"disconnect":{...}}`` before the end; pings are ``{}`` (Go's ``jsonPingPush``).

It is a codec of its own (:class:`UniJSONCodec`), not a flag on a connection: the
hub encodes a publication once per codec present in a channel, so every one-way
subscriber shares one encoding and stays on the fan-out's fast path.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .codec import (
    Command,
    RawJSON,
    decode_command,
    encode_publication,
    encode_push,
    json_loads,
)
from .codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_CONNECTION_EXPIRED,
    DISCONNECT_PERMISSION_DENIED,
    DISCONNECT_SERVER_ERROR,
    DISCONNECT_TOO_MANY_REQUESTS,
    ERROR_EXPIRED,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ERROR_TOO_MANY_REQUESTS,
    Disconnect,
    DisconnectError,
    Error,
)
from .wire import Frame, JSONCodec

#: The most bytes of a connect request (Go's ``max_request_body_size`` and
#: ``message_size_limit`` defaults for the one-way transports).
MAX_CONNECT_SIZE = 65536
#: ``{"push":`` and its closing brace: what a bidirectional push wraps around the bare one.
_PUSH_WRAP = len('{"push":')

#: Go's ``defaultUniErrorCodeToDisconnect``: a refused connect has no reply to go in,
#: so it closes the connection with the disconnect its error maps to (3004 for others).
REFUSALS: Mapping[int, Disconnect] = {
    ERROR_EXPIRED.code: DISCONNECT_CONNECTION_EXPIRED,
    ERROR_TOKEN_EXPIRED.code: DISCONNECT_CONNECTION_EXPIRED,
    ERROR_TOO_MANY_REQUESTS.code: DISCONNECT_TOO_MANY_REQUESTS,
    ERROR_PERMISSION_DENIED.code: DISCONNECT_PERMISSION_DENIED,
}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


#: ``json.loads`` refusing ``NaN`` and ``Infinity``, as Go's parser does.
_loads = json_loads(json.JSONDecoder(parse_constant=_no_constant))


def refusal(error: Error) -> Disconnect:
    """The disconnect that ends a one-way connection whose connect got ``error``."""
    return REFUSALS.get(error.code, DISCONNECT_SERVER_ERROR)


def connect_command(data: str | bytes) -> Command:
    """A connect request as the session's ``connect`` command; 3501 if it is not one.

    Empty text and ``null`` are an empty request, as in Go. Its ``headers`` are
    dropped: the hooks see the request's own headers (its cookies), which a URL
    parameter must not be able to replace.
    """
    if len(data) > MAX_CONNECT_SIZE:
        raise DisconnectError(DISCONNECT_BAD_REQUEST)
    try:
        text = data if isinstance(data, str) else data.decode()
        request = _loads(text.strip()) if text.strip() else None
    except (ValueError, RecursionError):
        raise DisconnectError(DISCONNECT_BAD_REQUEST) from None
    if request is None:
        return Command(1, "connect", {})
    if not isinstance(request, dict):
        raise DisconnectError(DISCONNECT_BAD_REQUEST)
    # One JSON object inside another: the protocol's type checks, nothing else added.
    command = decode_command('{"id":1,"connect":' + text.strip() + "}")
    params = {key: value for key, value in command.params.items() if key != "headers"}
    return Command(1, "connect", params)


def bare(push: str) -> str:
    """A bidirectional push (``{"push":{...}}``) as the bare ``Push`` object inside it."""
    return push[_PUSH_WRAP:-1]


class UniJSONCodec(JSONCodec):
    """Bare pushes out, one connect request in: Centrifugo's one-way JSON protocol."""

    __slots__ = ()

    name = "json"

    def decode_commands(self, data: str | bytes, max_commands: int) -> list[Command]:
        return [connect_command(data)]

    def encode_reply(self, command_id: int, method: str, result: Mapping[str, Any]) -> Frame:
        if method != "connect":
            raise ValueError(f"a one-way connection gets no {method!r} reply")
        return bare(encode_push("", "connect", result))

    def encode_error(self, command_id: int, error: Error) -> Frame:
        return disconnect_push(refusal(error))

    def encode_push(self, channel: str, kind: str, body: Mapping[str, Any]) -> Frame:
        return bare(encode_push(channel, kind, body))

    def encode_publication(
        self,
        channel: str,
        data: Any,
        info: Mapping[str, Any] | RawJSON | None = None,
        offset: int = 0,
        tags: Mapping[str, str] | None = None,
    ) -> Frame:
        return bare(encode_publication(channel, data, info, offset, tags))


#: The one-way JSON codec, shared by every one-way connection.
UNI_JSON = UniJSONCodec()


def disconnect_push(disconnect: Disconnect) -> str:
    """``{"disconnect":{"code":..,"reason":..}}``: what a one-way client reads last."""
    return bare(
        encode_push("", "disconnect", {"code": disconnect.code, "reason": disconnect.reason})
    )


def refused(frame: Frame) -> Disconnect | None:
    """The disconnect a frame announces, if it is a disconnect push (a refused connect)."""
    if not isinstance(frame, str) or not frame.startswith('{"disconnect":'):
        return None
    try:
        body = _loads(frame)["disconnect"]
        return Disconnect(int(body["code"]), str(body.get("reason", "")))
    except (ValueError, KeyError, TypeError):
        return DISCONNECT_SERVER_ERROR
