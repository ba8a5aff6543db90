"""Pusher's HTTP API under ``/apps/{id}``, so Pusher's server SDKs publish unchanged.

``POST /apps/{id}/events`` and ``/batch_events``, ``GET /apps/{id}/channels``,
``/channels/{name}`` and ``/channels/{name}/users``, ``POST
/apps/{id}/users/{user_id}/terminate_connections`` (and the same without the
``/apps/{id}`` in front, the path pusher-http-python 3.3 signs and sends; the app is
then the one ``auth_key`` names). Every request is signed as Pusher defines it
(:mod:`.api_auth`), the timestamp within ``pusher_timestamp_window``.

An event is one publication on the app's bus channel (:meth:`.node.PusherNode.bus_channel`),
its name in ``Publication.event`` and the excluded ``socket_id`` in
``Publication.skip``, so every protocol's subscribers of that channel get it, on every
host. Data that is JSON text is published as JSON (a Centrifuge client gets the value;
a Pusher client gets the text as always). Counts are the broker's cluster view, users
its presence store.

Answers are JSON with 200; refusals are text, with Pusher's statuses: 400 for a
malformed request, 401 for a bad signature, key or timestamp, 404 for no such path,
405 for the wrong method, 413 for an event or body over its limit, 503 when the
broker cannot be reached.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from realtime import Host, log_access
from realtime.routes import TEXT, AnyRoute, ASGIRoute
from realtime_broker import (
    BrokerUnavailable,
    PresenceUnavailable,
    Publication,
    get_broker,
)

from . import api_fields as fields
from .api_auth import APIError, authenticate, parse_query
from .apps import Apps, PusherApp

log = logging.getLogger(__name__)

#: Most channels one event goes to, and most events in one batch (Pusher's limits).
MAX_CHANNELS = 100
MAX_BATCH = 10
#: Presence reads of one ``GET /channels`` under way at once.
READ_CONCURRENCY = 32
#: Attributes ``info`` may ask for.
INFO_ATTRIBUTES = ("subscription_count", "user_count")
#: The status logged for a request whose client left before it was answered.
CLIENT_GONE = 499
_JSON = b"application/json"


def max_body(app: PusherApp) -> int:
    """The largest request body for ``app``: a full batch of its largest events, with
    room for JSON escaping and the channel names."""
    return MAX_BATCH * 2 * app.max_event_size + 64 * 1024


class PusherAPI:
    """The ASGI app behind every API path of every app of one host."""

    def __init__(self, host: Host, apps: Apps, window: float) -> None:
        self.host = host
        self.apps = apps
        self.window = window
        #: (prefix, app), longest prefix first: which app a bus channel is of.
        self._prefixes = sorted(
            ((apps.prefix(app), app) for app in apps), key=lambda entry: -len(entry[0])
        )

    def routes(self) -> list[AnyRoute]:
        found: list[AnyRoute] = []
        for app in self.apps:
            base = f"/apps/{app.id}"
            found += [
                ASGIRoute(f"{base}/events", self, ("http",)),
                ASGIRoute(f"{base}/batch_events", self, ("http",)),
                ASGIRoute(f"{base}/channels", self, ("http",)),
                ASGIRoute(f"{base}/channels/", self, ("http",), prefix=True),
                ASGIRoute(f"{base}/users/", self, ("http",), prefix=True),
            ]
        found.append(ASGIRoute("/users/", self, ("http",), prefix=True))
        return found

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        status = CLIENT_GONE
        try:
            status = await self._serve(scope, receive, send)
        finally:
            path = str(scope.get("path", ""))[:256]
            log_access(
                "api",
                str(scope.get("method", ""))[:16],
                path,
                status,
                time.perf_counter() - started,
            )

    async def _serve(self, scope: Any, receive: Any, send: Any) -> int:
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            app, action, args, allowed = self._resolve(path)
            if method != allowed:
                allow = [(b"allow", allowed.encode())]
                await _send(send, 405, f"use {allowed}\n".encode(), TEXT.encode(), allow)
                return 405
            limit = max_body(app) if app else max(max_body(one) for one in self.apps)
            body = await _read_body(scope, receive, limit)
            if body is None:
                return CLIENT_GONE
            params = parse_query(scope.get("query_string", b""))
            raw = scope.get("raw_path")
            app = authenticate(
                self.apps,
                app,
                method,
                path,
                params,
                body,
                now=time.time(),
                window=self.window,
                raw_path=raw.decode("latin-1") if isinstance(raw, bytes) else None,
            )
            result = await self._run(app, action, args, params, body)
        except APIError as error:
            await _send(send, error.status, f"{error.message}\n".encode(), TEXT.encode())
            return error.status
        except Exception:
            log.exception("the Pusher HTTP API failed on %s %s", method[:16], path[:256])
            await _send(send, 500, b"internal error\n", TEXT.encode())
            return 500
        await _send(send, 200, _dumps(result), _JSON)
        return 200

    def _resolve(self, path: str) -> tuple[PusherApp | None, str, tuple[str, ...], str]:
        """(app or None, action, path arguments, the method it takes); 404 otherwise."""
        parts = path.split("/")
        app: PusherApp | None = None
        if len(parts) >= 3 and parts[1] == "apps":
            app = self.apps.by_id.get(parts[2])
            rest = parts[3:]
            if app is None:
                raise APIError(404, "no such app")
        elif len(parts) >= 2 and parts[1] == "users":
            rest = parts[1:]
        else:
            raise APIError(404, "not found")
        if app is not None:
            if rest == ["events"]:
                return app, "events", (), "POST"
            if rest == ["batch_events"]:
                return app, "batch_events", (), "POST"
            if rest == ["channels"]:
                return app, "channels", (), "GET"
            if len(rest) == 2 and rest[0] == "channels" and rest[1]:
                return app, "channel", (rest[1],), "GET"
            if len(rest) == 3 and rest[0] == "channels" and rest[1] and rest[2] == "users":
                return app, "users", (rest[1],), "GET"
        if len(rest) == 3 and rest[0] == "users" and rest[1] and rest[2] == "terminate_connections":
            return app, "terminate", (rest[1],), "POST"
        raise APIError(404, "not found")

    # -- methods ---------------------------------------------------------------------

    async def _run(
        self,
        app: PusherApp,
        action: str,
        args: tuple[str, ...],
        params: Mapping[str, str],
        body: bytes,
    ) -> Any:
        try:
            if action == "events":
                return await self._events(app, _object(body))
            if action == "batch_events":
                return await self._batch(app, _object(body))
            if action == "channels":
                return await self._channels(app, params)
            if action == "channel":
                return await self._channel(app, args[0], params)
            if action == "users":
                return await self._users(app, args[0])
            return await self._terminate(app, args[0])
        except BrokerUnavailable:
            raise APIError(503, "the broker cannot be reached: try again") from None
        except ValueError as exc:  # a publication the broker cannot carry
            raise APIError(400, str(exc)[:512]) from None

    def _bus(self, app: PusherApp, channel: str) -> str:
        """The bus channel of ``app``'s ``channel`` (what the node's bus_channel says)."""
        return self.apps.prefix(app) + channel

    async def _events(self, app: PusherApp, body: Mapping[str, Any]) -> Any:
        channels = body.get("channels")
        if "channel" in body:
            if channels is not None:
                raise APIError(400, "give channel or channels, not both")
            channels = [body["channel"]]
        if not isinstance(channels, list) or not channels:
            raise APIError(400, "channels is a list of 1 to 100 channel names")
        if len(channels) > MAX_CHANNELS:
            raise APIError(400, f"at most {MAX_CHANNELS} channels per event")
        event = self._event(app, body, channels)  # every name checked: all strings now
        if len(event) != len(channels):
            raise APIError(400, "a channel is named twice")
        info = _info(body.get("info"))
        await asyncio.gather(
            *(get_broker(self.host).publish_result(self._bus(app, c), event[c]) for c in channels)
        )
        if not info:
            return {}
        counts = await get_broker(self.host).cluster_channels()
        return {"channels": {c: await self._attributes(app, c, info, counts) for c in channels}}

    def _event(
        self, app: PusherApp, body: Mapping[str, Any], channels: Sequence[Any]
    ) -> dict[str, Publication]:
        """The publication of one event, per channel (they are one and the same)."""
        for channel in channels:
            problem = fields.channel_error(channel, user_channels=True)
            if problem:
                raise APIError(400, problem)
        if len(channels) > 1 and any(fields.is_encrypted(c) for c in channels):
            raise APIError(400, "an event to a private-encrypted- channel goes to that one only")
        name = body.get("name")
        problem = fields.event_name_error(name)
        if problem:
            raise APIError(400, problem)
        data = body.get("data")
        if not isinstance(data, str):
            raise APIError(400, "data is a string (JSON text, usually)")
        try:
            size = len(data.encode())
        except UnicodeEncodeError:
            raise APIError(400, "data is not valid text") from None
        if size > app.max_event_size:
            raise APIError(413, f"data is {size} bytes, over the {app.max_event_size}-byte limit")
        socket_id = body.get("socket_id")
        if socket_id is not None:
            problem = fields.socket_id_error(socket_id)
            if problem:
                raise APIError(400, problem)
        publication = Publication(data, json=_is_json(data), event=name, skip=socket_id)
        return dict.fromkeys(channels, publication)

    async def _batch(self, app: PusherApp, body: Mapping[str, Any]) -> Any:
        batch = body.get("batch")
        if not isinstance(batch, list) or not batch:
            raise APIError(400, "batch is a list of 1 to 10 events")
        if len(batch) > MAX_BATCH:
            raise APIError(400, f"at most {MAX_BATCH} events per batch")
        events: list[tuple[str, Publication, tuple[str, ...]]] = []
        for entry in batch:
            if not isinstance(entry, dict):
                raise APIError(400, "each batch event is an object")
            channel = entry.get("channel")
            if not isinstance(channel, str):
                raise APIError(400, "each batch event names one channel")
            publication = self._event(app, entry, [channel])[channel]
            events.append((channel, publication, _info(entry.get("info"))))
        broker = get_broker(self.host)
        # In order: a batch's events to one channel arrive as listed.
        for channel, publication, _ in events:
            await broker.publish_result(self._bus(app, channel), publication)
        if not any(info for _, _, info in events):
            return {}
        counts = await broker.cluster_channels()
        return {
            "batch": [
                await self._attributes(app, channel, info, counts) if info else {}
                for channel, _, info in events
            ]
        }

    async def _attributes(
        self, app: PusherApp, channel: str, info: Sequence[str], counts: Mapping[str, int]
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}
        bus = self._bus(app, channel)
        if "subscription_count" in info:
            found["subscription_count"] = counts.get(bus, 0)
        if "user_count" in info and fields.is_presence(channel):
            found["user_count"] = await self._user_count(bus)
        return found

    async def _user_count(self, bus: str) -> int:
        try:
            return (await get_broker(self.host).presence_stats(bus)).users
        except PresenceUnavailable:
            return 0

    def _app_channels(self, app: PusherApp, counts: Mapping[str, int]) -> dict[str, int]:
        """``app``'s occupied channels, by Pusher name (user channels are not listed)."""
        found: dict[str, int] = {}
        for bus, count in counts.items():
            if count <= 0:
                continue
            owner = next(((p, a) for p, a in self._prefixes if bus.startswith(p)), None)
            if owner is None or owner[1] is not app:
                continue
            name = bus[len(owner[0]) :]
            if fields.CHANNEL.fullmatch(name):
                found[name] = count
        return found

    async def _channels(self, app: PusherApp, params: Mapping[str, str]) -> Any:
        prefix = params.get("filter_by_prefix", "")
        info = _info(params.get("info"))
        if "user_count" in info and not fields.is_presence(prefix):
            raise APIError(400, "info=user_count needs filter_by_prefix=presence-")
        counts = await get_broker(self.host).cluster_channels()
        occupied = {
            name: count
            for name, count in sorted(self._app_channels(app, counts).items())
            if name.startswith(prefix)
        }
        names = list(occupied)
        found: list[dict[str, Any]] = []
        # user_count is a presence read per channel: a few at a time, not thousands.
        for start in range(0, len(names), READ_CONCURRENCY):
            found += await asyncio.gather(
                *(
                    self._attributes(app, name, info, counts)
                    for name in names[start : start + READ_CONCURRENCY]
                )
            )
        return {"channels": dict(zip(names, found, strict=True))}

    async def _channel(self, app: PusherApp, name: str, params: Mapping[str, str]) -> Any:
        problem = fields.channel_error(name)
        if problem:
            raise APIError(400, problem)
        info = _info(params.get("info"))
        if "user_count" in info and not fields.is_presence(name):
            raise APIError(400, "info=user_count is for presence channels only")
        counts = await get_broker(self.host).cluster_channels()
        count = counts.get(self._bus(app, name), 0)
        return {"occupied": count > 0, **await self._attributes(app, name, info, counts)}

    async def _users(self, app: PusherApp, name: str) -> Any:
        problem = fields.channel_error(name)
        if problem:
            raise APIError(400, problem)
        if not fields.is_presence(name):
            raise APIError(400, "users are listed for presence channels only")
        try:
            members = await get_broker(self.host).presence(self._bus(app, name))
        except PresenceUnavailable:
            members = {}
        users = dict.fromkeys(member.user for member in members.values())
        return {"users": [{"id": user} for user in users]}

    async def _terminate(self, app: PusherApp, user_id: str) -> Any:
        problem = fields.user_id_error(user_id)
        if problem:
            raise APIError(400, problem)
        from .node import get_node

        try:
            node = get_node(self.host)
        except LookupError:
            raise APIError(503, "the pusher plugin is not running") from None
        await node.terminate_user(app, user_id)
        return {}


