"""The running Pusher side of one host (helper P1 fills this in)."""

from __future__ import annotations

from realtime import Host

from .apps import Apps


def start(host: Host, apps: Apps) -> None:
    """Start serving ``apps`` on this host."""


async def stop(host: Host) -> None:
    """Stop, closing what is open."""
