"""Pusher's HTTP API (issue 22, item 3), driven by Pusher's own server SDK (PyPI
``pusher`` 3.3) and by hand-signed requests: publishing reaches the bus, counts and
users come from the broker, and what is not signed right is refused."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pusher
import pusher.http
import pytest
from quart import Quart

from realtime import create_app, get_host
from realtime_broker import BrokerUnavailable, Member, Publication, get_broker
from realtime_pusher.signing import api_signature, body_md5

from .test_fanout import hypercorn

MASTER_KEY = base64.b64encode(bytes(range(32))).decode()
APPS = [
    {"id": "123", "key": "app-key", "secret": "app-secret",
     "encryption_master_key_base64": MASTER_KEY},
    {"id": "456", "key": "key-2", "secret": "secret-2"},
]  # fmt: skip


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Quart, int]]:
    app = create_app(tmp_path, settings={"pusher_apps": APPS})
    async with hypercorn(app) as port:
        yield app, port


def sdk(port: int, number: int = 0, **options: Any) -> pusher.Pusher:
    entry = APPS[number]
    return pusher.Pusher(
        app_id=entry["id"],
        key=entry["key"],
        secret=options.pop("secret", entry["secret"]),
        host="127.0.0.1",
        port=port,
        ssl=False,
        **options,
    )


def recorder(app: Quart, channel: str) -> list[Publication]:
    """What the bus delivers on ``channel`` in this process, as a subscriber sees it."""
    got: list[Publication] = []

    def deliver(publication: Publication) -> int:
        got.append(publication)
        return 1

    get_broker(get_host(app)).subscribe(channel, deliver)
    return got


async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """A blocking SDK call, off the loop that serves it."""
    return await asyncio.to_thread(function, *args, **kwargs)


async def test_trigger_publishes_on_the_bus_with_event_and_skip(
    served: tuple[Quart, int],
) -> None:
    app, port = served
    news, other, second = recorder(app, "news"), recorder(app, "other"), recorder(app, "456:news")
    assert await call(sdk(port).trigger, ["news", "other"], "my-event", {"a": 1}, "1234.5678") == {}
    assert await call(sdk(port).trigger, "news", "plain", "just text") == {}
    assert await call(sdk(port, 1).trigger, "news", "app-two", "hi") == {}
    first, plain = news
    assert (first.data, first.event, first.skip, first.json) == (
        '{"a": 1}', "my-event", "1234.5678", True,
    )  # fmt: skip
    assert (plain.data, plain.event, plain.skip, plain.json) == ("just text", "plain", None, False)
    assert [p.data for p in other] == ['{"a": 1}']
    # The second app's channels are its own on the bus: "456:news", not "news".
    assert [(p.data, p.event) for p in second] == [("hi", "app-two")]


async def test_trigger_batch_publishes_each_in_order(served: tuple[Quart, int]) -> None:
    app, port = served
    news, other = recorder(app, "news"), recorder(app, "other")
    batch = [
        {"channel": "news", "name": "one", "data": "1"},
        {"channel": "other", "name": "two", "data": {"n": 2}, "socket_id": "1.2"},
        {"channel": "news", "name": "three", "data": "3"},
    ]
    assert await call(sdk(port).trigger_batch, batch) == {}
    assert [(p.event, p.data) for p in news] == [("one", "1"), ("three", "3")]
    assert [(p.event, p.data, p.skip) for p in other] == [("two", '{"n": 2}', "1.2")]


async def test_send_to_user_goes_to_the_users_channel(served: tuple[Quart, int]) -> None:
    app, port = served
    user = recorder(app, "#server-to-user-alice")
    assert await call(sdk(port).send_to_user, "alice", "hello", {"x": 1}) == {}
    assert [(p.event, p.data) for p in user] == [("hello", '{"x": 1}')]


async def test_channels_and_counts_from_the_cluster_view(served: tuple[Quart, int]) -> None:
    app, port = served
    broker = get_broker(get_host(app))
    counts = {"news": 2, "presence-room": 3, "456:news": 1, "chat:room": 1, "private-x": 1}
    broker.add_channel_counter(lambda: counts)
    for client, user in (("1.1", "u1"), ("1.2", "u1"), ("2.1", "u2")):
        await broker.join_presence("presence-room", Member(client, user, '{"name":"x"}'))
    client = sdk(port)
    # "chat:room" is no Pusher name; "456:news" is the other app's.
    assert await call(client.channels_info) == {
        "channels": {"news": {}, "presence-room": {}, "private-x": {}}
    }
    assert await call(client.channels_info, "presence-", ["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }
    assert await call(client.channels_info, "pri", ["subscription_count"]) == {
        "channels": {"private-x": {"subscription_count": 1}}
    }
    assert await call(client.channel_info, "news", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 2,
    }
    assert await call(client.channel_info, "empty") == {"occupied": False}
    assert await call(
        client.channel_info, "presence-room", ["user_count", "subscription_count"]
    ) == {"occupied": True, "user_count": 2, "subscription_count": 3}
    assert await call(client.users_info, "presence-room") == {"users": [{"id": "u1"}, {"id": "u2"}]}
    assert await call(sdk(port, 1).channels_info) == {"channels": {"news": {}}}
    assert await call(sdk(port, 1).users_info, "presence-room") == {"users": []}
    # Counts asked for with a trigger come back per channel.
    request = _signed_trigger(client, ["news", "presence-room"], "subscription_count,user_count")
    result = await call(client._pusher_client.http.send_request, request)
    assert result == {
        "channels": {
            "news": {"subscription_count": 2},
            "presence-room": {"subscription_count": 3, "user_count": 2},
        }
    }
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
        await call(client.channels_info, None, ["user_count"])
    with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
        await call(client.users_info, "news")


def _signed_trigger(client: pusher.Pusher, channels: list[str], info: str) -> Any:
    """A trigger request with ``info``, which the SDK's trigger does not send."""
    inner = client._pusher_client
    return pusher.http.Request(
        inner,
        pusher.http.POST,
        f"/apps/{inner.app_id}/events",
        {"name": "e", "channels": channels, "data": "d", "info": info},
    )


