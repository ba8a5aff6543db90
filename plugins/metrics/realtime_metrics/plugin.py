"""The metrics plugin: prometheus-client behind ``host.telemetry``, served at /metrics.

On when the internal listener is (``--internal-bind``), unless ``--no-metrics``:
``validate`` installs the exporter (before any plugin makes an instrument in its
``startup``), ``startup`` starts the event-loop probe, and ``/metrics`` is an internal
route, never on the public site. With ``--workers`` above 1 the supervisor gives the
workers one ``PROMETHEUS_MULTIPROC_DIR`` before it forks (``configure_server``), so
any worker's scrape answers for the whole server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hypercorn.config import Config as ServerConfig
from quart import Response, request

from realtime import Host, Option, Route, hookimpl
from realtime.settings import INTERNAL_BIND, WORKERS

from . import multiproc
from .exporter import PrometheusExporter
from .lag import lag_histogram, run_probe
from .process import ProcessMirror

METRICS = Option(
    "metrics",
    True,
    "export Prometheus metrics at /metrics on the internal listener (--internal-bind); "
    "--no-metrics: no exporter, every instrument a no-op",
    type=bool,
)

EXTENSION_KEY = "realtime_metrics"
PATH = "/metrics"
#: An Accept header is a few dozen bytes; a longer one is cut before it is parsed.
MAX_ACCEPT = 1024


@dataclass
class MetricsState:
    """One host's exporter and the task of its event-loop probe."""

    exporter: PrometheusExporter
    probe: asyncio.Task[None] | None = None


def enabled(settings: Mapping[str, Any]) -> bool:
    """Whether metrics are exported: the internal listener is on and metrics are not off."""
    return METRICS.get(settings) and bool(INTERNAL_BIND.get(settings))


def multiprocess(settings: Mapping[str, Any]) -> bool:
    """Whether prometheus-client runs (or will run) in its multiprocess mode."""
    return WORKERS.get(settings) > 1 or bool(os.environ.get(multiproc.ENV))


def get_state(host: Host) -> MetricsState | None:
    """The host's metrics state; ``None`` when metrics are off."""
    state = host.app.extensions.get(EXTENSION_KEY)
    return state if isinstance(state, MetricsState) else None


@hookimpl
def register_options() -> list[Option[Any]]:
    return [METRICS]


@hookimpl
def validate(host: Host) -> None:
    if not enabled(host.settings):
        return
    exporter = PrometheusExporter(multiprocess=multiprocess(host.settings))
    try:
        exporter.check_mode()
    except RuntimeError as exc:
        raise ValueError(str(exc)) from None
    host.telemetry.install(exporter)
    host.app.extensions[EXTENSION_KEY] = MetricsState(exporter)


@hookimpl
def configure_server(config: ServerConfig, settings: Mapping[str, Any]) -> None:
    # In the process that forks the workers, before anything imports prometheus_client.
    if enabled(settings) and multiprocess(settings):
        multiproc.prepare()


@hookimpl
def register_internal_routes(host: Host) -> list[Route]:
    # Collected before ``validate``: decided from the settings, the state read per scrape.
    if not enabled(host.settings):
        return []

    async def metrics() -> Response:
        state = get_state(host)
        if state is None:  # pragma: no cover - validate installs it whenever enabled
            return Response("metrics are off\n", 404, content_type="text/plain")
        host.telemetry.sample()
        accept = request.headers.get("Accept", "")[:MAX_ACCEPT]
        body, content_type = state.exporter.render(accept)
        return Response(body, content_type=content_type)

    return [Route(PATH, metrics)]


@hookimpl
def startup(host: Host) -> None:
    state = get_state(host)
    if state is None:
        return
    exporter = state.exporter
    exporter.check_mode()  # in the worker, after the fork: the mode is settled now
    lag = lag_histogram(host.telemetry)
    if exporter.multiprocess:
        host.telemetry.sampler(ProcessMirror(host.telemetry).sample)
    else:
        exporter.registry  # noqa: B018 - the registry and its process collectors, now
    state.probe = asyncio.get_running_loop().create_task(
        run_probe(lag, host.telemetry.sample), name="realtime-metrics-probe"
    )


@hookimpl
async def shutdown(host: Host) -> None:
    state = get_state(host)
    if state is None or state.probe is None:
        return
    state.probe.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await state.probe
    state.probe = None


@hookimpl
def worker_exited(host: Host, pid: int) -> None:
    state = get_state(host)
    if state is not None and state.exporter.multiprocess:
        from prometheus_client import multiprocess as client_multiprocess

        # The dead worker's live gauges (connections...) go; its counts stay summed.
        client_multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]
