"""Which web pages may open a WebSocket here: the ``Origin`` check, before the upgrade.

Browsers send cookies with a cross-site WebSocket handshake and do not apply the
same-origin policy to it, so without this check any page a user visits could open
a connection in the user's name (cross-site WebSocket hijacking). A handshake with
no ``Origin`` (a server-side client) passes; so does one from the page's own host,
and one whose origin matches a glob of ``--allowed-origins``. Any other gets 403.

"The page's own host" is what the request's ``Host`` says, and a DNS-rebinding page
controls that: evil.test made to resolve to this server sends ``Host: evil.test`` and
``Origin: http://evil.test``, which match. ``--allowed-hosts`` closes that door, as
Django's ``ALLOWED_HOSTS`` does: every request and handshake whose ``Host`` matches
none of its globs gets 400, before any route or origin check sees it.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Coroutine, Iterable
from typing import Any
from urllib.parse import urlsplit

from .limits import LogThrottle
from .routes import ASGIApp, deny_websocket
from .telemetry import NOOP, Instrument

log = logging.getLogger("realtime")

DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _netloc(scheme: str, host: str) -> str:
    """``host[:port]`` lower-cased, without the scheme's default port."""
    host = host.strip().lower()
    default = DEFAULT_PORTS.get(scheme)
    if default is not None and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(f":{default}")]
    return host


def _hostname(host: str) -> str:
    """The name of a ``Host`` header, lower-cased, without its port (``[::1]`` kept)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _origin_and_host(headers: Iterable[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The ``Origin`` and ``Host`` headers (the last of each), if sent."""
    origin = host = None
    for name, value in headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    return origin, host


class OriginCheck:
    """Refuses requests for hosts not allowed, and WebSocket handshakes from origins
    that are neither this host nor allowed."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str], hosts: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = [glob.strip().lower().rstrip("/") for glob in allowed if glob.strip()]
        #: ``Host`` name globs (no port); empty: any host.
        self.hosts = [glob.strip().lower() for glob in hosts if glob.strip()]
        self.refused = 0
        self.refused_hosts = 0
        self._throttle = LogThrottle()
        #: ``realtime_handshakes_total{result}`` (``origin``, ``host``): set at start-up.
        self.handshakes: Instrument = NOOP

    def host_allowed(self, host: str) -> bool:
        if not self.hosts:
            return True
        name = _hostname(host)
        return bool(name) and any(fnmatch.fnmatchcase(name, glob) for glob in self.hosts)

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
        websocket = scope["type"] == "websocket"
        if not websocket and not (self.hosts and scope["type"] == "http"):
            return self.app(scope, receive, send)  # lifespan, or HTTP with any host served
        origin, host = _origin_and_host(scope["headers"])
        if not self.host_allowed(host or ""):
            return self._refuse_host(scope, send, host or "")
        if (
            websocket
            and origin is not None
            and not self.permits(origin, host or "", scope.get("scheme", "ws"))
        ):
            return self._refuse_origin(scope, send, origin, host)
        return self.app(scope, receive, send)

    def _refuse_origin(
        self, scope: Any, send: Any, origin: str, host: str | None
    ) -> Coroutine[Any, Any, None]:
        self.refused += 1
        self.handshakes.labels("origin").inc()
        self._throttle.warn(
            log,
            "origin",
            "refused a WebSocket from origin %r (not %s and not in --allowed-origins)",
            origin[:200],
            host,
        )
        body = "this origin may not open a WebSocket here (see --allowed-origins)"
        return deny_websocket(scope, send, 403, body, close_code=1008)

    def _refuse_host(self, scope: Any, send: Any, host: str) -> Coroutine[Any, Any, None]:
        self.refused_hosts += 1
        self._throttle.warn(
            log, "host", "refused a request for host %r (not in --allowed-hosts)", host[:200]
        )
        body = "this host name is not served here (see --allowed-hosts)"
        if scope["type"] == "websocket":
            self.handshakes.labels("host").inc()
            return deny_websocket(scope, send, 400, body, close_code=1008)
        return _bad_request(send, body)


async def _bad_request(send: Any, body: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [(b"content-type", b"text/plain; charset=utf-8")],
        }
    )
    await send({"type": "http.response.body", "body": f"{body}\n".encode()})
