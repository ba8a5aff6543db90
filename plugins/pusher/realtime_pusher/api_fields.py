"""What the HTTP API and the auth functions accept, as Pusher's docs and server SDKs
define it: channel names, socket ids, user ids, event names."""

from __future__ import annotations

import re

#: Pusher's channel names: letters, digits and ``-_=@,.;``, at most 200 characters.
CHANNEL = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,200}")
#: The channel of one signed-in user's events (``#server-to-user-<user id>``).
USER_CHANNEL_PREFIX = "#server-to-user-"
#: A socket id as the server hands them out: ``digits.digits``.
SOCKET_ID = re.compile(r"[0-9]{1,20}\.[0-9]{1,20}")
#: The longest user id the protocol takes (a presence ``user_id``, a signin ``id``).
MAX_USER_ID = 128
#: User ids in paths and signins: the channel-name characters, at most 128 (the
#: server SDKs check the characters; the connections take no longer ids).
USER_ID = re.compile(r"[-a-zA-Z0-9_=@,.;]{1,128}")
#: The longest event name (Pusher's limit).
MAX_EVENT_NAME = 200
#: Event names the protocol itself uses: never published through the API.
RESERVED_EVENT_PREFIXES = ("pusher:", "pusher_internal:")
PRIVATE, ENCRYPTED, PRESENCE = "private-", "private-encrypted-", "presence-"


def channel_error(channel: object, *, user_channels: bool = False) -> str | None:
    """Why ``channel`` is not a Pusher channel name, or None if it is one
    (``#server-to-user-<id>`` too, where ``user_channels``)."""
    if not isinstance(channel, str):
        return "a channel name is a string"
    if user_channels and channel.startswith(USER_CHANNEL_PREFIX):
        problem = user_id_error(channel[len(USER_CHANNEL_PREFIX) :])
        return None if problem is None else f"{channel[:210]!r}: {problem}"
    if not CHANNEL.fullmatch(channel):
        return f"invalid channel name {channel[:210]!r}: 1 to 200 letters, digits or '-_=@,.;'"
    return None


def socket_id_error(socket_id: object) -> str | None:
    """Why ``socket_id`` is not one (``digits.digits``), or None."""
    if not isinstance(socket_id, str) or not SOCKET_ID.fullmatch(socket_id):
        return f"invalid socket_id {str(socket_id)[:48]!r}: expected digits.digits"
    return None


def user_id_error(user_id: object) -> str | None:
    if not isinstance(user_id, str) or not USER_ID.fullmatch(user_id):
        return f"invalid user id: 1 to {MAX_USER_ID} letters, digits or '-_=@,.;'"
    return None


def event_name_error(name: object) -> str | None:
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_EVENT_NAME:
        return f"an event name is a string of 1 to {MAX_EVENT_NAME} characters"
    if name.startswith(RESERVED_EVENT_PREFIXES):
        return f"event names starting {' or '.join(RESERVED_EVENT_PREFIXES)} are the protocol's"
    if not name.isprintable():
        return "an event name is printable text"
    return None


def is_presence(channel: str) -> bool:
    return channel.startswith(PRESENCE)


def is_encrypted(channel: str) -> bool:
    return channel.startswith(ENCRYPTED)


def is_private(channel: str) -> bool:
    """Private (``private-``, encrypted ones included) or presence: needs auth."""
    return channel.startswith((PRIVATE, PRESENCE))
