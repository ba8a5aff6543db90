"""The running Pusher side of one host: its apps, its connections by socket id and by
user, presence channels tracked by the broker, and what the HTTP API asks of them.

What concerns connections on other hosts (``terminate_user``) travels as a control
message on the broker (:meth:`realtime_broker.Broker.publish_control`), a JSON object
with an ``op`` as the Centrifuge node's are (each plugin ignores the other's ops).
"""

from __future__ import annotations

from realtime import Host

from .apps import Apps, PusherApp

#: Where a host keeps its node (``app.extensions``).
EXTENSION_KEY = "realtime_pusher.node"
#: The Pusher channel a signed-in user's own events go to (as Pusher names it).
USER_CHANNEL_PREFIX = "#server-to-user-"


class PusherNode:
    """Per host: nothing here is shared between two apps of the host."""

    def __init__(self, host: Host, apps: Apps) -> None:
        self.host = host
        self.apps = apps

    def bus_channel(self, app: PusherApp, pusher_channel: str) -> str:
        """The bus channel of ``app``'s ``pusher_channel`` (the app's prefix in front)."""
        return self.apps.prefix(app) + pusher_channel

    def user_channel(self, app: PusherApp, user_id: str) -> str:
        """The bus channel of the events sent to one user (``#server-to-user-<id>``)."""
        return self.bus_channel(app, USER_CHANNEL_PREFIX + user_id)

    async def terminate_user(self, app: PusherApp, user_id: str) -> None:
        """Close ``user_id``'s connections to ``app`` on every host (signed in, or in a
        presence channel as that user)."""


def get_node(host: Host) -> PusherNode:
    """The host's node; LookupError before start-up or after shutdown."""
    node = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(node, PusherNode):
        raise LookupError("the pusher plugin is not running")
    return node


def start(host: Host, apps: Apps) -> None:
    """Start serving ``apps`` on this host."""
    host.app.extensions[EXTENSION_KEY] = PusherNode(host, apps)


async def stop(host: Host) -> None:
    """Stop, closing what is open."""
    host.app.extensions.pop(EXTENSION_KEY, None)
