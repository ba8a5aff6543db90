"""Which web pages may open a WebSocket here: the ``Origin`` check, before the upgrade.

Browsers send cookies with a cross-site WebSocket handshake and do not apply the
same-origin policy to it, so without this check any page a user visits could open
a connection in the user's name (cross-site WebSocket hijacking). A handshake with
no ``Origin`` (a server-side client) passes; so does one from the page's own host,
and one whose origin matches a glob of ``--allowed-origins``. Any other gets 403.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

from .limits import LogThrottle
from .routes import ASGIApp, deny_websocket

log = logging.getLogger("realtime")

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _netloc(scheme: str, host: str) -> str:
    """``host[:port]`` lower-cased, without the scheme's default port."""
    host = host.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(f":{default}")]
    return host


class OriginCheck:
    """Refuses WebSocket handshakes from origins that are neither this host nor allowed."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = [glob.strip().lower().rstrip("/") for glob in allowed if glob.strip()]
        self.refused = 0
        self._throttle = LogThrottle()

    def permits(self, origin: str, host: str, scheme: str) -> bool:
        origin = origin.strip().lower()
        if any(fnmatch.fnmatchcase(origin, glob) for glob in self.allowed):
            return True
        try:
            parts = urlsplit(origin)
        except ValueError:
            return False
        if not parts.scheme or not parts.netloc:
            return False  # "null" (sandboxed frames, file: pages) or garbage
        return _netloc(parts.scheme, parts.netloc) == _netloc(scheme, host)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Coroutine[Any, Any, None]:
        # Hands over the inner coroutine (see ForwardedHeadersMiddleware.__call__);
        # installed as Quart's asgi_app only, never served alone.
        if scope["type"] != "websocket":
            return self.app(scope, receive, send)
        origin = host = None
        for name, value in scope["headers"]:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        if origin is None or self.permits(origin, host or "", scope.get("scheme", "ws")):
            return self.app(scope, receive, send)
        self.refused += 1
        self._throttle.warn(
            log,
            "origin",
            "refused a WebSocket from origin %r (not %s and not in --allowed-origins)",
            origin[:200],
            host,
        )
        body = "this origin may not open a WebSocket here (see --allowed-origins)"
        return deny_websocket(scope, send, 403, body, close_code=1008)
