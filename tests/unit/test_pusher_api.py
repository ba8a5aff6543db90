"""The HTTP API's pieces without a server: request signatures (:mod:`.api_auth`), names
(:mod:`.api_fields`), prefix routes, the apps' encryption key, the auth functions."""

from __future__ import annotations

import base64
from types import SimpleNamespace
from typing import Any

import pytest

from realtime.routes import ASGIDispatcher, ASGIRoute, check_routes
from realtime_pusher import api_fields as fields
from realtime_pusher.api_auth import APIError, authenticate, parse_query, string_to_sign
from realtime_pusher.apps import PusherApp, make_apps
from realtime_pusher.functions import AuthRefused, Functions
from realtime_pusher.signing import api_signature, body_md5

APPS = make_apps(
    [{"id": "1", "key": "k1", "secret": "s1"}, {"id": "2", "key": "k2", "secret": "s2"}]
)
ONE = APPS.by_id["1"]
NOW = 1_700_000_000.0


def signed(
    secret: str = "s1", method: str = "POST", path: str = "/apps/1/events", body: bytes = b"{}"
) -> dict[str, str]:
    params = {"auth_key": "k1", "auth_timestamp": str(int(NOW)), "auth_version": "1.0"}
    if body:
        params["body_md5"] = body_md5(body)
    params["auth_signature"] = api_signature(secret, method, path, params)
    return params


def check(params: dict[str, str], body: bytes = b"{}", **kw: Any) -> PusherApp:
    options: dict[str, Any] = {"now": NOW, "window": 600, **kw}
    app = options.pop("app", ONE)
    method = options.pop("method", "POST")
    path = options.pop("path", "/apps/1/events")
    return authenticate(APPS, app, method, path, params, body, **options)


def test_a_signed_request_passes_and_names_its_app() -> None:
    assert check(signed()) is ONE
    # Without an app in the path, auth_key names it.
    assert check(signed(), app=None) is ONE
    get = signed(method="GET", path="/apps/1/channels", body=b"")
    assert check(get, b"", method="GET", path="/apps/1/channels") is ONE
    # A GET may carry body_md5 of the empty body, as pusher-http-python sends it.
    get = {k: v for k, v in get.items() if k != "auth_signature"}
    get["body_md5"] = body_md5(b"")
    get["auth_signature"] = api_signature("s1", "GET", "/apps/1/channels", get)
    assert check(get, b"", method="GET", path="/apps/1/channels") is ONE


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"auth_key": None}, "missing auth_key"),
        ({"auth_key": "k2"}, "auth_key"),
        ({"auth_version": "1.1"}, "auth_version"),
        ({"auth_timestamp": "-5"}, "auth_timestamp"),
        ({"auth_timestamp": "1e9"}, "auth_timestamp"),
        ({"auth_timestamp": str(int(NOW) - 601)}, "Timestamp expired"),
        ({"auth_timestamp": str(int(NOW) + 601)}, "Timestamp expired"),
        ({"body_md5": None}, "missing body_md5"),
        ({"body_md5": "A" * 32}, "body_md5"),
        ({"auth_signature": "0" * 64}, "Invalid signature"),
        ({"auth_signature": None}, "Invalid signature"),
    ],
)
def test_what_is_refused_with_401(change: dict[str, str | None], says: str) -> None:
    params: dict[str, Any] = signed()
    for name, value in change.items():
        if value is None:
            params.pop(name, None)
        else:
            params[name] = value
    with pytest.raises(APIError) as refused:
        check(params)
    assert refused.value.status == 401 and says in refused.value.message


