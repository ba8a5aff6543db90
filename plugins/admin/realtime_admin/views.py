"""The admin page's routes, all under ``/admin`` on the internal listener.

Every route but the login form, its stylesheet and the login itself needs the
session cookie; every action is a POST with a JSON body and the page's
``X-Admin-Token`` (another site's form can send neither), from no other origin.
"""

from __future__ import annotations

import json
import logging
import time
import weakref
from importlib import resources
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from quart import Response, request

from realtime import Host, Route, log_access

from .session import COOKIE, SESSION_SECONDS

if TYPE_CHECKING:
    from .plugin import Admin

log = logging.getLogger("realtime.admin")

PREFIX = "/admin"
#: Server API methods the page may run.
ACTIONS = frozenset({"publish", "presence", "history", "disconnect", "info", "channels"})
#: Largest action body accepted.
MAX_ACTION_BODY = 64 * 1024
#: Largest login form accepted.
MAX_LOGIN_BODY = 4096
#: Event streams open at once, per process.
MAX_STREAMS = 20
#: A stream says something at least this often, so a gone client is noticed.
STREAM_TIMEOUT = 5.0

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make Origin "null"
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
}
TEXT = "text/plain; charset=utf-8"
JSON = "application/json"


def static(name: str) -> bytes:
    """A file of the page, shipped as package data."""
    return resources.files("realtime_admin").joinpath("static", name).read_bytes()


def _secure(response: Response) -> Response:
    response.headers.update(SECURITY_HEADERS)
    return response


def text(body: str, status: int) -> Response:
    return _secure(Response(body + "\n", status, content_type=TEXT))


def as_json(data: Any, status: int = 200) -> Response:
    return _secure(Response(json.dumps(data, separators=(",", ":")), status, content_type=JSON))


async def read_body(limit: int) -> bytes | None:
    """The request body, never buffering more than ``limit``; None when it is bigger."""
    declared = request.content_length
    if declared is not None and declared > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.body:
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


class EventStream:
    """``text/event-stream`` of one snapshot a second until the client goes, the session
    expires or the server drains. Counted in a weak set, so a stream dropped before
    its first byte is not counted for ever."""

    def __init__(self, admin: Admin, cookie: str, streams: weakref.WeakSet[EventStream]) -> None:
        self.admin = admin
        self.cookie = cookie
        self.streams = streams
        self.first = True
        streams.add(self)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> bytes:
        admin = self.admin
        monitor = admin.monitor
        if not self.first and not await monitor.next_tick(STREAM_TIMEOUT):
            if monitor.stopping.is_set():
                await self.aclose()
                raise StopAsyncIteration
            return b": idle\n\n"
        if admin.sessions.verify(self.cookie) is None:
            await self.aclose()
            raise StopAsyncIteration
        data = monitor.snapshot(history=self.first)
        prefix = b"retry: 3000\n" if self.first else b""
        self.first = False
        return prefix + b"data: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    async def aclose(self) -> None:
        self.streams.discard(self)
        self.admin.monitor.watchers = len(self.streams)


