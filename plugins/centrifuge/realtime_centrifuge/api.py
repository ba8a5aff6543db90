"""The server HTTP API in Centrifugo's shape, so ``cent`` and other Centrifugo SDKs work.

One ``POST {api_path}/{method}`` per method, a JSON object in, ``{"result": ...}`` or
``{"error": {"code": N, "message": "..."}}`` out with HTTP 200, as Centrifugo v5/v6
answer (``internal/api``). What fails before a method runs is an HTTP status, as there:
401 for a missing or wrong key, 405 for a method other than POST, 400 for a body Go's
decoder would refuse (not JSON, not an object, a field of the wrong type), 413 for a
body over ``max_body_size``. Request fields we cannot honour are refused with 107 where
ignoring them would change what the call does, and ignored where it would not; the
list is in docs/server-api.md.

The key is never logged, and compared in constant time.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from realtime import log_access
from realtime.routes import TEXT
from realtime_broker.plugin import MAX_MESSAGE_SIZE
from realtime_hub.channels import ChannelRules

from .codec import RawJSON, encode_json
from .codes import Disconnect, Error

log = logging.getLogger(__name__)

#: Methods this server runs.
SUPPORTED = ("publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "refresh",
             "channels", "info", "history", "history_remove", "presence",
             "presence_stats")  # fmt: skip
#: Centrifugo's other open-source methods: answered with 104, so an SDK gets an API
#: error naming the method instead of a bare 404.
NOT_IMPLEMENTED = ("batch", "rpc")
#: Broadcast publishes to this many channels at a time.
BROADCAST_CONCURRENCY = 64
#: What a request gets while no key is set.
API_OFF = "the server API is off: set api_key (REALTIME_API_KEY) to turn it on"

_JSON = b"application/json"
Params = Mapping[str, Any]
#: Told how long each call took: (method, seconds); the method is one of
#: :attr:`ServerAPI.METHODS` or whatever else was asked (the observer bounds it).
Observer = Callable[[str, float], None]
#: The status logged for a request whose client left before it was answered.
CLIENT_GONE = 499


class APIBackend(Protocol):
    """What the API drives: the node, which reaches every connection of the cluster.

    Methods raise :class:`Error` to answer it (``Error(100)`` when the broker is down);
    any other exception is answered with 100 and logged.
    """

    async def publish(
        self, channel: str, data: RawJSON, *, tags: Mapping[str, str] | None = None
    ) -> Mapping[str, Any]:
        """Publish ``data``; the result body (``{}``, later ``offset`` and ``epoch``)."""
        ...

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        info: RawJSON | None = None,
        data: RawJSON | None = None,
    ) -> None:
        """Subscribe the connections of ``user`` (one of them if ``client``)."""
        ...

    async def unsubscribe(self, user: str, channel: str, *, client: str = "") -> None:
        """Unsubscribe ``user``; ``channel == ""`` means every channel, as in Centrifugo."""
        ...

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
        code: int = 3503,
        reason: str = "force disconnect",
        whitelist: Sequence[str] = (),
    ) -> None:
        """Close the connections of ``user`` but those in ``whitelist``."""
        ...

    async def refresh(
        self, user: str, *, client: str = "", expired: bool = False, expire_at: int = 0
    ) -> None:
        """Set when ``user``'s connections expire (``expire_at``, 0: never), or expire them now."""
        ...

    async def channels(self, pattern: str = "") -> Mapping[str, int]:
        """Active channels of the cluster -> number of subscribed connections."""
        ...

    async def info(self) -> Sequence[Mapping[str, Any]]:
        """One dict per node, with Centrifugo's ``NodeResult`` fields."""
        ...

    async def history(
        self, channel: str, *, limit: int, since: tuple[int, str] | None, reverse: bool
    ) -> Mapping[str, Any]:
        """``{"publications": [...], "epoch": ..., "offset": ...}``; 108 or 112 as errors."""
        ...

    async def history_remove(self, channel: str) -> None:
        """Drop the channel's publications (its position stays); 108 where none kept."""
        ...

    async def presence(self, channel: str) -> Mapping[str, Any]:
        """``{"presence": {client: ClientInfo}}``; 108 where the channel lists none."""
        ...

    async def presence_stats(self, channel: str) -> Mapping[str, Any]:
        """``{"num_clients": ..., "num_users": ...}``; 108 where none."""
        ...


