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
from realtime_broker import MAX_IDEMPOTENCY_KEY
from realtime_broker.plugin import MAX_MESSAGE_SIZE
from realtime_hub.channels import ChannelRules

from .api_fields import BadBody as BadBody  # re-exported: it was defined here
from .api_fields import Params
from .api_fields import decode as _decode
from .api_fields import get as _get
from .api_fields import position as _position
from .api_fields import refuse as _refuse
from .api_fields import str_list as _str_list
from .api_fields import str_map as _str_map
from .codec import RawJSON, encode_json
from .codes import Disconnect, Error

log = logging.getLogger(__name__)

#: Methods this server runs.
SUPPORTED = ("publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "refresh",
             "channels", "info", "history", "history_remove", "presence",
             "presence_stats", "batch")  # fmt: skip
#: Centrifugo's other open-source methods: answered with 104, so an SDK gets an API
#: error naming the method instead of a bare 404.
NOT_IMPLEMENTED = ("rpc",)
#: Broadcast publishes to this many channels at a time.
BROADCAST_CONCURRENCY = 64
#: Most commands in one ``batch`` (HTTP 400 past it): ``max_body_size`` bounds them
#: too, but a command can be as short as ``{"info":{}}``.
MAX_BATCH_COMMANDS = 1000
#: A ``parallel`` batch runs this many commands at a time (each broadcast among them
#: publishing to up to :data:`BROADCAST_CONCURRENCY` channels at a time).
BATCH_CONCURRENCY = 16
#: Centrifugo's order of a batch command's fields: the first present is run.
BATCH_ORDER = ("publish", "broadcast", "subscribe", "unsubscribe", "disconnect", "history",
               "history_remove", "presence", "presence_stats", "info", "rpc", "refresh",
               "channels")  # fmt: skip
#: What a request gets while no key is set.
API_OFF = "the server API is off: set api_key (REALTIME_API_KEY) to turn it on"

