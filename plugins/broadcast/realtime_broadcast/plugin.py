"""Registers ``broadcast`` as a native function for drop-in scripts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realtime import Option, hookimpl

from .functions import SETTING, broadcast, history, presence, presence_stats

#: Every function goes through the broker (``realtime_broker.get_broker``).
REQUIRES = ("broker",)


@hookimpl
def register_options() -> list[Option]:
    return [Option(SETTING, 64 * 1024, "largest message broadcast() accepts, bytes", type=int)]


@hookimpl
def register_functions() -> Mapping[str, Callable[..., Any]]:
    return {
        "broadcast": broadcast,
        "history": history,
        "presence": presence,
        "presence_stats": presence_stats,
    }