def admin_routes(host: Host, admin: Admin) -> list[Route]:
    """The routes, closed over the host (the internal app is not the public one)."""
    sessions = admin.sessions
    streams: weakref.WeakSet[EventStream] = weakref.WeakSet()

    def session() -> str | None:
        """The session's nonce, or None: every guarded route asks first."""
        return sessions.verify(request.cookies.get(COOKIE))

    def unauthorized() -> Response:
        return text("unauthorized", 401)

    def same_origin() -> bool:
        origin = request.headers.get("Origin")
        return origin is None or origin == f"{request.scheme}://{request.host}"

    async def page() -> Response:
        nonce = session()
        if nonce is None:
            return _secure(Response(static("login.html"), 200, content_type="text/html"))
        html = static("index.html").replace(b"{{token}}", sessions.csrf_token(nonce).encode())
        return _secure(Response(html, 200, content_type="text/html; charset=utf-8"))

    async def login() -> Response:
        address = request.remote_addr or ""
        if not admin.limiter.allow(address):
            admin.throttle.warn(log, "limited", "admin: too many login tries from %s", address)
            return text("too many tries: wait a second", 429)
        if not same_origin():
            return text("forbidden: cross-origin", 403)
        body = await read_body(MAX_LOGIN_BODY)
        if body is None:
            return text("request body too large", 413)
        try:
            fields = parse_qs(body.decode(), max_num_fields=4, strict_parsing=False)
        except (UnicodeDecodeError, ValueError):
            fields = {}
        password = (fields.get("password") or [""])[0]
        if not sessions.check_password(password):
            admin.throttle.warn(log, "wrong", "admin: a wrong password from %s", address)
            return text("wrong password", 401)
        log.info("admin: signed in from %s", address)
        response = _secure(Response("", 303, headers={"Location": PREFIX}))
        response.set_cookie(
            COOKIE,
            sessions.issue(),
            max_age=SESSION_SECONDS,
            path=PREFIX,
            httponly=True,
            samesite="Strict",
        )
        return response

    def guarded_post() -> str | Response:
        """A POST's session nonce, or the refusal: no cookie, foreign origin, no token."""
        nonce = session()
        if nonce is None:
            return unauthorized()
        if not same_origin():
            return text("forbidden: cross-origin", 403)
        if not sessions.check_csrf(nonce, request.headers.get("X-Admin-Token")):
            return text("forbidden: the X-Admin-Token header is missing or wrong", 403)
        return nonce

    async def logout() -> Response:
        checked = guarded_post()
        if isinstance(checked, Response):
            return checked
        sessions.revoke(request.cookies.get(COOKIE))
        response = text("signed out", 200)
        response.delete_cookie(COOKIE, path=PREFIX, httponly=True, samesite="Strict")
        return response

    async def script() -> Response:
        if session() is None:
            return unauthorized()
        return _secure(Response(static("admin.js"), 200, content_type="text/javascript"))

    async def stylesheet() -> Response:
        return _secure(Response(static("admin.css"), 200, content_type="text/css"))

    async def state() -> Response:
        if session() is None:
            return unauthorized()
        return as_json(admin.monitor.snapshot(history=True))

    async def channels() -> Response:
        if session() is None:
            return unauthorized()
        query = request.args.get("q", "")
        if len(query) > admin.max_query:
            return text(f"the search is longer than {admin.max_query} characters", 400)
        return as_json(await admin.monitor.channels(query))

    async def events() -> Response:
        cookie = request.cookies.get(COOKIE)
        if sessions.verify(cookie) is None:
            return unauthorized()
        if admin.monitor.stopping.is_set():
            return text("the server is stopping", 503)
        if len(streams) >= MAX_STREAMS:
            return text(f"too many event streams open (at most {MAX_STREAMS})", 503)
        stream = EventStream(admin, cookie or "", streams)
        admin.monitor.watchers = len(streams)
        response = Response(stream, 200, content_type="text/event-stream")
        response.timeout = None  # it lasts as long as the page is open
        return _secure(response)

    async def action(method: str) -> Response:
        started = time.perf_counter()
        response = await _action(method)
        log_access("admin", "POST", f"{PREFIX}/api/{method}"[:200], response.status_code,
                   time.perf_counter() - started)  # fmt: skip
        return response

    async def _action(method: str) -> Response:
        checked = guarded_post()
        if isinstance(checked, Response):
            return checked
        if method not in ACTIONS:
            return text(f"not an admin action: use one of {', '.join(sorted(ACTIONS))}", 404)
        if request.mimetype != JSON:
            return text("the body must be JSON (Content-Type: application/json)", 415)
        body = await read_body(MAX_ACTION_BODY)
        if body is None:
            return text(f"request body over {MAX_ACTION_BODY} bytes", 413)
        api, reason = admin.server_api()
        if api is None:
            return text(reason, 503)
        status, payload = await api.call(method, body or b"{}")
        if status == 200:
            return _secure(Response(payload, 200, content_type=JSON))
        return text(payload.decode(errors="replace"), status)

    return [
        Route(PREFIX, page),
        Route(f"{PREFIX}/login", login, methods=("POST",)),
        Route(f"{PREFIX}/logout", logout, methods=("POST",)),
        Route(f"{PREFIX}/admin.js", script),
        Route(f"{PREFIX}/admin.css", stylesheet),
        Route(f"{PREFIX}/state", state),
        Route(f"{PREFIX}/channels", channels),
        Route(f"{PREFIX}/events", events),
        Route(f"{PREFIX}/api/<method>", action, methods=("POST",)),
    ]
