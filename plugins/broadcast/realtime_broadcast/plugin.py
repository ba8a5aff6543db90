"""Registers ``broadcast`` as a native function for drop-in scripts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from realtime import Host, hookimpl

from .functions import PUBLICATIONS_KEY, broadcast, history, presence, presence_stats

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


@hookimpl
def startup(host: Host) -> None:
    # Made after the exporter is installed (and after a fork), kept per host: one
    # increment per broadcast() call, labelled as the Centrifuge API's and clients' are.
    publications = host.telemetry.counter(
        "realtime_publications_total", "Publications made, by where they came from.", ("source",)
    )
    host.app.extensions[PUBLICATIONS_KEY] = publications.labels("script")
