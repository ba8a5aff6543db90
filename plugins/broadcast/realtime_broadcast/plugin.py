"""Registers ``broadcast`` as a native function for drop-in scripts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realtime import hookimpl

from .functions import broadcast, history, presence, presence_stats

#: Every function goes through the broker (``realtime_broker.get_broker``).
REQUIRES = ("broker",)


@hookimpl
def register_functions() -> Mapping[str, Callable[..., Any]]:
    return {
        "broadcast": broadcast,
        "history": history,
        "presence": presence,
        "presence_stats": presence_stats,
    }