class BadBody(Exception):
    """The body does not decode as the method's request: HTTP 400, as Go's decoder."""


class ServerAPI:
    """A plain ASGI app answering ``POST .../{method}``: mount it at each of :attr:`METHODS`.

    The method is the path's last segment, so one instance serves every path.
    """

    #: Path segments to mount, ``f"{api_path}/{name}"`` each.
    METHODS: ClassVar[tuple[str, ...]] = SUPPORTED + NOT_IMPLEMENTED

    def __init__(
        self,
        backend: APIBackend,
        rules: ChannelRules,
        key: str,
        *,
        max_body_size: int = 1024 * 1024,
        max_message_size: int = MAX_MESSAGE_SIZE.default,
        observe: Observer | None = None,
    ) -> None:
        self.backend = backend
        #: Each call's duration, for ``realtime_api_duration_seconds``.
        self._observe = observe
        self.rules = rules
        self._key = key.encode()
        self.max_body_size = max_body_size
        self.max_message_size = max_message_size
        self._warned_off = False
        self._handlers: Mapping[str, Callable[[Params], Awaitable[Mapping[str, Any]]]] = {
            "publish": self._publish,
            "broadcast": self._broadcast,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "disconnect": self._disconnect,
            "refresh": self._refresh,
            "channels": self._channels,
            "info": self._info,
            "history": self._history,
            "history_remove": self._history_remove,
            "presence": self._presence,
            "presence_stats": self._presence_stats,
        }

    def __repr__(self) -> str:
        # Never the key.
        return f"<ServerAPI {'on' if self.enabled else 'off'}>"

    @property
    def enabled(self) -> bool:
        """An empty key turns the API off rather than leaving it open."""
        return bool(self._key)

    # -- ASGI ------------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        started = time.perf_counter()
        name = scope["path"].rstrip("/").rsplit("/", 1)[-1]
        status = CLIENT_GONE
        try:
            status = await self._serve(name, scope, receive, send)
        finally:
            # One access line and one duration per request, refused ones included
            # (the path as routed: ASGI keeps the query string apart).
            elapsed = time.perf_counter() - started
            if self._observe is not None:
                self._observe(name, elapsed)
            path = str(scope["path"])[:256]  # a refused request's path is the client's
            log_access("api", str(scope["method"])[:16], path, status, elapsed)

    async def _serve(self, name: str, scope: Any, receive: Any, send: Any) -> int:
        """Answer one request; the HTTP status sent (:data:`CLIENT_GONE` if none)."""
        if name not in self.METHODS:
            await send_text(send, 404, "method not found")
            return 404
        if not self.enabled:
            if not self._warned_off:
                self._warned_off = True
                log.warning("a server API request was refused: %s", API_OFF)
            await send_text(send, 404, API_OFF)
            return 404
        if scope["method"] != "POST":
            await send_text(send, 405, "method not allowed: use POST", [(b"allow", b"POST")])
            return 405
        if not self._authorized(scope["headers"]):
            await send_text(send, 401, "unauthorized", [(b"www-authenticate", b"apikey")])
            return 401
        body, status = await self._read_body(scope, receive, send)
        if body is None:
            return status
        status, payload = await self._call(name, body)
        if status == 200:
            await _send(send, 200, payload, _JSON)
        else:
            await send_text(send, status, payload.decode())
        return status

    def _authorized(self, headers: Sequence[tuple[bytes, bytes]]) -> bool:
        """``X-API-Key: KEY`` or ``Authorization: apikey KEY``, as Centrifugo takes them."""
        ok = False
        for header, value in headers:
            header = header.lower()
            if header == b"x-api-key":
                candidate = value.strip()
            elif header == b"authorization":
                parts = value.split()
                if len(parts) != 2 or parts[0].lower() != b"apikey":
                    continue
                candidate = parts[1]
            else:
                continue
            # No early exit: every candidate is compared, in constant time each.
            ok = hmac.compare_digest(candidate, self._key) or ok
        return ok

    async def _read_body(self, scope: Any, receive: Any, send: Any) -> tuple[bytes | None, int]:
        """The body, never buffering more than ``max_body_size``; None once answered
        (413), or when the client left (:data:`CLIENT_GONE`): with the status."""
        limit = self.max_body_size
        for header, value in scope["headers"]:
            if header.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > limit:
                    await send_text(send, 413, f"request body over {limit} bytes")
                    return None, 413
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, CLIENT_GONE
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_text(send, 413, f"request body over {limit} bytes")
                return None, 413
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), 200

    # -- dispatch --------------------------------------------------------------------

    async def call(self, name: str, body: bytes) -> tuple[int, bytes]:
        """Run method ``name`` on a request body: (HTTP status, response body).

        In-process, for trusted callers (the admin page): no key is asked for, and it
        works while the HTTP API is off (no key set). 200 carries JSON (a result or an
        API error); other statuses carry text. Timed as an HTTP call is; not logged.
        """
        started = time.perf_counter()
        try:
            return await self._call(name, body)
        finally:
            if self._observe is not None:
                self._observe(name, time.perf_counter() - started)

    async def _call(self, name: str, body: bytes) -> tuple[int, bytes]:
        """:meth:`call`, untimed (the HTTP request around it is timed)."""
        if name in NOT_IMPLEMENTED:
            return 200, _error(Error(104, f"method not found: {name} is not implemented here"))
        handler = self._handlers.get(name)
        if handler is None:
            return 404, b"method not found"
        try:
            params = _decode(body)
            result = await handler(params)
            return 200, _dumps({"result": result})
        except BadBody as exc:
            return 400, f"bad request: {exc}".encode()
        except Error as error:
            return 200, _error(error)
        except Exception:
            log.exception("server API %s failed", name)
            return 200, _error(Error(100))

    def _check_channel(self, channel: str) -> None:
        if error := self.rules.check_channel(channel):
            # A fresh one: a shared constant must not carry this request's traceback.
            raise Error(error.code, error.message, error.temporary)

    def _payload(self, params: Params, name: str) -> RawJSON | None:
        """A JSON value field as RawJSON, None if absent; 106 if over the message size."""
        value = params.get(name)
        if value is None:
            return None
        try:
            raw = encode_json(value)
        except (ValueError, RecursionError):
            raise BadBody(f"{name} cannot be encoded back to JSON") from None
        size = len(raw.encode("utf-8", "surrogatepass"))
        if size > self.max_message_size:
            raise Error(
                106, f"limit exceeded: {name} is {size} bytes, over {self.max_message_size}"
            )
        return raw

    def _publication(self, params: Params) -> tuple[RawJSON | None, Mapping[str, str] | None]:
        """Data and tags of publish and broadcast, unsupported options refused."""
        _get(params, "skip_history", bool)  # checked per channel: _history_kept
        _get(params, "delta", bool)  # Clients get the full data, which is always correct.
        tags = _str_map(params, "tags")
        _refuse(params, "b64data", str, "binary data needs the Protobuf protocol: send data")
        _refuse(params, "idempotency_key", str, "publications are not deduplicated")
        _refuse(params, "version", int, "publications are not versioned")
        _refuse(params, "version_epoch", str, "publications are not versioned")
        return self._payload(params, "data"), tags or None

    async def _publish(self, params: Params) -> Mapping[str, Any]:
        channel = _get(params, "channel", str)
        data, tags = self._publication(params)
        if not channel:
            raise Error(107, "bad request: channel is required")
        if data is None:
            raise Error(107, "bad request: data is required")
        self._check_channel(channel)
        self._history_kept(params, channel)
        return dict(await self.backend.publish(channel, data, tags=tags))

    def _history_kept(self, params: Params, channel: str) -> None:
        """107 for ``skip_history`` where the channel keeps history (it keeps all)."""
        if _get(params, "skip_history", bool) and self.rules.history_of(channel) is not None:
            raise Error(107, "bad request: skip_history is not supported: history keeps all")

    async def _broadcast(self, params: Params) -> Mapping[str, Any]:
        channels = _str_list(params, "channels")
        data, tags = self._publication(params)
        if not channels:
            raise Error(107, "bad request: channels are required")
        if data is None:
            raise Error(107, "bad request: data is required")
        responses: list[Mapping[str, Any]] = [{}] * len(channels)
        failed: list[str] = []

        async def publish_one(index: int, channel: str) -> None:
            try:
                if not channel:
                    raise Error(107, "bad request: channel is required")
                self._check_channel(channel)
                self._history_kept(params, channel)
                result = dict(await self.backend.publish(channel, data, tags=tags))
                responses[index] = {"result": result}
            except Error as error:
                responses[index] = {"error": _error_body(error)}
            except Exception:
                if not failed:
                    log.exception("server API broadcast failed on %r", channel)
                failed.append(channel)
                responses[index] = {"error": _error_body(Error(100))}

        pending = iter(enumerate(channels))

        async def worker() -> None:
            for index, channel in pending:
                await publish_one(index, channel)

        await asyncio.gather(*(worker() for _ in range(min(BROADCAST_CONCURRENCY, len(channels)))))
        if len(failed) > 1:
            log.error("server API broadcast failed on %d channels in all", len(failed))
        return {"responses": responses}

    async def _subscribe(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        channel = _get(params, "channel", str)
        client = _get(params, "client", str)
        info = self._payload(params, "info")
        data = self._payload(params, "data")
        _refuse(params, "session", str, "connections have no session id: use client")
        _refuse(params, "b64info", str, "binary info needs the Protobuf protocol: send info")
        _refuse(params, "b64data", str, "binary data needs the Protobuf protocol: send data")
        _refuse(params, "recover_since", dict, "there is no history to recover from")
        _refuse(params, "override", dict, "channel options cannot be overridden per call")
        _refuse(params, "expire_at", int, "subscriptions do not expire")
        if not channel:
            raise Error(107, "bad request: channel is required")
        self._check_channel(channel)
        await self.backend.subscribe(user, channel, client=client, info=info, data=data)
        return {}

    async def _unsubscribe(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        channel = _get(params, "channel", str)
        client = _get(params, "client", str)
        _refuse(params, "session", str, "connections have no session id: use client")
        if channel:  # An empty channel is every channel, as in Centrifugo.
            self._check_channel(channel)
        await self.backend.unsubscribe(user, channel, client=client)
        return {}

    async def _disconnect(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        client = _get(params, "client", str)
        whitelist = _str_list(params, "whitelist")
        _refuse(params, "session", str, "connections have no session id: use client")
        custom = _get(params, "disconnect", dict) or {}
        code = _get(custom, "code", int)
        reason = _get(custom, "reason", str)
        if code:  # Code 0 is Go's zero value: the default disconnect.
            try:
                Disconnect(code, reason)
            except ValueError as exc:
                raise Error(107, f"bad request: disconnect: {exc}") from None
            await self.backend.disconnect(
                user, client=client, code=code, reason=reason, whitelist=whitelist
            )
        else:
            await self.backend.disconnect(user, client=client, whitelist=whitelist)
        return {}

    async def _refresh(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        if not user:
            raise Error(107, "bad request: user is required")
        client = _get(params, "client", str)
        _refuse(params, "session", str, "connections have no session id: use client")
        _refuse(params, "info", dict, "connection info is set by tokens here")
        expired = _get(params, "expired", bool)
        expire_at = _get(params, "expire_at", int)
        if expire_at < 0:
            raise Error(107, "bad request: expire_at must be a Unix time or 0")
        await self.backend.refresh(user, client=client, expired=expired, expire_at=expire_at)
        return {}

    async def _channels(self, params: Params) -> Mapping[str, Any]:
        pattern = _get(params, "pattern", str)
        counts = await self.backend.channels(pattern)
        return {"channels": {name: {"num_clients": int(n)} for name, n in counts.items()}}

    async def _info(self, params: Params) -> Mapping[str, Any]:
        return {"nodes": [dict(node) for node in await self.backend.info()]}

    async def _history(self, params: Params) -> Mapping[str, Any]:
        channel = self._channel_param(params)
        limit = _get(params, "limit", int)
        reverse = _get(params, "reverse", bool)
        raw_since = _get(params, "since", dict)
        since = None
        if raw_since:
            offset, epoch = raw_since.get("offset", 0), raw_since.get("epoch", "")
            if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
                raise BadBody("since.offset must be an integer >= 0")
            if not isinstance(epoch, str):
                raise BadBody("since.epoch must be a string")
            since = (offset, epoch)
        return await self.backend.history(channel, limit=limit, since=since, reverse=reverse)

    async def _history_remove(self, params: Params) -> Mapping[str, Any]:
        channel = self._channel_param(params)
        await self.backend.history_remove(channel)
        return {}

    def _channel_param(self, params: Params) -> str:
        channel: str = _get(params, "channel", str)
        if not channel:
            raise Error(107, "bad request: channel is required")
        self._check_channel(channel)
        return channel

    async def _presence(self, params: Params) -> Mapping[str, Any]:
        return await self.backend.presence(self._channel_param(params))

    async def _presence_stats(self, params: Params) -> Mapping[str, Any]:
        return await self.backend.presence_stats(self._channel_param(params))


# -- request fields ------------------------------------------------------------------


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _decode(body: bytes) -> Params:
    """The request object; an empty body is ``{}`` (``info`` needs nothing)."""
    if not body.strip():
        return {}
    try:
        params = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise BadBody("JSON nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included.
        raise BadBody("body is not JSON") from None
    if not isinstance(params, dict):
        raise BadBody("body is not a JSON object")
    return params


def _type_name(kind: type) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}
    return names.get(kind, kind.__name__)


def _get(params: Params, name: str, kind: type[Any]) -> Any:
    """A field of type ``kind``, Go's zero value if absent or null; BadBody otherwise."""
    value = params.get(name)
    if value is None:
        return kind()
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadBody(f"{name} must be {_type_name(kind)}")
    return value


def _refuse(params: Params, name: str, kind: type[Any], why: str) -> None:
    """107 for a field we cannot honour and whose silent loss would change the call."""
    if _get(params, name, kind):
        raise Error(107, f"bad request: {name} is not supported: {why}")


def _str_list(params: Params, name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadBody(f"{name} must be an array of strings")
    return value


def _str_map(params: Params, name: str) -> dict[str, str]:
    value = params.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadBody(f"{name} must be an object of strings")
    return value


# -- responses -----------------------------------------------------------------------

_dumps_text = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def _dumps(value: Any) -> bytes:
    return _dumps_text(value).encode()


def _error_body(error: Error) -> dict[str, Any]:
    return {"code": error.code, "message": error.message}


def _error(error: Error) -> bytes:
    return _dumps({"error": _error_body(error)})


async def _send(
    send: Any,
    status: int,
    body: bytes,
    content_type: bytes,
    headers: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    start_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": start_headers})
    await send({"type": "http.response.body", "body": body})


async def send_text(
    send: Any, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    await _send(send, status, f"{text}\n".encode(), TEXT.encode(), headers)
