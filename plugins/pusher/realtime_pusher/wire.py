"""Pusher protocol 7 on the wire, sans-IO: close codes, the messages the server sends,
channel and event names, socket ids.

As pusher-js reads them (src/core/connection/protocol/protocol.ts): every message is
a JSON object ``{"event", "channel"?, "data"?}``; ``data`` of the server's own events
is JSON *text* (pusher-js parses a string ``data`` once more, and keeps it as is when
that fails), errors carry an object. Close codes 4000-4099 stop pusher-js (4000: TLS
only), 4100-4199 make it reconnect after a backoff, 4200-4299 at once, 4300 and over
stop it again; below 4000 it reconnects (backing off for 1002-1004).
"""

from __future__ import annotations

import json
import re
import secrets
from typing import Any, Final

#: The protocol version spoken (pusher-js 8 sends ``protocol=7``).
PROTOCOL: Final = 7
#: The versions accepted: 5 and 6 are the same messages (6 added the close codes).
PROTOCOLS: Final = frozenset({5, 6, 7})

# Close codes (pusher.com/docs/channels/library_auth_reference/pusher-websockets-protocol)
#: The app key is not known here.
APP_NOT_FOUND: Final = 4001
#: The client's protocol version is not spoken.
UNSUPPORTED_PROTOCOL: Final = 4007
#: The connection is not authorized (a failed ``pusher:signin``, a terminated user).
UNAUTHORIZED: Final = 4009
#: Over capacity: reconnect after a backoff.
OVER_CAPACITY: Final = 4100
#: Reconnect now (the server missed messages for it, or is restarting).
RECONNECT: Final = 4200
#: No pong to the server's ping in time: reconnect now.
PONG_TIMEOUT: Final = 4201
#: A client event refused (over the rate, too big, not allowed): sent as an error.
CLIENT_EVENT_REFUSED: Final = 4301

#: Pusher's channel names: letters, digits and ``_-=@,.;``, at most 200 of them.
CHANNEL_NAME: Final = re.compile(r"[A-Za-z0-9_\-=@,.;]{1,200}")
#: The channel a signed-in user's own events come on (pusher-js subscribes to it).
USER_CHANNEL_PREFIX: Final = "#server-to-user-"
#: The channels Pusher authorizes itself (HMAC auth strings, signin): the hub's rules
#: keep the other protocols' clients out of them (the hub's reserve_channels hook).
GUARDED_PREFIXES: Final = ("private-", "presence-", USER_CHANNEL_PREFIX)
#: Event names: at most 200 characters.
MAX_EVENT_NAME: Final = 200
#: Seconds a connection has to answer the server's ``pusher:ping``, at most.
PONG_WAIT: Final = 30.0
#: A presence member's ``user_info``, JSON bytes at most (Soketi's default: 2 KB).
MAX_MEMBER_INFO: Final = 2 * 1024
#: A user id (presence ``user_id``, signin ``id``): at most this many characters.
MAX_USER_ID: Final = 128

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def dumps(value: Any) -> str:
    """Compact JSON text, as Pusher sends it."""
    return _dumps(value)


def new_socket_id() -> str:
    """A socket id as Pusher makes them, ``digits.digits``: two random numbers of 1 to
    2^31 (62 bits of randomness, so ids are unique across hosts too); the server SDKs
    check ``^\\d+\\.\\d+$``."""
    return f"{secrets.randbelow(1 << 31) + 1}.{secrets.randbelow(1 << 31) + 1}"


def event(name: str, data: Any = None, channel: str | None = None) -> str:
    """A server message: ``data`` a string is sent as is (JSON text or not), anything
    else as its JSON text in a string, as Pusher's own events are."""
    message: dict[str, Any] = {"event": name}
    if channel is not None:
        message["channel"] = channel
    if data is not None:
        message["data"] = data if isinstance(data, str) else dumps(data)
    return dumps(message)


def connection_established(socket_id: str, activity_timeout: int) -> str:
    return event(
        "pusher:connection_established",
        {"socket_id": socket_id, "activity_timeout": activity_timeout},
    )


PONG: Final = event("pusher:pong", {})
PING: Final = event("pusher:ping", {})


def error(message: str, code: int | None = None, channel: str | None = None) -> str:
    """``pusher:error``: its data an object ``{"code", "message"}`` (code null where
    no Pusher code applies), as Pusher sends it; pusher-js emits it as an ``error``."""
    payload: dict[str, Any] = {"event": "pusher:error", "data": {"code": code, "message": message}}
    if channel is not None:
        payload["channel"] = channel
    return dumps(payload)


def subscription_error(channel: str, kind: str, message: str, status: int) -> str:
    """``pusher:subscription_error`` on ``channel``: ``{"type", "error", "status"}``, as
    pusher-js reports a failed authorization (``AuthError``, status 401)."""
    return dumps(
        {
            "event": "pusher:subscription_error",
            "channel": channel,
            "data": {"type": kind, "error": message, "status": status},
        }
    )


def subscription_succeeded(channel: str, presence: Any = None) -> str:
    """``pusher_internal:subscription_succeeded``; for a presence channel its members,
    ``{"presence": {"ids", "hash", "count"}}`` as JSON text."""
    data = {} if presence is None else {"presence": presence}
    return event("pusher_internal:subscription_succeeded", data, channel)


def member_added(channel: str, user_id: str, user_info: Any) -> str:
    return event(
        "pusher_internal:member_added", {"user_id": user_id, "user_info": user_info}, channel
    )


def member_removed(channel: str, user_id: str) -> str:
    return event("pusher_internal:member_removed", {"user_id": user_id}, channel)


def channel_kind(name: str) -> str:
    """``public``, ``private``, ``encrypted`` (``private-encrypted-``), ``presence`` or
    ``user`` (``#server-to-user-``)."""
    if name.startswith("private-encrypted-"):
        return "encrypted"
    if name.startswith("private-"):
        return "private"
    if name.startswith("presence-"):
        return "presence"
    if name.startswith(USER_CHANNEL_PREFIX):
        return "user"
    return "public"


def valid_channel(name: object) -> bool:
    """A name a client may subscribe to: Pusher's rules, or a user's own channel
    (``#server-to-user-<id>``, whose id is checked against the signed-in user)."""
    if not isinstance(name, str):
        return False
    if name.startswith(USER_CHANNEL_PREFIX):
        return 0 < len(name) - len(USER_CHANNEL_PREFIX) <= MAX_USER_ID
    return CHANNEL_NAME.fullmatch(name) is not None


def user_id_of(value: object) -> str | None:
    """A presence ``user_id``: a string, or a number (an integer as its digits), as
    Pusher's server libraries accept; None for anything else or an empty one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, str):
        text = value
    else:
        return None
    return text if 0 < len(text) <= MAX_USER_ID else None
