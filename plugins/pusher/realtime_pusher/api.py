"""Pusher's HTTP API under ``/apps/{id}`` (helper P2 fills this in)."""

from __future__ import annotations

from realtime import Host
from realtime.routes import AnyRoute

from .apps import Apps


def routes(host: Host, apps: Apps) -> list[AnyRoute]:
    """The HTTP API's paths for each app."""
    return []
