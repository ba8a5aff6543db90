"""The ``/app/{key}`` WebSocket endpoint (helper P1 fills this in)."""

from __future__ import annotations

from realtime import Host
from realtime.routes import AnyRoute

from .apps import Apps


def routes(host: Host, apps: Apps) -> list[AnyRoute]:
    """One route per app key: ``/app/{key}``."""
    return []
