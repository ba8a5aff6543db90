"""Pusher's signatures, sans-IO: the auth strings of private, presence and encrypted
channels and of ``pusher:signin``, and the HTTP API's request signature.

As Pusher defines them (pusher.com/docs/channels/library_auth_reference): HMAC-SHA256
with the app's secret, hex-encoded, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def sign(secret: str, message: str) -> str:
    """HMAC-SHA256 of ``message`` with ``secret``, as lower-case hex."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """The ``auth`` a client sends with ``pusher:subscribe`` to a private, encrypted or
    presence channel: ``key:signature`` of ``socket_id:channel`` (``:channel_data``
    appended for presence channels, the JSON text sent alongside)."""
    message = f"{socket_id}:{channel}"
    if channel_data is not None:
        message += f":{channel_data}"
    return f"{key}:{sign(secret, message)}"


def user_auth(key: str, secret: str, socket_id: str, user_data: str) -> str:
    """The ``auth`` of ``pusher:signin``: ``key:signature`` of ``socket_id::user::data``."""
    return f"{key}:{sign(secret, f'{socket_id}::user::{user_data}')}"


def check_auth(expected: str, given: object) -> bool:
    """Whether ``given`` is ``expected``, in constant time (False for a non-string)."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


def api_signature(secret: str, method: str, path: str, params: Mapping[str, str]) -> str:
    """The HTTP API's ``auth_signature``: HMAC-SHA256 of ``METHOD\\npath\\nquery``, the
    query being every parameter but ``auth_signature``, keys lower-cased and sorted,
    values as sent, joined ``k=v`` with ``&`` (not URL-encoded)."""
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted((k.lower(), v) for k, v in params.items())
        if name != "auth_signature"
    )
    return sign(secret, f"{method.upper()}\n{path}\n{query}")


def body_md5(body: bytes) -> str:
    """The HTTP API's ``body_md5``: hex MD5 of the request body."""
    return hashlib.md5(body, usedforsecurity=False).hexdigest()
