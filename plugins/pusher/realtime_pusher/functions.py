"""Functions for drop-in scripts: ``pusher_auth``, ``pusher_user_auth`` (helper P2)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realtime import Host


def functions(host: Host) -> Mapping[str, Callable[..., Any]]:
    return {}