def test_the_signature_covers_method_path_body_and_params() -> None:
    params = signed()
    for kw in ({"method": "GET"}, {"path": "/apps/1/batch_events"}):
        with pytest.raises(APIError, match="Invalid signature"):
            check(params, **kw)
    with pytest.raises(APIError, match="body_md5"):
        check(params, b'{"x":1}')
    with pytest.raises(APIError, match="Invalid signature"):
        check({**params, "info": "user_count"})
    with pytest.raises(APIError, match="Invalid signature"):
        check(signed(secret="s2"))
    # The window is the setting's.
    late = {**signed(), "auth_timestamp": str(int(NOW) - 100)}
    late["auth_signature"] = api_signature("s1", "POST", "/apps/1/events", late)
    assert check(late) is ONE
    with pytest.raises(APIError, match="Timestamp expired"):
        check(late, window=60)
    assert "POST\n/apps/1/events\nauth_key=k1" in string_to_sign("post", "/apps/1/events", params)


def test_parse_query() -> None:
    assert parse_query(b"") == {}
    assert parse_query(b"a=1&info=user_count%2Csubscription_count&b=") == {
        "a": "1",
        "info": "user_count,subscription_count",
        "b": "",
    }
    for raw, says in (
        (b"a=1&a=2", "twice"),
        (b"x" * 5000, "over"),
        (b"&".join(b"k%d=1" % i for i in range(17)), "malformed"),
        (b"a=%ff", "malformed"),
        (b"\xff=1", "malformed"),
    ):
        with pytest.raises(APIError, match=says) as refused:
            parse_query(raw)
        assert refused.value.status == 400


def test_names() -> None:
    assert fields.channel_error("private-a_b=c@d,e.f;g-1") is None
    assert fields.channel_error("x" * 200) is None
    for bad in ("", "x" * 201, "a b", "a:b", "a/b", "é", None, 5):
        assert fields.channel_error(bad) is not None
    assert fields.channel_error("#server-to-user-ann") is not None
    assert fields.channel_error("#server-to-user-ann", user_channels=True) is None
    assert fields.channel_error("#server-to-user-", user_channels=True) is not None
    assert fields.socket_id_error("123.456") is None
    for bad in ("123", "a.b", "1.2.3", " 1.2", "1" * 21 + ".1", None):
        assert fields.socket_id_error(bad) is not None
    assert fields.event_name_error("my-event") is None
    for bad in ("", "x" * 201, "pusher:ping", "pusher_internal:x", "a\nb", 1):
        assert fields.event_name_error(bad) is not None