def routes(host: Host, apps: Apps) -> list[AnyRoute]:
    """The HTTP API's paths for each app."""
    from .plugin import PUSHER_TIMESTAMP_WINDOW

    return PusherAPI(host, apps, host.setting(PUSHER_TIMESTAMP_WINDOW)).routes()


# -- helpers ---------------------------------------------------------------------------


def _info(raw: Any) -> tuple[str, ...]:
    """The attributes ``info`` asks for (a comma-separated string); 400 for others."""
    if raw is None or raw == "":
        return ()
    if not isinstance(raw, str):
        raise APIError(400, "info is a comma-separated string of attributes")
    asked = tuple(dict.fromkeys(part.strip() for part in raw.split(",")))
    unknown = [name for name in asked if name not in INFO_ATTRIBUTES]
    if unknown:
        raise APIError(
            400, f"unknown info attribute(s) {unknown[:4]}: known are {list(INFO_ATTRIBUTES)}"
        )
    return asked


def _object(body: bytes) -> Mapping[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        raise APIError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise APIError(400, "the body is a JSON object")
    return value


def _is_json(data: str) -> bool:
    """Whether ``data`` is JSON text (published as JSON, so JSON protocols embed it)."""
    try:
        json.loads(data)
    except (ValueError, RecursionError):
        return False
    return True


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


async def _read_body(scope: Any, receive: Any, limit: int) -> bytes | None:
    """The body, never buffering more than ``limit`` (413); None if the client left."""
    for header, value in scope.get("headers", ()):
        if header.lower() == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise APIError(400, "malformed content-length") from None
            if declared > limit:
                raise APIError(413, f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise APIError(413, f"request body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