async def test_terminate_user_connections_is_a_control_message(
    served: tuple[Quart, int],
) -> None:
    app, port = served
    heard: list[bytes] = []
    get_broker(get_host(app)).on_control(heard.append)
    # pusher-http-python 3.3 posts to /users/{id}/... without /apps/{id}: both are served.
    assert await call(sdk(port).terminate_user_connections, "alice") == {}
    assert await _post(port, "/apps/456/users/bob/terminate_connections", b"{}", APPS[1]) == (
        200,
        "{}",
    )
    messages = [json.loads(data) for data in heard]
    assert [(m.get("user"), m.get("app")) for m in messages] == [("alice", "123"), ("bob", "456")]


async def test_auth_output_equals_the_sdks(served: tuple[Quart, int]) -> None:
    app, port = served
    functions = get_host(app).functions
    client = sdk(port, encryption_master_key_base64=MASTER_KEY)
    assert functions["pusher_auth"]("1234.5678", "private-foo") == client.authenticate(
        "private-foo", "1234.5678"
    )
    member = {"user_id": "u1", "user_info": {"name": "Ann"}}
    assert functions["pusher_auth"]("1.2", "presence-room", member) == client.authenticate(
        "presence-room", "1.2", member
    )
    ours = functions["pusher_auth"]("1.2", "private-encrypted-x")
    theirs = client.authenticate("private-encrypted-x", "1.2")
    assert ours == {**theirs, "shared_secret": theirs["shared_secret"].decode()}
    expected = base64.b64encode(
        hashlib.sha256(b"private-encrypted-x" + bytes(range(32))).digest()
    ).decode()
    assert ours["shared_secret"] == expected
    user = {"id": "u1", "user_info": {"name": "Ann"}}
    assert functions["pusher_user_auth"]("1.2", user) == client.authenticate_user("1.2", user)
    other = sdk(port, 1)
    assert functions["pusher_auth"]("1.2", "private-foo", app="456") == other.authenticate(
        "private-foo", "1.2"
    )


