"""Hook specifications: the whole contract between the host and its plugins.

The host calls every hook with keyword arguments; a plugin's implementation
declares only the arguments it needs (``def register_routes(): ...``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from hypercorn.config import Config as ServerConfig

    from .host import Host
    from .options import Option
    from .routes import AnyRoute

PROJECT = "realtime"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def register_hookspecs() -> object:
    """A module or class of ``@realtime.hookspec`` functions: hooks other plugins implement.

    Call them with ``host.hook.NAME(...)`` (pluggy's own calling, so ``firstresult`` and
    wrappers work there).
    """


@hookspec
def register_options() -> list[Option]:  # type: ignore[empty-body]
    """Settings the plugin reads; each becomes a ``--flag`` and a ``REALTIME_*`` variable."""


@hookspec
def register_routes(host: Host) -> list[AnyRoute]:  # type: ignore[empty-body]
    """HTTP and WebSocket routes the plugin serves (Quart views, or plain ASGI apps)."""


@hookspec
def register_internal_routes(host: Host) -> list[AnyRoute]:  # type: ignore[empty-body]
    """Routes served only on the internal listener (``--internal-bind``): metrics, admin.

    Never on the public site; without ``--internal-bind`` they are not served at all.
    """


@hookspec
def register_functions(host: Host) -> Mapping[str, Callable[..., Any]]:  # type: ignore[empty-body]
    """Native functions put in every drop-in script's namespace, by name."""


@hookspec
def validate(host: Host) -> None:
    """Refuse a bad configuration before serving: raise ``ValueError`` saying what to change."""


@hookspec
def configure_server(config: ServerConfig, settings: Mapping[str, Any]) -> None:
    """Adjust the Hypercorn config before serving (ping interval, timeouts...)."""


@hookspec
def worker_exited(host: Host, pid: int) -> None:
    """In the supervising process (``--workers`` above 1): worker ``pid`` has exited.

    Runs before its replacement starts (say, to drop the dead worker's live gauges).
    """


@hookspec
def health(host: Host) -> str | None:
    """Why this process should get no new clients (say, its broker subscription is dead).

    ``None`` when healthy. ``/-/health`` answers 503 with every reason given, so a load
    balancer stops sending clients to a process that cannot serve them.
    """


@hookspec
def startup(host: Host) -> Awaitable[None] | None:
    """Provision: runs on the serving loop before the first request.

    In requirement order: a plugin starts after every plugin in its ``REQUIRES``.
    """


@hookspec
def connect(host: Host) -> Awaitable[None] | None:
    """Reach outside services, once every plugin has started (Caddy's Start after Provision).

    The broker connects here, after the plugins that use it have subscribed in their
    ``startup``: its first subscription carries all of their channels.
    """


@hookspec
def disconnect(host: Host) -> Awaitable[None] | None:
    """Let go of outside services, in reverse order, before any plugin's ``shutdown``."""


@hookspec
def drain(host: Host, grace: float) -> Awaitable[None] | None:
    """The server is stopping: flush and close long-lived connections within ``grace`` s."""


@hookspec
def shutdown(host: Host) -> Awaitable[None] | None:
    """Clean up: runs for every started plugin, even when another one fails.

    In reverse requirement order: a plugin is cleaned up before those it requires.
    """
