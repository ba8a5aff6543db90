"""Where a host keeps its hub: ``app.extensions``, never a module global."""

from __future__ import annotations

from realtime import Host

from .engine import Hub, HubClosed

EXTENSION_KEY = "realtime_hub.hub"


def get_hub(host: Host) -> Hub:
    """The hub of ``host``; raises :class:`HubClosed` before start-up or after shutdown."""
    hub = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(hub, Hub):
        raise HubClosed("the hub is not running (host not started)")
    return hub