_JSON = b"application/json"
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
        self,
        channel: str,
        data: RawJSON,
        *,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str = "",
    ) -> Mapping[str, Any]:
        """Publish ``data``, once per ``idempotency_key`` within five minutes; the
        result body (``offset`` and ``epoch`` where the channel keeps history, else ``{}``)."""
        ...

    async def subscribe(
        self,
        user: str,
        channel: str,
        *,
        client: str = "",
        session: str = "",
        info: RawJSON | None = None,
        data: RawJSON | None = None,
        recover_since: tuple[int, str] | None = None,
    ) -> None:
        """Subscribe the connections of ``user`` (one of them if ``client`` or
        ``session``), recovering from ``recover_since`` (offset, epoch) if given."""
        ...

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        """Unsubscribe ``user``; ``channel == ""`` means every channel, as in Centrifugo."""
        ...

    async def disconnect(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        code: int = 3503,
        reason: str = "force disconnect",
        whitelist: Sequence[str] = (),
    ) -> None:
        """Close the connections of ``user`` but those in ``whitelist``."""
        ...

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
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
            "batch": self._batch,
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
            if name == "batch":  # Go's BatchResponse: its replies, no result around them
                return 200, _dumps(result)
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

    def _publication(self, params: Params) -> tuple[RawJSON | None, Mapping[str, str] | None, str]:
        """Data, tags and idempotency key of publish and broadcast, unsupported options
        refused."""
        _get(params, "skip_history", bool)  # checked per channel: _history_kept
        _get(params, "delta", bool)  # Clients get the full data, which is always correct.
        tags = _str_map(params, "tags")
        key: str = _get(params, "idempotency_key", str)
        if len(key.encode("utf-8", "surrogatepass")) > MAX_IDEMPOTENCY_KEY:
            raise Error(107, f"bad request: idempotency_key is over {MAX_IDEMPOTENCY_KEY} bytes")
        _refuse(params, "b64data", str, "binary data needs the Protobuf protocol: send data")
        _refuse(params, "version", int, "publications are not versioned")
        _refuse(params, "version_epoch", str, "publications are not versioned")
        return self._payload(params, "data"), tags or None, key

    async def _publish(self, params: Params) -> Mapping[str, Any]:
        channel = _get(params, "channel", str)
        data, tags, key = self._publication(params)
        if not channel:
            raise Error(107, "bad request: channel is required")
        if data is None:
            raise Error(107, "bad request: data is required")
        self._check_channel(channel)
        self._history_kept(params, channel)
        return dict(await self.backend.publish(channel, data, tags=tags, idempotency_key=key))

    def _history_kept(self, params: Params, channel: str) -> None:
        """107 for ``skip_history`` where the channel keeps history (it keeps all)."""
        if _get(params, "skip_history", bool) and self.rules.history_of(channel) is not None:
            raise Error(107, "bad request: skip_history is not supported: history keeps all")

    async def _broadcast(self, params: Params) -> Mapping[str, Any]:
        channels = _str_list(params, "channels")
        data, tags, key = self._publication(params)
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
                published = await self.backend.publish(
                    channel, data, tags=tags, idempotency_key=key
                )
                responses[index] = {"result": dict(published)}
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

    async def _batch(self, params: Params) -> Mapping[str, Any]:
        """Many commands in one request, in order (``parallel``: up to
        :data:`BATCH_CONCURRENCY` at a time): ``{"replies": [...]}``, each
        ``{"<method>": result}`` or ``{"error": ...}`` in the commands' order.

        Unlike Go, where a field of the wrong type in any command fails the whole
        body (400), that command alone gets 107: the others may have run already.
        """
        commands = params.get("commands")
        if commands is None:
            commands = []
        if not isinstance(commands, list):
            raise BadBody("commands must be an array of objects")
        if len(commands) > MAX_BATCH_COMMANDS:
            raise BadBody(f"over {MAX_BATCH_COMMANDS} commands in one batch")
        if not all(command is None or isinstance(command, dict) for command in commands):
            raise BadBody("commands must be an array of objects")
        replies: list[Mapping[str, Any]] = [{}] * len(commands)

        async def run(index: int, command: Mapping[str, Any] | None) -> None:
            replies[index] = await self._batch_command(command)

        if _get(params, "parallel", bool):
            pending = iter(enumerate(commands))

            async def worker() -> None:
                for index, command in pending:
                    await run(index, command)

            await asyncio.gather(*(worker() for _ in range(min(BATCH_CONCURRENCY, len(commands)))))
        else:
            for index, command in enumerate(commands):
                await run(index, command)
        return {"replies": replies}

    async def _batch_command(self, command: Mapping[str, Any] | None) -> Mapping[str, Any]:
        """One batch command's reply: its first method (Centrifugo's order) run."""
        if command is None:
            return {"error": _error_body(Error(107))}  # Go: a null command is bad
        name = next((key for key in BATCH_ORDER if command.get(key) is not None), None)
        if name is None or name in NOT_IMPLEMENTED:
            return {"error": _error_body(Error(104, "not found"))}
        params = command[name]
        try:
            if not isinstance(params, dict):
                raise BadBody(f"{name} must be an object")
            return {name: await self._handlers[name](params)}
        except BadBody as exc:
            return {"error": _error_body(Error(107, f"bad request: {exc}"))}
        except Error as error:
            return {"error": _error_body(error)}
        except Exception:
            log.exception("server API batch %s failed", name)
            return {"error": _error_body(Error(100))}

    async def _subscribe(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        channel = _get(params, "channel", str)
        client = _get(params, "client", str)
        session = _get(params, "session", str)
        info = self._payload(params, "info")
        data = self._payload(params, "data")
        since = _position(params, "recover_since", empty=True)  # {}: from the start
        _refuse(params, "b64info", str, "binary info needs the Protobuf protocol: send info")
        _refuse(params, "b64data", str, "binary data needs the Protobuf protocol: send data")
        _refuse(params, "override", dict, "channel options cannot be overridden per call")
        _refuse(params, "expire_at", int, "subscriptions do not expire")
        if not channel:
            raise Error(107, "bad request: channel is required")
        self._check_channel(channel)
        await self.backend.subscribe(
            user, channel, client=client, session=session, info=info, data=data,
            recover_since=since,
        )  # fmt: skip
        return {}

    async def _unsubscribe(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        channel = _get(params, "channel", str)
        client = _get(params, "client", str)
        session = _get(params, "session", str)
        if channel:  # An empty channel is every channel, as in Centrifugo.
            self._check_channel(channel)
        await self.backend.unsubscribe(user, channel, client=client, session=session)
        return {}

    async def _disconnect(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        client = _get(params, "client", str)
        whitelist = _str_list(params, "whitelist")
        session = _get(params, "session", str)
        custom = _get(params, "disconnect", dict) or {}
        code = _get(custom, "code", int)
        reason = _get(custom, "reason", str)
        if code:  # Code 0 is Go's zero value: the default disconnect.
            try:
                Disconnect(code, reason)
            except ValueError as exc:
                raise Error(107, f"bad request: disconnect: {exc}") from None
            await self.backend.disconnect(
                user, client=client, session=session, code=code, reason=reason,
                whitelist=whitelist,
            )  # fmt: skip
        else:
            await self.backend.disconnect(user, client=client, session=session, whitelist=whitelist)
        return {}

    async def _refresh(self, params: Params) -> Mapping[str, Any]:
        user = _get(params, "user", str)
        if not user:
            raise Error(107, "bad request: user is required")
        client = _get(params, "client", str)
        session = _get(params, "session", str)
        _refuse(params, "info", dict, "connection info is set by tokens here")
        expired = _get(params, "expired", bool)
        expire_at = _get(params, "expire_at", int)
        if expire_at < 0:
            raise Error(107, "bad request: expire_at must be a Unix time or 0")
        await self.backend.refresh(
            user, client=client, session=session, expired=expired, expire_at=expire_at
        )
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
        since = _position(params, "since")
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
    if status == 413:
        # The body was not read to its end: the connection cannot carry another
        # request, and a client that reused it would lose that one.
        headers = [*headers, (b"connection", b"close")]
    await _send(send, status, f"{text}\n".encode(), TEXT.encode(), headers)