async def test_a_wrong_secret_or_a_stale_timestamp_is_refused(
    served: tuple[Quart, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    app, port = served
    news = recorder(app, "news")
    with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
        await call(sdk(port, secret="wrong").trigger, "news", "e", "d")
    with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
        await call(sdk(port, secret="wrong").channels_info)
    # The other app's secret does not sign for this one.
    with pytest.raises(pusher.errors.PusherBadAuth):
        await call(sdk(port, secret=APPS[1]["secret"]).trigger, "news", "e", "d")
    # The SDK's clock only (its module's `time`), not the server's.
    real = time.time
    monkeypatch.setattr(pusher.http, "time", SimpleNamespace(time=lambda: real() - 601))
    with pytest.raises(pusher.errors.PusherBadAuth, match="Timestamp expired"):
        await call(sdk(port).trigger, "news", "e", "d")
    monkeypatch.setattr(pusher.http, "time", SimpleNamespace(time=lambda: real() + 601))
    with pytest.raises(pusher.errors.PusherBadAuth, match="Timestamp expired"):
        await call(sdk(port).trigger, "news", "e", "d")
    monkeypatch.setattr(pusher.http, "time", SimpleNamespace(time=lambda: real() - 590))
    assert await call(sdk(port).trigger, "news", "e", "in time") == {}
    assert [p.data for p in news] == ["in time"]


# -- hand-signed requests ----------------------------------------------------------------


def signed_query(
    method: str,
    path: str,
    body: bytes,
    app: dict[str, Any],
    *,
    extra: dict[str, str] | None = None,
    timestamp: float | None = None,
    md5: str | None = None,
) -> dict[str, str]:
    params = {
        "auth_key": app["key"],
        "auth_timestamp": str(int(time.time() if timestamp is None else timestamp)),
        "auth_version": "1.0",
        **(extra or {}),
    }
    if body or md5 is not None:
        params["body_md5"] = body_md5(body) if md5 is None else md5
    params["auth_signature"] = api_signature(app["secret"], method, path, params)
    return params


async def _post(
    port: int, path: str, body: bytes, app: dict[str, Any] = APPS[0], **signing: Any
) -> tuple[int, str]:
    params = signed_query("POST", path, body, app, **signing)
    # Parameters in reverse order, the body as bytes: no SDK's habits assumed.
    query = "&".join(f"{k}={v}" for k, v in reversed(params.items()))
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}{path}?{query}",
            content=body,
            headers={"content-type": "application/json"},
        )
    return response.status_code, response.text


async def _get(port: int, path: str, extra: dict[str, str] | None = None) -> tuple[int, str]:
    params = signed_query("GET", path, b"", APPS[0], extra=extra)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}{path}", params=params)
    return response.status_code, response.text


def event(**fields: Any) -> bytes:
    return json.dumps({"name": "e", "channel": "news", "data": "d", **fields}).encode()


async def test_hand_signed_requests_in_any_order_and_encoding(served: tuple[Quart, int]) -> None:
    app, port = served
    news = recorder(app, "news")
    assert await _post(port, "/apps/123/events", event(data="x")) == (200, "{}")
    # httpx percent-encodes the comma: the values are signed decoded, as Pusher does.
    status, text = await _get(port, "/apps/123/channels/news", {"info": "subscription_count"})
    assert (status, json.loads(text)) == (200, {"occupied": False, "subscription_count": 0})
    assert [p.data for p in news] == ["x"]


@pytest.mark.parametrize(
    ("body", "status", "says"),
    [
        (b"{not json", 400, "not JSON"),
        (b"[1]", 400, "JSON object"),
        (b"[" * 50_000 + b"]" * 50_000, 400, "not JSON"),
        (event(channel=None, channels=[]), 400, "channels"),
        (event(channel=None, channels=[f"c{i}" for i in range(101)]), 400, "at most 100"),
        (event(channel=None, channels=["a", "a"]), 400, "twice"),
        (event(channel=None, channels=["a", {"b": 1}]), 400, "a channel name is a string"),
        (event(channel=None, channels="news"), 400, "channels is a list"),
        (b"null", 400, "JSON object"),
        (b"\xff\xfe", 400, "not JSON"),
        (event(channels=["a"]), 400, "not both"),
        (event(channel="bad channel"), 400, "invalid channel name"),
        (event(channel="x" * 201), 400, "invalid channel name"),
        (event(channel=None, channels=["private-encrypted-a", "b"]), 400, "encrypted"),
        (event(name=""), 400, "event name"),
        (event(name="x" * 201), 400, "event name"),
        (event(name="pusher:subscribe"), 400, "protocol"),
        (event(data={"a": 1}), 400, "data is a string"),
        (event(data="x" * (10 * 1024 + 1)), 413, "over the 10240-byte limit"),
        (event(socket_id="abc"), 400, "socket_id"),
        (event(info="nope"), 400, "unknown info"),
    ],
)
async def test_bad_events_are_refused(
    served: tuple[Quart, int], body: bytes, status: int, says: str
) -> None:
    app, port = served
    if b'"channel": null' in body:
        body = json.dumps({k: v for k, v in json.loads(body).items() if k != "channel"}).encode()
    news = recorder(app, "news")
    got_status, text = await _post(port, "/apps/123/events", body)
    assert (got_status, says in text) == (status, True), text
    assert news == []