async def _noop(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app standing in for one route."""


async def _other(scope: Any, receive: Any, send: Any) -> None:
    """Another."""


def test_prefix_routes() -> None:
    with pytest.raises(ValueError, match="ends in '/'"):
        ASGIRoute("/apps/1/channels", _noop, prefix=True)
    exact = ASGIRoute("/apps/1/channels", _noop, ("http",))
    under = ASGIRoute("/apps/1/channels/", _other, ("http",), prefix=True)
    shorter = ASGIRoute("/apps/", _noop, ("http",), prefix=True)
    # An exact "/apps/1/channels/" and the prefix "/apps/1/channels/" do not clash...
    same_path = ASGIRoute("/apps/1/channels/", _noop, ("http",))
    check_routes([("a", [exact, under, shorter]), ("b", [same_path])])
    # ...but two prefixes of one path do.
    with pytest.raises(Exception, match="claimed by both"):
        check_routes([("a", [under]), ("b", [ASGIRoute("/apps/1/channels/", _noop, prefix=True)])])
    dispatcher = ASGIDispatcher(_noop, [exact, under, shorter])
    assert dispatcher.table[("http", "/apps/1/channels")] is _noop
    assert [(kind, path) for kind, path, _ in dispatcher.prefixes] == [
        ("http", "/apps/1/channels/"),
        ("http", "/apps/"),
    ]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/apps/1/channels", "exact"),
        ("/apps/1/channels/news", "under"),
        ("/apps/1/channels/news/users", "under"),
        ("/apps/1/events", "shorter"),
        ("/other", "fallback"),
    ],
)
async def test_the_longest_prefix_serves(path: str, expected: str) -> None:
    served: list[str] = []

    def app(name: str) -> Any:
        async def serve(scope: Any, receive: Any, send: Any) -> None:
            served.append(name)

        return serve

    dispatcher = ASGIDispatcher(
        app("fallback"),
        [
            ASGIRoute("/apps/", app("shorter"), ("http",), prefix=True),
            ASGIRoute("/apps/1/channels", app("exact"), ("http",)),
            ASGIRoute("/apps/1/channels/", app("under"), ("http",), prefix=True),
        ],
    )
    await dispatcher({"type": "http", "path": path}, None, None)
    # A WebSocket scope is not an http route's.
    await dispatcher({"type": "websocket", "path": path}, None, None)
    assert served == [expected, "fallback"]


def test_the_encryption_master_key() -> None:
    key = base64.b64encode(b"k" * 32).decode()
    app = PusherApp("1", "k", "s", encryption_master_key_base64=key)
    assert app.encryption_master_key == b"k" * 32
    assert PusherApp("1", "k", "s").encryption_master_key is None
    for bad in (base64.b64encode(b"short").decode(), "not base64!"):
        with pytest.raises(ValueError, match="32 bytes"):
            PusherApp("1", "k", "s", encryption_master_key_base64=bad)


def functions(**settings: Any) -> Functions:
    host: Any = SimpleNamespace(
        settings={"pusher_apps": [{"id": "1", "key": "k1", "secret": "s1"}], **settings}
    )
    return Functions(host)


def test_the_auth_functions_refuse_clearly() -> None:
    made = functions()
    member = {"user_id": 7}
    answer = made.pusher_auth("1.2", "presence-r", member)
    assert answer["channel_data"] == '{"user_id": 7}'  # as given: pusher-js reads it back
    assert (
        made.pusher_auth("1.2", "presence-r", '{"user_id":"a"}')["channel_data"]
        == '{"user_id":"a"}'
    )
    for args, error, says in (
        (("1.2", "presence-r"), TypeError, "channel_data"),
        (("1.2", "private-r", {"user_id": "a"}), TypeError, "presence channels only"),
        (("1.2", "presence-r", {"user_id": ""}), AuthRefused, "user_id"),
        (("1.2", "presence-r", {"name": "a"}), AuthRefused, "user_id"),
        (("1.2", "presence-r", "[1]"), TypeError, "JSON object"),
        (("1.2", "presence-r", "{oops"), TypeError, "JSON"),
        (("1.2", "presence-r", {"user_id": "a", "x": "y" * 20000}), AuthRefused, "over"),
        (("1", "private-r"), AuthRefused, "socket_id"),
        (("1.2", "public"), AuthRefused, "public"),
    ):
        with pytest.raises(error, match=says):
            made.pusher_auth(*args)
    with pytest.raises(LookupError, match="no Pusher app with id"):
        made.pusher_auth("1.2", "private-r", app="9")
    with pytest.raises(LookupError, match="no Pusher app is configured"):
        Functions(SimpleNamespace(settings={})).pusher_auth("1.2", "private-r")  # type: ignore[arg-type]
    with pytest.raises(AuthRefused, match="id"):
        made.pusher_user_auth("1.2", {"name": "no id"})
    assert made.pusher_user_auth("1.2", '{"id":"a"}')["user_data"] == '{"id":"a"}'


def test_a_path_signed_as_sent_or_decoded() -> None:
    decoded, raw = "/apps/1/channels/a@b", "/apps/1/channels/a%40b"
    for signed_path in (decoded, raw):
        params = signed(method="GET", path=signed_path, body=b"")
        kw = {"method": "GET", "path": decoded, "raw_path": raw}
        assert check(params, b"", **kw) is ONE
    params = signed(method="GET", path="/apps/1/channels/other", body=b"")
    with pytest.raises(APIError, match="Invalid signature"):
        check(params, b"", method="GET", path=decoded, raw_path=raw)
