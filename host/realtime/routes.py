"""Routes as values, so the host can check them before anything is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import PluginError

if TYPE_CHECKING:
    from quart import Quart

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")


@dataclass(frozen=True)
class Route:
    """An HTTP route: ``endpoint`` is a Quart view function."""

    path: str
    endpoint: Callable[..., Awaitable[Any]]
    methods: tuple[str, ...] = ("GET",)

    def __post_init__(self) -> None:
        _check_path(self.path)


@dataclass(frozen=True)
class WebSocketRoute:
    """A WebSocket route: ``endpoint`` is a Quart websocket view function."""

    path: str
    endpoint: Callable[..., Awaitable[Any]]

    def __post_init__(self) -> None:
        _check_path(self.path)


ASGIApp = Callable[[Any, Any, Any], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class ASGIRoute:
    """A path served by a plain ASGI application, ahead of Quart.

    For endpoints that hold thousands of connections, where Quart's per-connection
    objects (a request wrapper, a queue, two tasks) cost more than they give.
    The path matches exactly; with ``prefix``, every path under it too (the path then
    ends in ``/``, and the longest matching prefix wins), for paths with a variable
    part such as ``/apps/1/channels/{name}``. An exact route comes before any prefix.
    """

    path: str
    app: ASGIApp
    scope_types: tuple[str, ...] = ("http", "websocket")
    prefix: bool = False

    def __post_init__(self) -> None:
        _check_path(self.path)
        if self.prefix and not self.path.endswith("/"):
            raise ValueError(f"a prefix route's path ends in '/': {self.path!r}")
        unknown = set(self.scope_types) - {"http", "websocket"}
        if unknown:
            raise ValueError(f"ASGIRoute scope types must be http or websocket, got {unknown}")

    @property
    def kinds(self) -> tuple[str, ...]:
        return self.scope_types


AnyRoute = Route | WebSocketRoute | ASGIRoute


def route_kinds(route: AnyRoute) -> tuple[str, ...]:
    """Which ASGI scope types a route answers, for conflict checks and listings."""
    if isinstance(route, ASGIRoute):
        return route.scope_types
    return ("websocket",) if isinstance(route, WebSocketRoute) else ("http",)


def check_routes(
    claims: Iterable[tuple[str, Iterable[AnyRoute]]],
    owners: dict[tuple[str, str], str] | None = None,
) -> list[tuple[str, AnyRoute]]:
    """``(plugin, route)`` for every route claimed, refusing a path claimed twice for one
    scope type and naming both claimants (``owners`` seeds claims already made)."""
    route_owner = {} if owners is None else owners
    collected: list[tuple[str, AnyRoute]] = []
    for plugin, routes in claims:
        for route in routes:
            for kind in route_kinds(route):
                # A prefix claims its subtree: "/a/" and the prefix "/a/" do not clash.
                path = f"{route.path}*" if getattr(route, "prefix", False) else route.path
                key = (kind, path)
                if key in route_owner:
                    raise PluginError(
                        f"{kind} route {route.path!r} is claimed by both plugin "
                        f"{route_owner[key]!r} and plugin {plugin!r}"
                    )
                route_owner[key] = plugin
            collected.append((plugin, route))
    return collected


def add_routes(app: Quart, routes: Iterable[tuple[str, AnyRoute]]) -> None:
    """Serve ``routes`` on ``app``: Quart views as its rules, ASGI routes ahead of Quart."""
    routes = list(routes)
    asgi_routes = [route for _, route in routes if isinstance(route, ASGIRoute)]
    if asgi_routes:
        app.asgi_app = ASGIDispatcher(app.asgi_app, asgi_routes)  # type: ignore[method-assign]
    for plugin, route in routes:
        endpoint_name = f"{plugin}:{route.path}"
        if isinstance(route, ASGIRoute):
            continue
        if isinstance(route, WebSocketRoute):
            app.add_websocket(route.path, endpoint_name, route.endpoint)
        else:
            app.add_url_rule(route.path, endpoint_name, route.endpoint, methods=list(route.methods))


class ASGIDispatcher:
    """Sends scopes whose type and exact path match an :class:`ASGIRoute` to its app."""

    def __init__(self, fallback: ASGIApp, routes: list[ASGIRoute]) -> None:
        self.fallback = fallback
        self.table = {
            (kind, route.path): route.app
            for route in routes
            if not route.prefix
            for kind in route.kinds
        }
        #: (kind, prefix, app), longest prefix first.
        self.prefixes = sorted(
            (
                (kind, route.path, route.app)
                for route in routes
                if route.prefix
                for kind in route.kinds
            ),
            key=lambda entry: -len(entry[1]),
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # A coroutine function, so servers that tell ASGI 3 from ASGI 2 by it serve
        # this alone too (the tests do).
        kind, path = scope["type"], scope.get("path")
        app = self.table.get((kind, path))
        if app is None and self.prefixes and isinstance(path, str):
            app = next(
                (
                    entry[2]
                    for entry in self.prefixes
                    if entry[0] == kind and path.startswith(entry[1])
                ),
                None,
            )
        await (app or self.fallback)(scope, receive, send)


#: The content type of every short answer the host writes itself.
TEXT = "text/plain; charset=utf-8"


async def deny_websocket(
    scope: Any,
    send: Any,
    status: int,
    body: str,
    *,
    close_code: int,
    headers: tuple[tuple[bytes, bytes], ...] = (),
) -> None:
    """Refuse a WebSocket handshake with an HTTP status, where the server can say one.

    Servers with ASGI's denial-response extension (Hypercorn) send ``status`` and
    ``body``; others get a close before accept, which they answer with 403.
    """
    if "websocket.http.response" in scope.get("extensions", {}):
        start_headers = [(b"content-type", TEXT.encode()), *headers]
        await send(
            {"type": "websocket.http.response.start", "status": status, "headers": start_headers}
        )
        await send({"type": "websocket.http.response.body", "body": f"{body}\n".encode()})
    else:
        await send({"type": "websocket.close", "code": close_code})


async def read_body(receive: Any, limit: int) -> bytes | None:
    """An ASGI request's body, for an :class:`ASGIRoute`; None once it passes ``limit``
    bytes, or when the client left first (nothing past the limit is kept)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)
