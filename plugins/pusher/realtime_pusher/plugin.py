"""The Pusher plugin: ``/app/{key}`` WebSockets, the HTTP API under ``/apps/{id}``,
and the auth functions for drop-in scripts.

Built on the hub and the broker's public API, as the Centrifuge plugin is; it knows
nothing of the other protocols, which serve the same channels beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realtime import Host, Option, hookimpl
from realtime.routes import AnyRoute

from .apps import Apps, make_apps, parse_apps

#: Sessions live in the hub; publications and presence go through the broker.
REQUIRES = ("hub", "broker")

PUSHER_APPS: Option[Any] = Option(
    "pusher_apps",
    None,
    "the Pusher apps served, each with id, key and secret (an array of tables "
    "[[pusher_apps]] in realtime.toml, JSON here; see docs/pusher.md)",
    type=parse_apps,
    secret=True,  # it holds the apps' secrets
)
PUSHER_APP_ID = Option("pusher_app_id", "", "one Pusher app's id (with its key and secret)")
PUSHER_APP_KEY = Option("pusher_app_key", "", "one Pusher app's key (pusher-js's first argument)")
PUSHER_APP_SECRET = Option("pusher_app_secret", "", "one Pusher app's secret", secret=True)
PUSHER_TIMESTAMP_WINDOW = Option(
    "pusher_timestamp_window",
    600,
    "seconds an HTTP API request's auth_timestamp may be off the server's clock",
    type=int,
)
PUSHER_DEFAULT_EVENT = Option(
    "pusher_default_event",
    "message",
    "the Pusher event name of a publication that names none (a script's broadcast()), "
    "as pusher-js binds it: channel.bind('message', ...)",
)


def apps_of(settings: Mapping[str, Any]) -> Apps:
    """The configured apps: ``pusher_apps``, then the one from the single-app flags."""
    tables = list(PUSHER_APPS.get(settings) or [])
    one = {
        "id": PUSHER_APP_ID.get(settings),
        "key": PUSHER_APP_KEY.get(settings),
        "secret": PUSHER_APP_SECRET.get(settings),
    }
    if any(one.values()):
        if not all(one.values()):
            raise ValueError("--pusher-app-id, --pusher-app-key and --pusher-app-secret: all three")
        tables.append(one)
    return make_apps(tables)


@hookimpl
def register_options() -> list[Option[Any]]:
    return [
        PUSHER_APPS,
        PUSHER_APP_ID,
        PUSHER_APP_KEY,
        PUSHER_APP_SECRET,
        PUSHER_TIMESTAMP_WINDOW,
        PUSHER_DEFAULT_EVENT,
    ]


@hookimpl
def validate(host: Host) -> None:
    apps_of(host.settings)
    if not 1 <= host.setting(PUSHER_TIMESTAMP_WINDOW) <= 86400:
        raise ValueError("--pusher-timestamp-window must be 1 to 86400 seconds")
    default_event = host.setting(PUSHER_DEFAULT_EVENT)
    if not 1 <= len(default_event) <= 200:
        raise ValueError("--pusher-default-event must be 1 to 200 characters")
    if default_event.startswith(("pusher:", "pusher_internal:")):
        # Pusher clients never get such names from a publisher: nothing would arrive.
        raise ValueError("--pusher-default-event must not start with pusher: or pusher_internal:")


@hookimpl
def reserve_channels(host: Host) -> list[str]:
    """Every app's private, presence and user channels, as the bus names them: a raw
    ``/ws`` or Centrifuge client must not read what Pusher's auth guards."""
    from .wire import GUARDED_PREFIXES

    apps = apps_of(host.settings)
    return [apps.prefix(app) + guarded for app in apps for guarded in GUARDED_PREFIXES]


@hookimpl
def register_routes(host: Host) -> list[AnyRoute]:
    from . import api, ws

    apps = apps_of(host.settings)
    if not apps:
        return []
    return [*ws.routes(host, apps), *api.routes(host, apps)]


@hookimpl
def register_functions(host: Host) -> Mapping[str, Callable[..., Any]]:
    from . import functions

    return functions.functions(host)


@hookimpl
def startup(host: Host) -> None:
    from . import node

    apps = apps_of(host.settings)
    if apps:
        node.start(host, apps)


@hookimpl
async def shutdown(host: Host) -> None:
    from . import node

    await node.stop(host)
