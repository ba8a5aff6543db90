"""Hooks the hub asks of other plugins (declared through ``register_hookspecs``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from realtime import hookspec


@hookspec
def reserve_channels(host: Any) -> Sequence[str]:  # type: ignore[empty-body]
    """Channel-name prefixes a protocol guards with its own authorization (Pusher's
    ``private-``, ``presence-``, ``#server-to-user-``): the hub's channel rules then
    treat them as private, so clients of the protocols that follow those rules (the
    raw ``/ws``, the Centrifuge protocol) need a grant to subscribe and never publish
    there. The server (scripts, server APIs) publishes there as anywhere."""
