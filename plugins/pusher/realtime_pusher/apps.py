"""The Pusher apps this server serves: each an ``id``, ``key`` and ``secret`` (what a
Pusher server SDK and pusher-js are configured with) and its own switches.

From the ``pusher_apps`` setting: in realtime.toml an array of tables
(``[[pusher_apps]]``), as JSON on the command line; or one app from
``--pusher-app-id``/``--pusher-app-key``/``--pusher-app-secret``.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from realtime_broker.presence import MAX_PRESENCE_MEMBERS

#: What an app's id and key may be made of: they go in URL paths (``/app/{key}``,
#: ``/apps/{id}/events``).
NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")


@dataclass(frozen=True, slots=True)
class PusherApp:
    """One app, as Pusher's dashboard (and Soketi's and Reverb's configuration) has it."""

    id: str
    key: str
    secret: str
    #: ``client-*`` events on private and presence channels (off unless enabled, as
    #: Soketi and Reverb default).
    enable_client_messages: bool = False
    #: Seconds of silence after which pusher-js pings (sent in connection_established).
    activity_timeout: int = 120
    #: Where this app's channels live on the shared bus: "" (the channel names as they
    #: are, so a script's ``broadcast(..., channel="news")`` reaches the app's ``news``
    #: subscribers) for the first app by default, ``"<id>:"`` for the others, so apps
    #: never share a channel unless configured to.
    channel_prefix: str | None = None
    #: Largest ``client-*`` event or HTTP API event data, bytes (Pusher's limit: 10 KB).
    max_event_size: int = 10 * 1024
    #: The 32-byte key, base64, from which the auth endpoint derives each
    #: ``private-encrypted-`` channel's ``shared_secret`` (as the server SDKs'
    #: ``encryption_master_key_base64``); None: such channels cannot be authorized.
    encryption_master_key_base64: str | None = None
    #: Distinct users one presence channel holds (Pusher's limit: 100): a subscribe
    #: past it is refused, so what ``subscription_succeeded`` lists stays bounded.
    max_presence_members: int = 100

    def __post_init__(self) -> None:
        for field in ("id", "key"):
            if not NAME.fullmatch(getattr(self, field)):
                raise ValueError(
                    f"a Pusher app's {field} is 1 to 64 letters, digits, '_', '.' or '-'"
                )
        if not self.secret:
            raise ValueError(f"the Pusher app {self.id!r} needs a secret")
        if not 1 <= self.activity_timeout <= 3600:
            raise ValueError("a Pusher app's activity_timeout is 1 to 3600 seconds")
        if not 1 <= self.max_event_size <= 1024 * 1024:
            raise ValueError("a Pusher app's max_event_size is 1 byte to 1 MiB")
        if not 1 <= self.max_presence_members <= MAX_PRESENCE_MEMBERS:
            raise ValueError(f"a Pusher app's max_presence_members is 1 to {MAX_PRESENCE_MEMBERS}")
        if self.encryption_master_key_base64 is not None and self.encryption_master_key is None:
            raise ValueError(
                f"the Pusher app {self.id!r}'s encryption_master_key_base64 is not "
                "base64 of 32 bytes"
            )

    @property
    def encryption_master_key(self) -> bytes | None:
        """The decoded ``encryption_master_key_base64`` (None if unset or not 32 bytes)."""
        if not isinstance(self.encryption_master_key_base64, str):
            return None
        try:
            key = base64.b64decode(self.encryption_master_key_base64, validate=True)
        except ValueError:
            return None
        return key if len(key) == 32 else None


@dataclass(frozen=True, slots=True)
class Apps:
    """The configured apps, by id and by key; ``prefixes`` settled (see PusherApp)."""

    by_id: Mapping[str, PusherApp]
    by_key: Mapping[str, PusherApp]

    def __bool__(self) -> bool:
        return bool(self.by_id)

    def __iter__(self) -> Any:
        return iter(self.by_id.values())

    def prefix(self, app: PusherApp) -> str:
        """Where ``app``'s channels live on the bus (never None once settled)."""
        return app.channel_prefix or ""


def parse_apps(raw: Any) -> list[Mapping[str, Any]]:
    """The ``pusher_apps`` setting: a list of tables, or its JSON text."""
    if raw is None or raw == "":
        return []
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"expected pusher_apps as a JSON list of tables: {exc}") from None
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(entry, Mapping) for entry in raw):
        raise ValueError("pusher_apps is a list of tables with id, key and secret")
    return raw


def make_apps(tables: Iterable[Mapping[str, Any]]) -> Apps:
    """The apps from their tables; ValueError naming what is wrong."""
    known = {field.name for field in fields(PusherApp)}
    by_id: dict[str, PusherApp] = {}
    by_key: dict[str, PusherApp] = {}
    for number, table in enumerate(tables):
        unknown = set(table) - known
        if unknown:
            raise ValueError(f"pusher_apps: unknown setting(s) {sorted(unknown)}")
        values = {name: table[name] for name in table}
        for name in ("id", "key", "secret"):
            if name not in values:
                raise ValueError(f"pusher_apps: every app needs {name!r}")
            values[name] = str(values[name])
        if values.get("channel_prefix") is None:
            values["channel_prefix"] = "" if number == 0 else f"{values['id']}:"
        app = PusherApp(**values)
        if app.id in by_id or app.key in by_key:
            raise ValueError(f"pusher_apps: the id or key of {app.id!r} is used twice")
        by_id[app.id] = app
        by_key[app.key] = app
    prefixes = [app.channel_prefix for app in by_id.values()]
    if len(set(prefixes)) != len(prefixes):
        raise ValueError("pusher_apps: two apps share a channel_prefix")
    return Apps(by_id, by_key)
