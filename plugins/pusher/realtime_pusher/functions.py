"""Functions for drop-in scripts: ``pusher_auth`` and ``pusher_user_auth``, what an
auth endpoint for pusher-js answers (``app/pusher_auth.py`` is a few lines).

Their output is what Pusher's server SDKs' ``authenticate`` and
``authenticate_user`` return for the same input, so a script ported from one answers
the same. A bad socket id or channel name is the client's: 400. Which users may join
which channel is the script's to decide before it calls these.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from realtime import Host, HTTPError

from . import api_fields as fields
from .apps import Apps, PusherApp
from .signing import channel_auth, user_auth

#: The largest ``channel_data`` or ``user_data`` (its JSON text, bytes): it travels in
#: the subscription and in every presence read.
MAX_DATA = 16 * 1024


class AuthRefused(HTTPError):
    """The client asked for something no auth can be given for."""

    status = 400


def _json_text(value: Any, what: str) -> str:
    """JSON text as given, or a value encoded as the server SDKs encode it."""
    if isinstance(value, str):
        text = value
        try:
            value = json.loads(text)
        except ValueError:
            raise TypeError(f"{what} is a JSON object or its JSON text") from None
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{what} could not be encoded as JSON: {exc}") from None
    if not isinstance(value, dict):
        raise TypeError(f"{what} is a JSON object")
    if len(text.encode("utf-8", "replace")) > MAX_DATA:
        raise AuthRefused(f"{what} is over {MAX_DATA} bytes")
    return text


class Functions:
    """The functions of one host (the apps read from its settings once, when first used)."""

    def __init__(self, host: Host) -> None:
        self.host = host
        self._apps: Apps | None = None

    def app(self, app: str | None) -> PusherApp:
        if self._apps is None:
            from .plugin import apps_of

            self._apps = apps_of(self.host.settings)
        if not self._apps:
            raise LookupError("no Pusher app is configured (pusher_apps, or --pusher-app-id)")
        if app is None:
            return next(iter(self._apps.by_id.values()))
        found = self._apps.by_id.get(app)
        if found is None:
            raise LookupError(f"no Pusher app with id {app!r}")
        return found

    def pusher_auth(
        self,
        socket_id: str,
        channel: str,
        channel_data: Any = None,
        *,
        app: str | None = None,
    ) -> dict[str, str]:
        """What Pusher's auth endpoint answers for a private, encrypted or presence
        channel: ``{"auth": "key:signature"}``, with ``channel_data`` (presence: a JSON
        object with ``user_id`` and optional ``user_info``, or its JSON text) and
        ``shared_secret`` (``private-encrypted-``) as Pusher defines them."""
        pusher_app = self.app(app)
        problem = fields.socket_id_error(socket_id) or fields.channel_error(channel)
        if problem:
            raise AuthRefused(problem)
        if not fields.is_private(channel):
            raise AuthRefused(f"{channel!r} is a public channel: it needs no auth")
        data: str | None = None
        if fields.is_presence(channel):
            if channel_data is None:
                raise TypeError("a presence channel's auth needs channel_data with a user_id")
            data = _json_text(channel_data, "channel_data")
            user_id = json.loads(data).get("user_id")
            if isinstance(user_id, int) and not isinstance(user_id, bool):
                user_id = str(user_id)
            if not (
                isinstance(user_id, str)
                and 1 <= len(user_id) <= fields.MAX_USER_ID
                and user_id.isprintable()
            ):
                raise AuthRefused(
                    f"channel_data's user_id is 1 to {fields.MAX_USER_ID} printable characters"
                )
        elif channel_data is not None:
            raise TypeError("channel_data is for presence channels only")
        answer = {"auth": channel_auth(pusher_app.key, pusher_app.secret, socket_id, channel, data)}
        if fields.is_encrypted(channel):
            master = pusher_app.encryption_master_key
            if master is None:
                raise HTTPError(
                    f"the Pusher app {pusher_app.id!r} has no encryption_master_key_base64: "
                    "private-encrypted- channels cannot be authorized",
                    500,
                )
            shared = hashlib.sha256(channel.encode() + master).digest()
            answer["shared_secret"] = base64.b64encode(shared).decode()
        if data is not None:
            answer["channel_data"] = data
        return answer

    def pusher_user_auth(
        self, socket_id: str, user_data: Any, *, app: str | None = None
    ) -> dict[str, str]:
        """What Pusher's user authentication endpoint answers for ``pusher:signin``:
        ``{"auth": ..., "user_data": ...}``; ``user_data`` is a JSON object with an
        ``id`` (and optional ``user_info`` and ``watchlist``), or its JSON text."""
        pusher_app = self.app(app)
        problem = fields.socket_id_error(socket_id)
        if problem:
            raise AuthRefused(problem)
        data = _json_text(user_data, "user_data")
        problem = fields.user_id_error(json.loads(data).get("id"))
        if problem:
            raise AuthRefused(f"user_data's id: {problem}")
        return {
            "auth": user_auth(pusher_app.key, pusher_app.secret, socket_id, data),
            "user_data": data,
        }


def functions(host: Host) -> Mapping[str, Callable[..., Any]]:
    made = Functions(host)
    return {"pusher_auth": made.pusher_auth, "pusher_user_auth": made.pusher_user_auth}
