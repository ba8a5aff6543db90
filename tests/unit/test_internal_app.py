"""The internal app (``--internal-bind``): its routes only, never the public site's,
and the public app never serves them. Through Quart's test clients (no sockets);
tests/integration/test_internal.py serves both on real listeners."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from quart import Response

from realtime import (
    ASGIRoute,
    PluginError,
    Route,
    WebSocketRoute,
    create_app,
    current_host,
    get_host,
    hookimpl,
)


class Operator:
    """A plugin with one public route and internal ones of each kind."""

    def __init__(self) -> None:
        self.hosts: list[Any] = []

    @hookimpl
    def register_routes(self) -> list[Any]:
        async def public() -> str:
            return "public\n"

        return [Route("/public", public)]

    @hookimpl
    def register_internal_routes(self) -> list[Any]:
        async def stats() -> str:
            self.hosts.append(current_host())
            return "stats\n"

        async def stream() -> Response:
            async def events() -> AsyncIterator[bytes]:
                for n in range(3):
                    yield f"data: {n}\n\n".encode()

            return Response(events(), content_type="text/event-stream")

        async def raw(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"raw\n"})

        async def live() -> None:
            from quart import websocket

            await websocket.accept()
            await websocket.send("live")

        return [
            Route("/stats", stats),
            Route("/stream", stream),
            ASGIRoute("/raw", raw, scope_types=("http",)),
            WebSocketRoute("/live", live),
        ]


def _app(tmp_path: Path, *plugins: object, **settings: Any) -> Any:
    (tmp_path / "page.html").write_text("<p>public page</p>")
    (tmp_path / "run.py").write_text("print('ran')")
    return create_app(tmp_path, plugins=plugins, load_entrypoints=False, settings=settings)


async def test_off_by_default(tmp_path: Path) -> None:
    app = _app(tmp_path, Operator())
    assert get_host(app).internal_app is None


async def test_internal_routes_only_on_the_internal_app(tmp_path: Path) -> None:
    plugin = Operator()
    app = _app(tmp_path, plugin, internal_bind="127.0.0.1:9000")
    host = get_host(app)
    internal = host.internal_app
    assert internal is not None and get_host(internal) is host
    async with app.test_app() as public_app:
        public = public_app.test_client()
        inside = internal.test_client()
        for path in ("/stats", "/stream", "/raw"):
            assert (await public.get(path)).status_code == 404, path
        assert (await public.get("/public")).status_code == 200
        assert (await public.get("/-/health")).status_code == 200
        stats = await inside.get("/stats")
        assert (stats.status_code, await stats.get_data(as_text=True)) == (200, "stats\n")
        assert plugin.hosts == [host]  # current_host() inside an internal route
        stream = await inside.get("/stream")
        assert await stream.get_data(as_text=True) == "data: 0\n\ndata: 1\n\ndata: 2\n\n"
        assert (await (await inside.get("/raw")).get_data(as_text=True)) == "raw\n"
        health = await inside.get("/-/health")
        assert (health.status_code, await health.get_data(as_text=True)) == (200, "ok\n")
        async with inside.websocket("/live") as ws:
            assert await ws.receive() == "live"
        for path in ("/public", "/page.html", "/run.py", "/", "/nothing"):
            response = await inside.get(path)
            assert response.status_code == 404, path
            assert await response.get_data(as_text=True) == "Not Found\n"
        host.draining = True
        assert (await inside.get("/-/health")).status_code == 503  # the host's answer


class Twin:
    @hookimpl
    def register_internal_routes(self) -> list[Any]:
        async def stats() -> str:
            return "twin"

        return [Route("/stats", stats)]


class HealthThief:
    @hookimpl
    def register_internal_routes(self) -> list[Any]:
        async def mine() -> str:
            return "mine"

        return [Route("/-/health", mine)]


def test_an_internal_path_claimed_twice_names_both_plugins(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="'/stats' is claimed by both plugin 'Operator' and"):
        _app(tmp_path, Operator(), Twin())
    with pytest.raises(PluginError, match="'/-/health' is claimed by both plugin 'host'"):
        _app(tmp_path, HealthThief())


class PublicStats:
    @hookimpl
    def register_routes(self) -> list[Any]:
        async def stats() -> str:
            return "public stats"

        return [Route("/stats", stats)]


async def test_one_path_may_be_public_and_internal_with_separate_views(tmp_path: Path) -> None:
    app = _app(tmp_path, Operator(), PublicStats(), internal_bind="127.0.0.1:9000")
    internal = get_host(app).internal_app
    assert internal is not None
    async with app.test_app() as public_app:
        public = await public_app.test_client().get("/stats")
        assert await public.get_data(as_text=True) == "public stats"
        inside = await internal.test_client().get("/stats")
        assert await inside.get_data(as_text=True) == "stats\n"


@pytest.mark.parametrize(
    ("bind", "message"),
    [
        ("127.0.0.1", "expected HOST:PORT"),
        ("127.0.0.1:99999", "expected HOST:PORT"),
        ("127.0.0.1:9000 ", "expected HOST:PORT"),
        ("fd://x", "file descriptor"),
        ("unix:", "needs a path"),
        ("127.0.0.1:8000", "is the public --bind"),
    ],
)
def test_a_bad_internal_bind_is_refused(tmp_path: Path, bind: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        _app(tmp_path, internal_bind=bind)


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "[::1]:9000", "localhost:9000", "fd://3"])
def test_good_internal_binds(tmp_path: Path, bind: str) -> None:
    assert get_host(_app(tmp_path, internal_bind=bind)).internal_app is not None
