"""The internal listener (``--internal-bind``): a second app, for operators only.

Why a second app on its own socket rather than paths on the public one: what is for
operators (``/metrics``, the admin page) must not be reachable through the public
listener whatever a proxy in front forwards, and the public site must not be served
where Prometheus scrapes. The internal app serves the host's ``/-/health`` and the
routes plugins return from ``register_internal_routes``, nothing else (404); the
public app serves none of those routes. Both run in one event loop, in every worker.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from hypercorn.config import Config as ServerConfig
from quart import Quart

from .errors import HTTPError
from .limits import ConnectionLimits
from .origins import OriginCheck
from .routes import TEXT, add_routes
from .settings import (
    ALLOWED_HOSTS,
    ALLOWED_ORIGINS,
    BIND,
    INTERNAL_BIND,
    MAX_BODY_SIZE,
    MAX_CONNECTIONS_PER_IP,
)

if TYPE_CHECKING:
    from .host import Host

#: WebSockets the internal listener holds at once (admin pages, not clients).
MAX_INTERNAL_CONNECTIONS = 256

_ADDRESS = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}")


def check_bind(host: Host) -> None:
    """Refuse an ``--internal-bind`` Hypercorn would misread, or the public address.

    Hypercorn reads ``HOST`` without a port as port 8000; and with ``--workers`` both
    listeners set ``SO_REUSEPORT``, so the same address twice would make the kernel
    hand public clients to the internal app at random.
    """
    bind = host.setting(INTERNAL_BIND)
    if not bind:
        return
    if bind.startswith("fd://"):
        if not bind[5:].isdigit():
            raise ValueError(f"--internal-bind {bind!r}: fd://N takes a file descriptor number")
    elif bind.startswith("unix:"):
        if len(bind) == 5:
            raise ValueError("--internal-bind unix:PATH needs a path")
    elif not _ADDRESS.fullmatch(bind) or int(bind.rsplit(":", 1)[1]) > 65535:
        raise ValueError(f"--internal-bind {bind!r}: expected HOST:PORT, fd://N or unix:PATH")
    if bind == host.setting(BIND):
        raise ValueError(f"--internal-bind {bind!r} is the public --bind: give it its own address")


def build_internal_app(host: Host) -> Quart:
    """The internal Quart app: ``/-/health`` and the plugins' internal routes.

    Behind the same ``Origin`` and ``Host`` checks as the public app (an admin page's
    WebSocket is as open to cross-site hijacking; a DNS-rebinding page could read
    ``/metrics``), with a cap of its own on the WebSockets it holds. Its refusals are
    not counted as clients' handshakes.
    """
    app = Quart("realtime.internal", static_folder=None)
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = host.setting(MAX_BODY_SIZE)
    add_routes(app, host.internal_routes)
    app.add_url_rule("/-/health", "realtime:health", host.health)
    app.register_error_handler(404, _not_found)
    app.register_error_handler(405, _not_allowed)
    app.register_error_handler(HTTPError, host.http_error)
    app.asgi_app = ConnectionLimits(  # type: ignore[method-assign]
        app.asgi_app,
        total=MAX_INTERNAL_CONNECTIONS,
        per_address=host.setting(MAX_CONNECTIONS_PER_IP),
    )
    app.asgi_app = OriginCheck(  # type: ignore[method-assign]
        app.asgi_app,
        host.setting(ALLOWED_ORIGINS).split(","),
        host.setting(ALLOWED_HOSTS).split(","),
    )
    return app


async def _not_found(error: Exception) -> tuple[str, int, dict[str, str]]:
    return "Not Found\n", 404, {"Content-Type": TEXT}


async def _not_allowed(error: Exception) -> tuple[str, int, dict[str, str]]:
    return "Method Not Allowed\n", 405, {"Content-Type": TEXT}


def internal_server_config(public: ServerConfig, bind: str, grace: float) -> ServerConfig:
    """Hypercorn's config for the internal listener: its own bind, the public one's
    backlog, worker count (so ``SO_REUSEPORT`` is set alike with ``--workers N``) and
    logs. Its connections (a scrape, an admin page's stream) are not drained: they get
    ``grace`` seconds once the public listener has drained."""
    config = ServerConfig()
    config.bind = [bind]
    config.backlog = public.backlog
    config.workers = public.workers
    config.errorlog = public.errorlog
    config.accesslog = public.accesslog
    config.graceful_timeout = grace
    return config
