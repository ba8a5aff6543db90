"""The server HTTP API in Centrifugo's shape: auth, each method, errors, and ``cent`` itself."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import cent
import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config

from realtime.routes import ASGIDispatcher, ASGIRoute
from realtime_centrifuge.api import API_OFF, NOT_IMPLEMENTED, SUPPORTED, ServerAPI
from realtime_centrifuge.codec import RawJSON
from realtime_centrifuge.codes import Error
from realtime_hub.channels import ChannelRules

from ..conftest import free_port

KEY = "s3cret-api-key"
RULES = ChannelRules.from_config({"namespaces": [{"name": "news"}]})


class Recorder:
    """A backend that records its calls and answers what the test sets."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.publish_result: Mapping[str, Any] = {}
        #: channel -> exception raised by publish.
        self.raise_on: dict[str, BaseException] = {}
        self.raise_always: BaseException | None = None
        self.counts: Mapping[str, int] = {"chat": 2, "news:1": 1}
        self.nodes: Sequence[Mapping[str, Any]] = [
            {"uid": "n1", "name": "host-1", "version": "0.1.0", "num_clients": 3, "uptime": 9}
        ]

    def _maybe_raise(self, channel: str = "") -> None:
        if self.raise_always is not None:
            raise self.raise_always
        if channel in self.raise_on:
            raise self.raise_on[channel]

    async def publish(
        self,
        channel: str,
        data: RawJSON,
        *,
        tags: Mapping[str, str] | None = None,
        idempotency_key: str = "",
    ) -> Mapping[str, Any]:
        self.calls.append(("publish", channel, data, tags))
        self._maybe_raise(channel)
        return self.publish_result

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
        self.calls.append(("subscribe", user, channel, client, info, data))
        self._maybe_raise()

    async def unsubscribe(
        self, user: str, channel: str, *, client: str = "", session: str = ""
    ) -> None:
        self.calls.append(("unsubscribe", user, channel, client))
        self._maybe_raise()

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
        self.calls.append(("disconnect", user, client, code, reason, list(whitelist)))
        self._maybe_raise()

    async def refresh(
        self,
        user: str,
        *,
        client: str = "",
        session: str = "",
        expired: bool = False,
        expire_at: int = 0,
    ) -> None:
        self.calls.append(("refresh", user, client, expired, expire_at))
        self._maybe_raise()

    async def channels(self, pattern: str = "") -> Mapping[str, int]:
        self.calls.append(("channels", pattern))
        self._maybe_raise()
        return self.counts

    async def info(self) -> Sequence[Mapping[str, Any]]:
        self.calls.append(("info",))
        self._maybe_raise()
        return self.nodes

    async def presence(self, channel: str) -> Mapping[str, Any]:
        self.calls.append(("presence", channel))
        self._maybe_raise(channel)
        return {"presence": {"c1": {"user": "42", "client": "c1", "conn_info": {"n": 1}}}}

    async def presence_stats(self, channel: str) -> Mapping[str, Any]:
        self.calls.append(("presence_stats", channel))
        self._maybe_raise(channel)
        return {"num_clients": 2, "num_users": 1}


@pytest.fixture
def backend() -> Recorder:
    return Recorder()


@pytest.fixture
def api(backend: Recorder) -> ServerAPI:
    return ServerAPI(backend, RULES, KEY, max_body_size=4096, max_message_size=256)


@asynccontextmanager
async def client_for(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", headers={"X-API-Key": KEY}
    ) as http:
        yield http