async def test_the_window_is_the_setting_and_a_broker_outage_is_503(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(tmp_path, settings={"pusher_apps": APPS, "pusher_timestamp_window": 30})
    async with hypercorn(app) as port:
        real = time.time
        monkeypatch.setattr(pusher.http, "time", SimpleNamespace(time=lambda: real() - 60))
        with pytest.raises(pusher.errors.PusherBadAuth, match="within 30 s"):
            await call(sdk(port).trigger, "news", "e", "d")
        monkeypatch.undo()

        async def down(*args: Any, **kwargs: Any) -> Any:
            raise BrokerUnavailable("redis is away")

        monkeypatch.setattr(get_broker(get_host(app)), "publish_result", down)
        with pytest.raises(pusher.errors.PusherBadStatus, match="503"):
            await call(sdk(port).trigger, "news", "e", "d")


async def test_batches_are_bounded(served: tuple[Quart, int]) -> None:
    app, port = served
    news = recorder(app, "news")
    one = {"channel": "news", "name": "e", "data": "d"}
    for batch, says in (([], "batch"), ([one] * 11, "at most 10"), ([one, "x"], "object"),
                        ([one, {**one, "channel": ["news"]}], "one channel"),
                        ([one, {**one, "data": "x" * 10241}], "limit")):  # fmt: skip
        status, text = await _post(
            port, "/apps/123/batch_events", json.dumps({"batch": batch}).encode()
        )
        assert status in (400, 413) and says in text, text
    assert news == []  # a batch with one bad event publishes none of it


async def test_signatures_checked_as_pusher_defines(served: tuple[Quart, int]) -> None:
    _, port = served
    body = event()
    path = "/apps/123/events"
    cases = [
        ({"md5": "0" * 32}, "body_md5"),
        ({"timestamp": time.time() - 700}, "Timestamp expired"),
        ({"timestamp": time.time() + 700}, "Timestamp expired"),
        ({"app": APPS[1]}, "auth_key"),
    ]
    for signing, says in cases:
        status, text = await _post(port, path, body, **signing)
        assert (status, says in text) == (401, True), text
    params = signed_query("POST", path, body, APPS[0])
    async with httpx.AsyncClient() as http:
        url = f"http://127.0.0.1:{port}{path}"
        for change, says in (
            ({"auth_signature": "0" * 64}, "Invalid signature"),
            ({"auth_version": "2.0"}, "auth_version"),
            ({"auth_timestamp": "soon"}, "auth_timestamp"),
            ({"auth_key": ""}, "auth_key"),
        ):
            response = await http.post(url, params={**params, **change}, content=body)
            assert (response.status_code, says in response.text) == (401, True), response.text
        response = await http.post(
            url, params={k: v for k, v in params.items() if k != "body_md5"}, content=body
        )
        assert response.status_code == 401 and "body_md5" in response.text
        # A parameter twice, or a malformed query: 400.
        query = "&".join(f"{k}={v}" for k, v in params.items())
        response = await http.post(f"{url}?{query}&auth_key=app-key", content=body)
        assert response.status_code == 400 and "twice" in response.text
        # The wrong method, an unknown app or path.
        response = await http.get(url, params=params)
        assert (response.status_code, response.headers["allow"]) == (405, "POST")
        response = await http.post(f"http://127.0.0.1:{port}/apps/999/events", params=params)
        assert response.status_code == 404
        response = await http.get(f"http://127.0.0.1:{port}/apps/123/channels/a/b/c")
        assert response.status_code == 404


async def test_bodies_over_the_limit_are_413_unread(served: tuple[Quart, int]) -> None:
    _, port = served
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/apps/123/batch_events", content=b"x" * (300 * 1024)
        )
    assert response.status_code == 413 and "over" in response.text


async def test_a_scripts_broadcast_names_its_event(
    served: tuple[Quart, int], tmp_path: Path
) -> None:
    app, port = served
    (tmp_path / "named.py").write_text(
        'broadcast(request.values["data"], channel="news", event="order-shipped")\n'
        'broadcast({"n": 1}, channel="news", event="as-json")\n'
        'broadcast("plain", channel="news")\n'
    )
    news = recorder(app, "news")
    async with httpx.AsyncClient() as http:
        response = await http.post(f"http://127.0.0.1:{port}/named.py", data={"data": "boxed"})
        assert response.status_code == 200, response.text
        refused = tmp_path / "refused.py"
        refused.write_text('broadcast("x", channel="news", event="")\n')
        response = await http.post(f"http://127.0.0.1:{port}/refused.py")
        assert response.status_code == 400 and "event name" in response.text
    assert [(p.data, p.event, p.json) for p in news] == [
        ("boxed", "order-shipped", False),
        ('{"n":1}', "as-json", True),
        ("plain", None, False),
    ]