@pytest.fixture
async def http(api: ServerAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(api) as http:
        yield http


async def call(http: httpx.AsyncClient, method: str, body: Any) -> Any:
    response = await http.post(f"/api/{method}", json=body)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


# -- auth ----------------------------------------------------------------------------


async def test_x_api_key_and_authorization_apikey_are_accepted(api: ServerAPI) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://test"
    ) as http:
        for headers in (
            {"X-API-Key": KEY},
            {"Authorization": f"apikey {KEY}"},
            {"Authorization": f"ApiKey  {KEY}"},
        ):
            response = await http.post("/api/info", json={}, headers=headers)
            assert response.status_code == 200, headers
            assert response.json()["result"]["nodes"][0]["uid"] == "n1"


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "wrong"},
        {"X-API-Key": KEY[:-1]},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": f"apikey {KEY} extra"},
        {"Authorization": "apikey"},
    ],
)
async def test_missing_or_wrong_key_is_401(
    api: ServerAPI, backend: Recorder, headers: dict[str, str]
) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://test"
    ) as http:
        response = await http.post(
            "/api/publish", json={"channel": "a", "data": 1}, headers=headers
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "apikey"
    assert backend.calls == []


async def test_empty_key_turns_the_api_off(
    backend: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    api = ServerAPI(backend, RULES, "")
    assert not api.enabled
    async with client_for(api) as http:
        for _ in range(2):
            response = await http.post("/api/publish", json={"channel": "a", "data": 1})
            assert response.status_code == 404
            assert API_OFF in response.text
            assert "REALTIME_API_KEY" in response.text
        # Any header, even an empty key, is refused the same way.
        response = await http.post("/api/info", headers={"X-API-Key": ""})
        assert response.status_code == 404
    assert backend.calls == []
    assert sum(API_OFF in r.getMessage() for r in caplog.records) == 1


async def test_the_key_is_never_logged_or_shown(
    api: ServerAPI, backend: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    backend.raise_always = RuntimeError("boom")
    async with client_for(api) as http:
        await http.post("/api/publish", json={"channel": "a", "data": 1})
        await http.post("/api/publish", headers={"X-API-Key": "nope"})
    assert KEY not in caplog.text
    assert KEY not in repr(api)


# -- HTTP-level answers --------------------------------------------------------------


async def test_only_post(http: httpx.AsyncClient, backend: Recorder) -> None:
    for method in ("GET", "PUT", "DELETE"):
        response = await http.request(method, "/api/publish")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
    assert backend.calls == []


async def test_unknown_path_is_404_and_centrifugo_methods_we_lack_are_104(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/api/nope", json={})
    assert response.status_code == 404
    for name in NOT_IMPLEMENTED:
        body = await call(http, name, {"channel": "a"})
        assert body["error"]["code"] == 104
        assert name in body["error"]["message"]
    assert set(ServerAPI.METHODS) == set(SUPPORTED) | set(NOT_IMPLEMENTED)


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (b'{"channel": "a", "data": NaN}', "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"channel": 5, "data": 1}', "channel must be a string"),
        (b'{"channel": "a", "data": 1, "tags": {"k": 1}}', "tags must be an object of strings"),
        (b'{"channel": "a", "data": 1, "skip_history": "yes"}', "skip_history must be a boolean"),
        (b'{"channel": "a", "data": 1, "delta": 1}', "delta must be a boolean"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"data":' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    ],
)
async def test_undecodable_body_is_400(backend: Recorder, content: bytes, why: str) -> None:
    api = ServerAPI(backend, RULES, KEY, max_body_size=300_000)
    async with client_for(api) as http:
        response = await http.post("/api/publish", content=content)
    assert response.status_code == 400
    assert response.text.startswith("bad request: ")
    assert why in response.text
    assert "Traceback" not in response.text
    assert backend.calls == []


async def test_wrong_types_in_other_methods_are_400(http: httpx.AsyncClient) -> None:
    for method, body in [
        ("broadcast", {"channels": "a", "data": 1}),
        ("broadcast", {"channels": ["a", 1], "data": 1}),
        ("subscribe", {"user": 42, "channel": "a"}),
        ("unsubscribe", {"user": "u", "client": []}),
        ("disconnect", {"user": "u", "whitelist": "c1"}),
        ("disconnect", {"user": "u", "disconnect": {"code": "3000"}}),
        ("disconnect", {"user": "u", "disconnect": {"code": True}}),
        ("channels", {"pattern": 1}),
    ]:
        response = await http.post(f"/api/{method}", json=body)
        assert response.status_code == 400, (method, body)


async def test_a_stream_offset_past_uint64_is_400_before_the_backend(
    http: httpx.AsyncClient, backend: Recorder
) -> None:
    # Go's uint64 refuses it; here it reached the broker (Redis: "Invalid stream ID").
    for method, body in [
        ("history", {"channel": "chat", "since": {"offset": 2**64, "epoch": "e"}}),
        ("subscribe", {"user": "u", "channel": "chat", "recover_since": {"offset": 2**64}}),
    ]:
        response = await http.post(f"/api/{method}", json=body)
        assert response.status_code == 400, (method, body)
        assert b"offset" in response.content
    assert backend.calls == []
    since = {"offset": 2**64 - 1, "epoch": "e"}
    assert (await http.post("/api/history", json={"channel": "chat", "since": since})).is_success


async def test_body_over_max_body_size_is_413(api: ServerAPI, http: httpx.AsyncClient) -> None:
    big = {"channel": "a", "data": "x" * 5000}
    response = await http.post("/api/publish", json=big)
    assert response.status_code == 413


async def test_streamed_body_is_cut_at_max_body_size(api: ServerAPI, backend: Recorder) -> None:
    """No content-length: the app stops reading once past the limit."""
    chunk = b"x" * 1000
    received = 0

    async def receive() -> dict[str, Any]:
        nonlocal received
        received += 1
        return {"type": "http.request", "body": chunk, "more_body": received < 1000}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/publish",
        "headers": [(b"x-api-key", KEY.encode())],
    }
    await api(scope, receive, send)
    assert sent[0]["status"] == 413
    assert received == 5  # 4096-byte limit, 1000-byte chunks.
    assert backend.calls == []


async def test_client_going_away_mid_body_gets_nothing(api: ServerAPI) -> None:
    messages = iter([{"type": "http.request", "body": b"{", "more_body": True}])

    async def receive() -> dict[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/info", "headers": []}
    scope["headers"] = [(b"x-api-key", KEY.encode())]
    await api(scope, receive, send)
    assert sent == []


async def test_websocket_scope_is_closed(api: ServerAPI) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    await api({"type": "websocket", "path": "/api/publish", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]


# -- publish -------------------------------------------------------------------------


async def test_publish(http: httpx.AsyncClient, backend: Recorder) -> None:
    body = await call(
        http,
        "publish",
        {"channel": "news:1", "data": {"text": "héllo", "n": [1, 2.5, None]}, "tags": {"k": "v"}},
    )
    assert body == {"result": {}}
    (call_,) = backend.calls
    assert call_[:2] == ("publish", "news:1")
    assert isinstance(call_[2], RawJSON)
    assert json.loads(call_[2]) == {"text": "héllo", "n": [1, 2.5, None]}
    assert call_[2] == '{"text":"héllo","n":[1,2.5,null]}'
    assert call_[3] == {"k": "v"}


async def test_publish_result_and_falsy_data(http: httpx.AsyncClient, backend: Recorder) -> None:
    backend.publish_result = {"offset": 7, "epoch": "abc"}
    for data in (0, False, "", [], {}):
        body = await call(http, "publish", {"channel": "chat", "data": data})
        assert body == {"result": {"offset": 7, "epoch": "abc"}}
    assert [c[2] for c in backend.calls] == ["0", "false", '""', "[]", "{}"]
    assert all(c[3] is None for c in backend.calls)  # No tags: None, not {}.


async def test_publish_ignores_skip_history_delta_and_unknown_fields(
    http: httpx.AsyncClient, backend: Recorder
) -> None:
    body = await call(
        http,
        "publish",
        {"channel": "chat", "data": 1, "skip_history": True, "delta": True, "future": [1]},
    )
    assert body == {"result": {}}
    assert len(backend.calls) == 1


@pytest.mark.parametrize(
    ("request_body", "code", "part"),
    [
        ({"data": 1}, 107, "channel is required"),
        ({"channel": "", "data": 1}, 107, "channel is required"),
        ({"channel": "chat"}, 107, "data is required"),
        ({"channel": "chat", "data": None}, 107, "data is required"),
        ({"channel": "nope:1", "data": 1}, 102, "unknown channel"),
        ({"channel": "chät", "data": 1}, 107, "bad request"),
        ({"channel": "c" * 256, "data": 1}, 107, "bad request"),
        ({"channel": "chat", "b64data": "aGk="}, 107, "b64data is not supported"),
        ({"channel": "chat", "data": 1, "idempotency_key": "k" * 129}, 107, "idempotency_key"),
        ({"channel": "chat", "data": 1, "version": 3}, 107, "version is not supported"),
        ({"channel": "chat", "data": "x" * 300}, 106, "limit exceeded"),
    ],
)
async def test_publish_errors(
    http: httpx.AsyncClient,
    backend: Recorder,
    request_body: dict[str, Any],
    code: int,
    part: str,
) -> None:
    body = await call(http, "publish", request_body)
    assert body["error"]["code"] == code
    assert part in body["error"]["message"]
    assert "result" not in body
    assert backend.calls == []


async def test_empty_b64data_and_idempotency_key_are_absent(
    http: httpx.AsyncClient, backend: Recorder
) -> None:
    body = await call(
        http, "publish", {"channel": "chat", "data": 1, "b64data": "", "idempotency_key": ""}
    )
    assert body == {"result": {}}


async def test_backend_error_passes_through(http: httpx.AsyncClient, backend: Recorder) -> None:
    backend.raise_always = Error(100)
    body = await call(http, "publish", {"channel": "chat", "data": 1})
    assert body == {"error": {"code": 100, "message": "internal server error"}}
    backend.raise_always = Error(108)
    body = await call(http, "subscribe", {"user": "u", "channel": "chat"})
    assert body == {"error": {"code": 108, "message": "not available"}}


async def test_backend_crash_is_100_logged_once(
    http: httpx.AsyncClient, backend: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    backend.raise_always = ZeroDivisionError("secret detail")
    response = await http.post("/api/publish", json={"channel": "chat", "data": 1})
    assert response.status_code == 200
    assert response.json() == {"error": {"code": 100, "message": "internal server error"}}
    assert "secret detail" not in response.text and "Traceback" not in response.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


async def test_unencodable_backend_result_is_100(
    http: httpx.AsyncClient, backend: Recorder
) -> None:
    backend.publish_result = {"offset": object()}
    body = await call(http, "publish", {"channel": "chat", "data": 1})
    assert body["error"]["code"] == 100


# -- broadcast -----------------------------------------------------------------------


async def test_broadcast(
    http: httpx.AsyncClient, backend: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    backend.publish_result = {"offset": 1, "epoch": "e"}
    backend.raise_on = {"down": Error(100), "bug": RuntimeError("x"), "bug2": RuntimeError("y")}
    body = await call(
        http,
        "broadcast",
        {
            "channels": ["chat", "nope:x", "down", "", "news:2", "bug", "bug2"],
            "data": {"a": 1},
            "tags": {"t": "1"},
        },
    )
    assert body == {
        "result": {
            "responses": [
                {"result": {"offset": 1, "epoch": "e"}},
                {"error": {"code": 102, "message": "unknown channel"}},
                {"error": {"code": 100, "message": "internal server error"}},
                {"error": {"code": 107, "message": "bad request: channel is required"}},
                {"result": {"offset": 1, "epoch": "e"}},
                {"error": {"code": 100, "message": "internal server error"}},
                {"error": {"code": 100, "message": "internal server error"}},
            ]
        }
    }
    published = sorted(c[1] for c in backend.calls)
    assert published == ["bug", "bug2", "chat", "down", "news:2"]
    assert all(c[2] == '{"a":1}' and c[3] == {"t": "1"} for c in backend.calls)
    # One traceback, one summary line.
    assert sum(r.exc_info is not None for r in caplog.records) == 1


async def test_broadcast_many_channels_in_order(backend: Recorder, http: httpx.AsyncClient) -> None:
    api = ServerAPI(backend, RULES, KEY)
    channels = [f"c{i}" for i in range(500)]
    async with client_for(api) as http:
        body = await call(http, "broadcast", {"channels": channels, "data": 1})
    assert len(body["result"]["responses"]) == 500
    assert sorted(c[1] for c in backend.calls) == sorted(channels)


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"data": 1}, 107),
        ({"channels": [], "data": 1}, 107),
        ({"channels": ["a"]}, 107),
        ({"channels": ["a"], "data": "x" * 300}, 106),
        ({"channels": ["a"], "data": 1, "b64data": "aGk="}, 107),
    ],
)
async def test_broadcast_errors(
    http: httpx.AsyncClient, backend: Recorder, request_body: dict[str, Any], code: int
) -> None:
    body = await call(http, "broadcast", request_body)
    assert body["error"]["code"] == code
    assert backend.calls == []


# -- subscribe, unsubscribe, disconnect ----------------------------------------------


async def test_subscribe(http: httpx.AsyncClient, backend: Recorder) -> None:
    body = await call(
        http,
        "subscribe",
        {"user": "42", "channel": "news:1", "client": "c1", "info": {"r": 1}, "data": [1]},
    )
    assert body == {"result": {}}
    assert backend.calls == [("subscribe", "42", "news:1", "c1", '{"r":1}', "[1]")]
    backend.calls.clear()
    await call(http, "subscribe", {"user": "42", "channel": "chat"})
    assert backend.calls == [("subscribe", "42", "chat", "", None, None)]


@pytest.mark.parametrize(
    ("request_body", "code"),
    [
        ({"user": "u"}, 107),
        ({"user": "u", "channel": "nope:1"}, 102),
        ({"user": "u", "channel": "chat", "b64info": "aGk="}, 107),
        ({"user": "u", "channel": "chat", "b64data": "aGk="}, 107),
        ({"user": "u", "channel": "chat", "override": {"presence": {"value": True}}}, 107),
        ({"user": "u", "channel": "chat", "expire_at": 1}, 107),
        ({"user": "u", "channel": "chat", "info": "x" * 300}, 106),
    ],
)
async def test_subscribe_errors(
    http: httpx.AsyncClient, backend: Recorder, request_body: dict[str, Any], code: int
) -> None:
    body = await call(http, "subscribe", request_body)
    assert body["error"]["code"] == code
    assert backend.calls == []


async def test_unsubscribe(http: httpx.AsyncClient, backend: Recorder) -> None:
    assert await call(http, "unsubscribe", {"user": "u", "channel": "chat"}) == {"result": {}}
    await call(http, "unsubscribe", {"user": "u", "channel": "news:1", "client": "c"})
    await call(http, "unsubscribe", {"user": "u"})  # Every channel, as in Centrifugo.
    assert backend.calls == [
        ("unsubscribe", "u", "chat", ""),
        ("unsubscribe", "u", "news:1", "c"),
        ("unsubscribe", "u", "", ""),
    ]
    body = await call(http, "unsubscribe", {"user": "u", "channel": "nope:1"})
    assert body["error"]["code"] == 102
    assert len(backend.calls) == 3


async def test_disconnect(http: httpx.AsyncClient, backend: Recorder) -> None:
    assert await call(http, "disconnect", {"user": "u"}) == {"result": {}}
    await call(
        http,
        "disconnect",
        {
            "user": "u",
            "client": "c",
            "whitelist": ["c2"],
            "disconnect": {"code": 4000, "reason": "bye"},
        },
    )
    # cent's Disconnect() defaults: code 0 is Go's zero value, the default disconnect.
    await call(http, "disconnect", {"user": "u", "disconnect": {"code": 0, "reason": ""}})
    assert backend.calls == [
        ("disconnect", "u", "", 3503, "force disconnect", []),
        ("disconnect", "u", "c", 4000, "bye", ["c2"]),
        ("disconnect", "u", "", 3503, "force disconnect", []),
    ]


@pytest.mark.parametrize(
    "request_body",
    [
        {"user": "u", "disconnect": {"code": 1000, "reason": "x"}},
        {"user": "u", "disconnect": {"code": 5000, "reason": "x"}},
        {"user": "u", "disconnect": {"code": 4000, "reason": "x" * 124}},
    ],
)
async def test_disconnect_errors(
    http: httpx.AsyncClient, backend: Recorder, request_body: dict[str, Any]
) -> None:
    body = await call(http, "disconnect", request_body)
    assert body["error"]["code"] == 107
    assert backend.calls == []


async def test_refresh(http: httpx.AsyncClient, backend: Recorder) -> None:
    assert await call(http, "refresh", {"user": "u", "expire_at": 1900000000}) == {"result": {}}
    await call(http, "refresh", {"user": "u", "client": "c", "expired": True})
    assert backend.calls == [
        ("refresh", "u", "", False, 1900000000),
        ("refresh", "u", "c", True, 0),
    ]
    for bad in ({}, {"user": "u", "expire_at": -1}, {"user": "u", "info": {"a": 1}}):
        assert (await call(http, "refresh", bad))["error"]["code"] == 107
    assert len(backend.calls) == 2


# -- channels, info ------------------------------------------------------------------


async def test_channels(http: httpx.AsyncClient, backend: Recorder) -> None:
    body = await call(http, "channels", {})
    assert body == {
        "result": {"channels": {"chat": {"num_clients": 2}, "news:1": {"num_clients": 1}}}
    }
    await call(http, "channels", {"pattern": "news:*"})
    assert backend.calls == [("channels", ""), ("channels", "news:*")]
    backend.counts = {}
    assert await call(http, "channels", {}) == {"result": {"channels": {}}}


async def test_info(http: httpx.AsyncClient, backend: Recorder) -> None:
    body = await call(http, "info", {})
    assert body == {"result": {"nodes": [dict(backend.nodes[0])]}}
    # curl -X POST with no body at all.
    response = await http.post("/api/info")
    assert response.json() == body


# -- cent, unchanged, over real HTTP -------------------------------------------------


async def _not_found(scope: Any, receive: Any, send: Any) -> None:
    """The fallback app: lifespan for Hypercorn, 404 for any other path."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"lifespan.{kind}.complete"})
            if kind == "shutdown":
                return
    await send({"type": "http.response.start", "status": 404, "headers": []})
    await send({"type": "http.response.body", "body": b""})


@asynccontextmanager
async def hypercorn(api: ServerAPI) -> AsyncIterator[str]:
    """The API mounted as the plugin mounts it, under Hypercorn in this loop."""
    routes = [ASGIRoute(f"/api/{name}", api, ("http",)) for name in ServerAPI.METHODS]
    app = ASGIDispatcher(_not_found, routes)
    port = free_port()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    url = f"http://127.0.0.1:{port}/api"
    async with httpx.AsyncClient() as http:
        for _ in range(200):
            try:
                await http.get(url)
                break
            except httpx.HTTPError:
                await asyncio.sleep(0.02)
    try:
        yield url
    finally:
        stop.set()
        await task


async def test_cent_sync_client(api: ServerAPI, backend: Recorder) -> None:
    backend.publish_result = {"offset": 5, "epoch": "xyz"}
    backend.raise_on = {"down": Error(100)}
    async with hypercorn(api) as url:
        client = cent.Client(url, KEY)

        def run() -> None:
            result = client.publish(
                cent.PublishRequest(channel="chat", data={"m": 1}, tags={"a": "b"})
            )
            assert (result.offset, result.epoch) == (5, "xyz")

            broadcast = client.broadcast(
                cent.BroadcastRequest(channels=["chat", "nope:1", "down"], data="hi")
            )
            first, unknown, down = broadcast.responses
            assert first.result is not None and first.result.offset == 5
            assert unknown.error is not None and unknown.error.code == 102
            assert down.error is not None and down.error.code == 100

            client.subscribe(cent.SubscribeRequest(user="42", channel="chat", info={"i": 1}))
            client.unsubscribe(cent.UnsubscribeRequest(user="42", channel="chat"))
            client.disconnect(
                cent.DisconnectRequest(
                    user="42", whitelist=["c9"], disconnect=cent.Disconnect(code=4001, reason="r")
                )
            )
            channels = client.channels(cent.ChannelsRequest(pattern="*"))
            assert channels.channels["chat"].num_clients == 2
            info = client.info(cent.InfoRequest())
            assert info.nodes[0].uid == "n1" and info.nodes[0].num_clients == 3

            with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
                client.publish(cent.PublishRequest(channel="nope:1", data=1))
            assert caught.value.code == 102
            presence = client.presence(cent.PresenceRequest(channel="chat"))
            assert presence.presence["c1"].user == "42"
            assert presence.presence["c1"].conn_info == {"n": 1}
            stats = client.presence_stats(cent.PresenceStatsRequest(channel="chat"))
            assert (stats.num_clients, stats.num_users) == (2, 1)
            with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
                client.presence(cent.PresenceRequest(channel="nope:1"))
            assert caught.value.code == 102

            wrong = cent.Client(url, "wrong")
            with pytest.raises(cent.exceptions.CentUnauthorizedError):
                wrong.publish(cent.PublishRequest(channel="chat", data=1))
            with pytest.raises(cent.exceptions.CentUnauthorizedError):
                cent.Client(url, "").info(cent.InfoRequest())

        await asyncio.to_thread(run)
    assert ("publish", "chat", '{"m":1}', {"a": "b"}) in backend.calls
    assert ("subscribe", "42", "chat", "", '{"i":1}', None) in backend.calls
    assert ("unsubscribe", "42", "chat", "") in backend.calls
    assert ("disconnect", "42", "", 4001, "r", ["c9"]) in backend.calls
    assert ("channels", "*") in backend.calls


async def test_cent_async_client(api: ServerAPI, backend: Recorder) -> None:
    async with hypercorn(api) as url:
        client = cent.AsyncClient(url, KEY)
        try:
            result = await client.publish(cent.PublishRequest(channel="news:1", data=[1]))
            assert (result.offset, result.epoch) == (0, "")
            info = await client.info(cent.InfoRequest())
            assert info.nodes[0].name == "host-1"
            with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
                await client.subscribe(cent.SubscribeRequest(user="u", channel="nope:x"))
            assert caught.value.code == 102
        finally:
            await client.close()


async def test_cent_with_the_api_off(backend: Recorder) -> None:
    async with hypercorn(ServerAPI(backend, RULES, "")) as url:
        client = cent.Client(url, KEY)

        def run() -> None:
            with pytest.raises(cent.exceptions.CentTransportError) as caught:
                client.publish(cent.PublishRequest(channel="chat", data=1))
            assert caught.value.status_code == 404

        await asyncio.to_thread(run)
    assert backend.calls == []
