"""The per-connection protocol state machine, driven frame by frame with a fake backend."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any

import jwt
import pytest

from realtime_centrifuge import (
    ChannelRules,
    ConnectAuth,
    Disconnect,
    DisconnectError,
    Error,
    HookAnswer,
    Session,
    SessionOptions,
    TokenVerifier,
)

SECRET = "s3cret-" * 10
T0 = 1_700_000_000.0
CLIENT = "c0ffee00-0000-4000-8000-000000000001"
RULES = ChannelRules.from_config(
    {
        "without_namespace": {"allow_subscribe_for_client": True},
        "namespaces": [
            {
                "name": "chat",
                "allow_subscribe_for_client": True,
                "allow_publish_for_subscriber": True,
            },
            {
                "name": "news",
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            {"name": "closed"},
            {"name": "dialog", "allow_user_limited_channels": True},
        ],
    }
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class FakeBackend:
    """Records what the session asks; answers as told."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.connect_answer: ConnectAuth | Error | None = None
        self.subscribe_answer: HookAnswer = None
        self.publish_answer: HookAnswer = None
        self.rpc_error: Exception | None = None
        self.fail_subscribe: set[str] = set()

    async def authorize_connect(
        self, *, client: str, data: Any, name: str, version: str, headers: Mapping[str, str]
    ) -> ConnectAuth | Error | None:
        self.calls.append(("authorize_connect", data, name, version, dict(headers)))
        return self.connect_answer

    async def authorize_subscribe(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        self.calls.append(("authorize_subscribe", user, channel, data))
        return self.subscribe_answer

    async def authorize_publish(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        self.calls.append(("authorize_publish", user, channel, data))
        return self.publish_answer

    async def rpc(self, *, client: str, user: str, meta: Any, method: str, data: Any) -> Any:
        self.calls.append(("rpc", method, data))
        if self.rpc_error:
            raise self.rpc_error
        return {"echo": data}

    async def on_send(self, *, client: str, user: str, meta: Any, data: Any) -> None:
        self.calls.append(("send", user, data))

    async def subscribe(self, channel: str, join_leave: bool = False) -> None:
        if channel in self.fail_subscribe:
            raise RuntimeError("broker down")
        self.calls.append(("subscribe", channel))
        if join_leave:
            self.calls.append(("join_leave", channel))

    async def join_presence(self, channel: str, info: Mapping[str, Any]) -> None:
        self.calls.append(("join_presence", channel, dict(info)))

    def recovered(self, seconds: float) -> None:
        self.calls.append(("recovered", seconds))

    async def unsubscribe(self, channel: str) -> None:
        self.calls.append(("unsubscribe", channel))

    async def publish(self, channel: str, data: Any, info: Mapping[str, Any]) -> None:
        self.calls.append(("publish", channel, data, dict(info)))

    def joined(self) -> list[str]:
        return [c[1] for c in self.calls if c[0] == "subscribe"]


def token(**claims: Any) -> str:
    return jwt.encode(claims, SECRET, algorithm="HS256")


def make(**options: Any) -> tuple[Session, FakeBackend, Clock]:
    backend, clock = FakeBackend(), Clock()
    session = Session(
        RULES,
        TokenVerifier(hmac_secret=SECRET),
        backend,
        options=SessionOptions(**options),
        client_id=CLIENT,
        clock=clock,
        rand=lambda: 1.0,  # first ping after a whole interval
    )
    return session, backend, clock


def frame(*commands: dict[str, Any]) -> str:
    return "\n".join(json.dumps(c) for c in commands)


async def send(session: Session, *commands: dict[str, Any]) -> list[Any]:
    return [json.loads(line) for line in await session.handle_frame(frame(*commands))]


async def closed_with(session: Session, *commands: dict[str, Any]) -> DisconnectError:
    with pytest.raises(DisconnectError) as caught:
        await session.handle_frame(frame(*commands))
    return caught.value


async def connected(user: str = "42", **claims: Any) -> tuple[Session, FakeBackend, Clock]:
    session, backend, clock = make()
    await send(session, {"id": 1, "connect": {"token": token(sub=user, **claims)}})
    assert session.connected
    return session, backend, clock


def error(code: int, message: str, temporary: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if temporary:
        body["temporary"] = True
    return body


# -- connect ----------------------------------------------------------------------------


async def test_connect_reply_exact() -> None:
    session, backend, _ = make(version="0.1.0")
    lines = await session.handle_frame(
        frame(
            {
                "id": 1,
                "connect": {"token": token(sub="42", exp=T0 + 600, info={"n": 1}), "name": "js"},
            }
        )
    )
    assert lines == [
        f'{{"id":1,"connect":{{"client":"{CLIENT}","version":"0.1.0","expires":true,'
        '"ttl":600,"ping":25,"pong":true}}'
    ]
    assert (session.user, session.info, session.expire_at) == ("42", {"n": 1}, T0 + 600)
    assert backend.calls == []  # a token: the hook is not asked


async def test_batch_connect_then_subscribes_in_order() -> None:
    session, backend, _ = make()
    replies = await send(
        session,
        {"id": 1, "connect": {"token": token(sub="42")}},
        {"id": 2, "subscribe": {"channel": "chat:a", "flag": 1}},
        {"id": 3, "subscribe": {"channel": "closed:x"}},
        {"id": 4, "subscribe": {"channel": "chat:b"}},
    )
    assert [r["id"] for r in replies] == [1, 2, 3, 4]
    assert replies[0]["connect"]["client"] == CLIENT
    assert replies[1] == {"id": 2, "subscribe": {}}
    assert replies[2] == {"id": 3, "error": error(103, "permission denied")}
    assert replies[3] == {"id": 4, "subscribe": {}}
    assert backend.joined() == ["chat:a", "chat:b"]
    assert session.channels == {"chat:a", "chat:b"}


async def test_server_side_subscriptions_from_token() -> None:
    session, backend, _ = make()
    replies = await send(
        session,
        {
            "id": 1,
            "connect": {
                "token": token(
                    sub="42",
                    channels=["x"],
                    subs={"news:a": {"data": {"hi": 1}, "info": {"r": 1}}, "closed:b": {}},
                )
            },
        },
    )
    # subs wins over channels; a token grants even closed namespaces.
    assert replies[0]["connect"]["subs"] == {"news:a": {"data": {"hi": 1}}, "closed:b": {}}
    assert backend.joined() == ["news:a", "closed:b"]
    await send(session, {"id": 2, "publish": {"channel": "closed:b", "data": 1}})
    assert session.channels == {"news:a", "closed:b"}


async def test_token_channels_in_unknown_namespace() -> None:
    session, backend, _ = make()
    replies = await send(session, {"id": 1, "connect": {"token": token(channels=["nope:x"])}})
    assert replies == [{"id": 1, "error": error(102, "unknown channel")}]
    assert backend.joined() == [] and session.rejected


async def test_too_many_server_side_subscriptions() -> None:
    session, backend, _ = make(max_channels=2)
    exc = await closed_with(
        session, {"id": 1, "connect": {"token": token(channels=["a", "b", "c"])}}
    )
    assert exc.disconnect == Disconnect(3505, "channel limit")
    assert backend.joined() == []


async def test_connect_subscribe_failure_rolls_back() -> None:
    session, backend, _ = make()
    backend.fail_subscribe = {"b"}
    replies = await send(session, {"id": 1, "connect": {"token": token(channels=["a", "b"])}})
    assert replies == [{"id": 1, "error": error(100, "internal server error", True)}]
    assert backend.calls == [("subscribe", "a"), ("unsubscribe", "a")]
    assert not session.connected and session.channels == frozenset()


async def test_client_requested_server_side_subscriptions() -> None:
    session, backend, _ = make(allow_anonymous_connect_without_token=True)
    replies = await send(
        session,
        {
            "id": 1,
            "connect": {
                "subs": {
                    "news:a": {"recover": True, "offset": 3, "epoch": "e"},
                    "chat:a": {},
                    "$news:b": {},
                }
            },
        },
    )
    # Anonymous: only what an anonymous subscribe would get.
    assert replies[0]["connect"]["subs"] == {"news:a": {}}
    assert backend.joined() == ["news:a"]
    # The hook is asked as for a subscribe: it cannot be bypassed this way.
    session, backend, _ = make()
    backend.subscribe_answer = False
    connect = {"token": token(sub="42"), "subs": {"chat:a": {}, "dialog:#42": {}}}
    replies = await send(session, {"id": 1, "connect": connect})
    assert replies[0]["connect"]["subs"] == {"dialog:#42": {}}
    assert ("authorize_subscribe", "42", "chat:a", None) in backend.calls
    session, _, _ = make(allow_anonymous_connect_without_token=True)
    exc = await closed_with(session, {"id": 1, "connect": {"subs": {"nope:a": {}}}})
    assert exc.disconnect.code == 3501  # Go: DisconnectBadRequest for an unknown namespace


async def test_a_connect_asking_for_more_channels_than_allowed_asks_no_hook() -> None:
    # A 64 KB connect names some 5,000 channels: each asked of the hook (an HTTP
    # call, maybe) before the channel limit was checked, bypassing the command rate.
    session, backend, _ = make(max_channels=2)
    backend.subscribe_answer = False
    subs = {f"chat:{n}": {} for n in range(1000)}
    exc = await closed_with(session, {"id": 1, "connect": {"token": token(sub="42"), "subs": subs}})
    assert exc.disconnect == Disconnect(3505, "channel limit")
    assert backend.calls == [] and backend.joined() == []
    # Up to the limit, each is asked as before.
    session, backend, _ = make(max_channels=2)
    backend.subscribe_answer = False
    connect = {"token": token(sub="42"), "subs": {"chat:a": {}, "chat:b": {}}}
    replies = await send(session, {"id": 1, "connect": connect})
    assert replies[0]["connect"].get("subs", {}) == {}
    assert [call[2] for call in backend.calls] == ["chat:a", "chat:b"]


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"exp": T0 - 1}, error(109, "token expired")),
        ({"exp": T0 + 60, "expire_at": int(T0) - 5}, error(110, "expired")),
    ],
)
async def test_connect_token_errors(claims: dict[str, Any], expected: dict[str, Any]) -> None:
    session, _, _ = make()
    replies = await send(
        session,
        {"id": 1, "connect": {"token": token(sub="1", **claims)}},
        {"id": 2, "subscribe": {"channel": "chat:a"}},
    )
    # Go stops reading after a refused connect: the subscribe is not answered.
    assert replies == [{"id": 1, "error": expected}]
    assert session.rejected and not session.connected
    exc = await closed_with(session, {"id": 3, "connect": {"token": token(sub="1")}})
    assert exc.disconnect.code == 3501


async def test_connect_expire_at_zero_never_expires() -> None:
    session, _, clock = await connected(exp=T0 + 60, expire_at=0)
    assert session.expire_at is None
    clock.now += 10**7
    assert session.expired(clock.now) is None


@pytest.mark.parametrize(
    "bad",
    [
        "garbage",
        jwt.encode({"sub": "1"}, "wrong-" * 11, algorithm="HS256"),
        jwt.encode({"sub": "1", "channel": "chat:a"}, SECRET, algorithm="HS256"),
    ],
)
async def test_invalid_connection_token_closes_3500(bad: str) -> None:
    session, _, _ = make()
    exc = await closed_with(session, {"id": 1, "connect": {"token": bad}})
    assert exc.disconnect == Disconnect(3500, "invalid token")
    assert not exc.disconnect.reconnect


async def test_connect_without_token() -> None:
    # Neither a hook nor anonymous access: Go's "client credentials not found".
    session, backend, _ = make()
    exc = await closed_with(session, {"id": 1, "connect": {"name": "js", "headers": {"a": "b"}}})
    assert exc.disconnect.code == 3501
    assert backend.calls == [("authorize_connect", None, "js", "", {"a": "b"})]
    # Anonymous allowed.
    session, _, _ = make(allow_anonymous_connect_without_token=True)
    replies = await send(session, {"id": 1, "connect": {}})
    assert replies[0]["connect"]["client"] == CLIENT and session.user == ""


async def test_connect_hook_decides() -> None:
    session, backend, _ = make(allow_anonymous_connect_without_token=True)
    backend.connect_answer = ConnectAuth(
        user="7", info={"n": "Bo"}, expire_at=int(T0) + 100, channels=("news:x",), data={"w": 1}
    )
    replies = await send(session, {"id": 1, "connect": {"data": {"cookie": "c"}}})
    assert replies[0]["connect"] == {
        "client": CLIENT,
        "expires": True,
        "ttl": 100,
        "data": {"w": 1},
        "subs": {"news:x": {}},
        "ping": 25,
        "pong": True,
    }
    assert session.user == "7" and backend.joined() == ["news:x"]
    assert backend.calls[0][1] == {"cookie": "c"}


async def test_connect_hook_refuses() -> None:
    session, backend, _ = make(allow_anonymous_connect_without_token=True)
    backend.connect_answer = Error(4001, "who are you")
    replies = await send(session, {"id": 1, "connect": {}})
    assert replies == [{"id": 1, "error": error(4001, "who are you")}]
    assert session.rejected


async def test_commands_before_connect_and_second_connect() -> None:
    for command in ({"id": 1, "subscribe": {"channel": "chat:a"}}, {}, {"send": {"data": 1}}):
        session, _, _ = make()
        assert (await closed_with(session, command)).disconnect.code == 3501
    session, _, _ = await connected()
    exc = await closed_with(session, {"id": 2, "connect": {"token": token(sub="42")}})
    assert exc.disconnect.code == 3501


# -- subscribe --------------------------------------------------------------------------


async def test_subscribe_errors() -> None:
    session, backend, _ = await connected()
    replies = await send(
        session,
        {"id": 2, "subscribe": {"channel": "chat:a"}},
        {"id": 3, "subscribe": {"channel": "chat:a"}},
        {"id": 4, "subscribe": {"channel": "nope:a"}},
        {"id": 5, "subscribe": {"channel": "chat:" + "x" * 251}},
        {"id": 6, "subscribe": {"channel": "chat:é"}},
        {"id": 7, "subscribe": {"channel": "$chat:a"}},
        {"id": 8, "subscribe": {"channel": "chat:m", "type": 1}},
        {"id": 9, "subscribe": {"channel": "dialog:#42,43"}},
        {"id": 10, "subscribe": {"channel": "dialog:#41"}},
    )
    assert replies == [
        {"id": 2, "subscribe": {}},
        {"id": 3, "error": error(105, "already subscribed")},
        {"id": 4, "error": error(102, "unknown channel")},
        {"id": 5, "error": error(107, "bad request")},
        {"id": 6, "error": error(107, "bad request")},
        {"id": 7, "error": error(103, "permission denied")},
        {"id": 8, "error": error(108, "not available")},
        {"id": 9, "subscribe": {}},
        {"id": 10, "error": error(103, "permission denied")},
    ]
    assert backend.joined() == ["chat:a", "dialog:#42,43"]


@pytest.mark.parametrize("subscribe", [{"channel": ""}, {}, {"channel": "chat:a", "delta": "zstd"}])
async def test_subscribe_bad_requests_close(subscribe: dict[str, Any]) -> None:
    session, _, _ = await connected()
    exc = await closed_with(
        session, {"id": 2, "subscribe": {"channel": "chat:ok"}}, {"id": 3, "subscribe": subscribe}
    )
    assert exc.disconnect.code == 3501
    assert exc.replies == ('{"id":2,"subscribe":{}}',)  # sent before the close


async def test_channel_limit() -> None:
    session, _, _ = await connected()
    commands = [{"id": i + 2, "subscribe": {"channel": f"chat:{i}"}} for i in range(129)]
    replies = await send(session, *commands)
    assert all("subscribe" in r for r in replies[:128])
    assert replies[128] == {"id": 130, "error": error(106, "limit exceeded")}
    assert len(session.channels) == 128


async def test_subscription_tokens() -> None:
    session, backend, _ = await connected()
    good = token(sub="42", channel="$closed:a", exp=T0 + 300, data={"w": 1}, info={"r": 1})
    replies = await send(
        session,
        {"id": 2, "subscribe": {"channel": "$closed:a", "token": good}},
        {
            "id": 3,
            "subscribe": {
                "channel": "closed:b",
                "token": token(sub="42", channel="closed:b", exp=T0 - 1),
            },
        },
        {"id": 4, "subscribe": {"channel": "closed:c", "token": "junk"}},
        {
            "id": 5,
            "subscribe": {
                "channel": "closed:d",
                "token": token(sub="42", channel="closed:d", expire_at=int(T0) - 1),
            },
        },
    )
    assert replies == [
        {"id": 2, "subscribe": {"expires": True, "ttl": 300, "data": {"w": 1}}},
        {"id": 3, "error": error(109, "token expired")},
        {"id": 4, "error": error(103, "permission denied")},
        {"id": 5, "error": error(110, "expired")},
    ]
    # The token's info is this client's chan_info in its publications there.
    backend.publish_answer = True
    await send(session, {"id": 6, "publish": {"channel": "$closed:a", "data": 1}})
    assert backend.calls[-1][3]["chan_info"] == {"r": 1}


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "42", "channel": "closed:other"},
        {"sub": "43", "channel": "closed:a"},
        {"sub": "42", "channel": "closed:a", "client": "someone-else"},
    ],
)
async def test_subscription_token_mismatch_closes_3500(claims: dict[str, Any]) -> None:
    session, _, _ = await connected()
    exc = await closed_with(
        session, {"id": 2, "subscribe": {"channel": "closed:a", "token": token(**claims)}}
    )
    assert exc.disconnect.code == 3500


async def test_subscribe_hook() -> None:
    session, backend, _ = await connected()
    backend.subscribe_answer = True
    replies = await send(
        session,
        {"id": 2, "subscribe": {"channel": "closed:x", "data": 5}},
        {"id": 3, "subscribe": {"channel": "dialog:#9"}},
    )
    assert replies[0] == {"id": 2, "subscribe": {}}
    assert replies[1]["error"]["code"] == 103  # the hook is not asked for user-limited
    assert [c for c in backend.calls if c[0] == "authorize_subscribe"] == [
        ("authorize_subscribe", "42", "closed:x", 5)
    ]
    backend.subscribe_answer = Error(4004, "not today")
    replies = await send(session, {"id": 4, "subscribe": {"channel": "chat:y"}})
    assert replies == [{"id": 4, "error": error(4004, "not today")}]


async def test_unsubscribe() -> None:
    session, backend, _ = await connected()
    replies = await send(
        session,
        {"id": 2, "subscribe": {"channel": "chat:a"}},
        {"id": 3, "unsubscribe": {"channel": "chat:a"}},
        {"id": 4, "unsubscribe": {"channel": "chat:never"}},
    )
    assert replies[1:] == [{"id": 3, "unsubscribe": {}}, {"id": 4, "unsubscribe": {}}]
    assert backend.calls[-1] == ("unsubscribe", "chat:a") and session.channels == frozenset()
    assert (await closed_with(session, {"id": 5, "unsubscribe": {}})).disconnect.code == 3501


# -- publish, rpc, send, presence, history -----------------------------------------------


async def test_publish() -> None:
    session, backend, _ = await connected(info={"name": "Ann"})
    replies = await send(
        session,
        {"id": 2, "publish": {"channel": "chat:a", "data": {"t": 1}}},  # not subscribed
        {"id": 3, "subscribe": {"channel": "chat:a"}},
        {"id": 4, "publish": {"channel": "chat:a", "data": {"t": 2}}},
        {"id": 5, "publish": {"channel": "chat:a"}},  # no data
        {"id": 6, "publish": {"channel": "nope:a", "data": 1}},
        {"id": 7, "publish": {"channel": "chat:a", "data": 1, "type": 1}},
    )
    assert [r.get("error", {}).get("code") for r in replies] == [103, None, None, 107, 102, 108]
    assert replies[2] == {"id": 4, "publish": {}}
    published = [c for c in backend.calls if c[0] == "publish"]
    assert published == [
        (
            "publish",
            "chat:a",
            {"t": 2},
            {"user": "42", "client": CLIENT, "conn_info": {"name": "Ann"}, "chan_info": None},
        )
    ]
    assert (await closed_with(session, {"id": 8, "publish": {"data": 1}})).disconnect.code == 3501


async def test_publish_hook_decides_first() -> None:
    session, backend, _ = await connected()
    backend.publish_answer = True
    assert await send(session, {"id": 2, "publish": {"channel": "closed:a", "data": None}}) == [
        {"id": 2, "publish": {}}
    ]
    backend.publish_answer = False
    replies = await send(session, {"id": 3, "publish": {"channel": "chat:a", "data": 1}})
    assert replies[0]["error"]["code"] == 103


async def test_rpc() -> None:
    session, backend, _ = await connected()
    assert await send(session, {"id": 2, "rpc": {"method": "echo", "data": [1]}}) == [
        {"id": 2, "rpc": {"data": {"echo": [1]}}}
    ]
    backend.rpc_error = Error(104)
    assert await send(session, {"id": 3, "rpc": {"method": "nope"}}) == [
        {"id": 3, "error": error(104, "method not found")}
    ]
    backend.rpc_error = KeyError("bug")
    assert await send(session, {"id": 4, "rpc": {"method": "x"}}) == [
        {"id": 4, "error": error(100, "internal server error", True)}
    ]
    backend.rpc_error = DisconnectError(Disconnect(4500, "go away"))
    exc = await closed_with(session, {"id": 5, "rpc": {"method": "x"}})
    assert exc.disconnect == Disconnect(4500, "go away")


async def test_send_has_no_reply() -> None:
    session, backend, _ = await connected()
    assert await session.handle_frame(frame({"send": {"data": {"typing": True}}})) == []
    assert backend.calls[-1] == ("send", "42", {"typing": True})


@pytest.mark.parametrize("method", ["presence", "presence_stats", "history"])
async def test_presence_and_history_not_available_yet(method: str) -> None:
    session, _, _ = await connected()
    replies = await send(
        session, {"id": 2, method: {"channel": "chat:a"}}, {"id": 3, method: {"channel": "nope:a"}}
    )
    assert replies == [
        {"id": 2, "error": error(108, "not available")},
        {"id": 3, "error": error(102, "unknown channel")},
    ]
    assert (await closed_with(session, {"id": 4, method: {}})).disconnect.code == 3501


async def test_malformed_frame_after_connect() -> None:
    session, _, _ = await connected()
    for text in ("not json", "[]", '{"id":9,"frobnicate":{}}', '{"id":9,"ping":{}}', ""):
        with pytest.raises(DisconnectError) as caught:
            await session.handle_frame(text)
        assert caught.value.disconnect.code == 3501


# -- refresh ----------------------------------------------------------------------------


async def test_refresh() -> None:
    session, _, clock = await connected(exp=T0 + 60)
    clock.now = T0 + 50
    replies = await send(
        session, {"id": 2, "refresh": {"token": token(sub="42", exp=T0 + 3600, info={"v": 2})}}
    )
    assert replies == [{"id": 2, "refresh": {"client": CLIENT, "expires": True, "ttl": 3550}}]
    assert session.expire_at == T0 + 3600 and session.info == {"v": 2}
    assert session.expired(T0 + 3600 + 24) is None
    # A token without expiry ends the expiry.
    await send(session, {"id": 3, "refresh": {"token": token(sub="42")}})
    assert session.expire_at is None


@pytest.mark.parametrize(
    ("refresh", "code"),
    [
        ({"token": ""}, 3501),
        ({}, 3501),
        ({"token": "junk"}, 3500),
        ({"token": jwt.encode({"sub": "43"}, SECRET, algorithm="HS256")}, 3500),
        ({"token": jwt.encode({"sub": "42", "exp": T0 - 1}, SECRET, algorithm="HS256")}, 3005),
        (
            {"token": jwt.encode({"sub": "42", "channels": ["news:z"]}, SECRET, algorithm="HS256")},
            3010,
        ),
    ],
)
async def test_refresh_closes(refresh: dict[str, Any], code: int) -> None:
    session, _, _ = await connected(exp=T0 + 60)
    exc = await closed_with(session, {"id": 2, "refresh": refresh})
    assert exc.disconnect.code == code


async def test_refresh_errors() -> None:
    session, _, _ = await connected(exp=T0 + 60, channels=["news:a"])
    replies = await send(
        session,
        {
            "id": 2,
            "refresh": {"token": token(sub="42", expire_at=int(T0) - 1, channels=["news:a"])},
        },
        {"id": 3, "refresh": {"token": token(sub="42", channels=["news:a", "nope:x"])}},
        {"id": 4, "refresh": {"token": token(sub="42", channels=["news:a"], exp=T0 + 99)}},
    )
    assert replies == [
        {"id": 2, "error": error(110, "expired")},
        {"id": 3, "error": error(102, "unknown channel")},
        {"id": 4, "refresh": {"client": CLIENT, "expires": True, "ttl": 99}},
    ]
    # A token that dropped a server-side channel: reconnect to take the new set.
    exc = await closed_with(session, {"id": 5, "refresh": {"token": token(sub="42")}})
    assert exc.disconnect.code == 3010


# -- sub_refresh ------------------------------------------------------------------------


async def test_sub_refresh() -> None:
    session, _, clock = await connected()
    sub = token(sub="42", channel="closed:a", exp=T0 + 60)
    await send(session, {"id": 2, "subscribe": {"channel": "closed:a", "token": sub}})
    clock.now = T0 + 55
    replies = await send(
        session,
        {
            "id": 3,
            "sub_refresh": {
                "channel": "closed:a",
                "token": token(sub="42", channel="closed:a", exp=T0 + 600),
            },
        },
        {"id": 4, "sub_refresh": {"channel": "closed:zz", "token": sub}},
        {"id": 5, "sub_refresh": {"channel": "closed:a"}},
        {
            "id": 6,
            "sub_refresh": {
                "channel": "closed:a",
                "token": token(sub="42", channel="closed:a", exp=T0 + 600, expire_at=int(T0) - 1),
            },
        },
    )
    assert replies == [
        {"id": 3, "sub_refresh": {"expires": True, "ttl": 545}},
        {"id": 4, "error": error(103, "permission denied")},
        {"id": 5, "error": error(107, "bad request")},
        {"id": 6, "error": error(110, "expired")},
    ]
    assert session.next_deadline() == pytest.approx(T0 + 25)  # first ping comes first
    assert await session.expire_subscriptions(T0 + 600) == []  # refreshed: not yet


@pytest.mark.parametrize(
    ("claims", "code"),
    [
        ({"sub": "42", "channel": "closed:a", "exp": T0 - 1}, 3005),
        ({"sub": "42", "channel": "closed:b"}, 3500),
        ({"sub": "9", "channel": "closed:a"}, 3500),
    ],
)
async def test_sub_refresh_closes(claims: dict[str, Any], code: int) -> None:
    session, _, _ = await connected()
    sub = token(sub="42", channel="closed:a")
    await send(session, {"id": 2, "subscribe": {"channel": "closed:a", "token": sub}})
    exc = await closed_with(
        session, {"id": 3, "sub_refresh": {"channel": "closed:a", "token": token(**claims)}}
    )
    assert exc.disconnect.code == code


async def test_sub_refresh_of_server_side_subscription() -> None:
    session, _, _ = await connected(channels=["news:a"])
    exc = await closed_with(session, {"id": 2, "sub_refresh": {"channel": "news:a", "token": "x"}})
    assert exc.disconnect.code == 3501
    exc = await closed_with(session, {"id": 3, "sub_refresh": {"channel": "", "token": "x"}})
    assert exc.disconnect.code == 3501


# -- ping, pong, expiry -----------------------------------------------------------------


async def test_ping_pong() -> None:
    session, _, _ = make()
    assert session.ping_due(T0 + 100) is None  # not connected: no pings
    assert session.next_deadline() is None
    await send(session, {"id": 1, "connect": {"token": token(sub="42")}})
    assert session.next_deadline() == T0 + 25  # rand() = 1: a whole interval
    assert session.ping_due(T0 + 24) is None
    assert session.ping_due(T0 + 25) == "{}"
    assert session.ping_due(T0 + 26) is None
    assert session.next_deadline() == T0 + 35  # the pong deadline
    assert session.pong_overdue(T0 + 34) is None
    assert await session.handle_frame("{}") == []  # the pong
    assert session.pong_overdue(T0 + 100) is None
    assert session.next_deadline() == T0 + 50
    # A pong nobody asked for.
    assert (await closed_with(session, {})).disconnect == Disconnect(3501, "bad request")


async def test_no_pong_closes_3012() -> None:
    session, _, _ = await connected()
    assert await session.tick(T0 + 25) == ["{}"]
    assert await session.tick(T0 + 30) == []
    with pytest.raises(DisconnectError) as caught:
        await session.tick(T0 + 35)
    assert caught.value.disconnect == Disconnect(3012, "no pong")
    assert caught.value.disconnect.reconnect


async def test_first_ping_is_jittered_and_pong_optional() -> None:
    backend = FakeBackend()
    session = Session(
        RULES,
        TokenVerifier(hmac_secret=SECRET),
        backend,
        client_id=CLIENT,
        clock=lambda: T0,
        rand=lambda: 0.0,
        options=SessionOptions(pong_timeout=0),
    )
    replies = await send(session, {"id": 1, "connect": {"token": token(sub="1")}})
    assert replies[0]["connect"]["ping"] == 25 and "pong" not in replies[0]["connect"]
    assert session.next_deadline() == T0 + 12.5
    assert session.ping_due(T0 + 12.5) == "{}"
    assert session.pong_overdue(T0 + 1000) is None
    session = Session(
        RULES,
        TokenVerifier(hmac_secret=SECRET),
        backend,
        clock=lambda: T0,
        options=SessionOptions(ping_interval=0),
    )
    replies = await send(session, {"id": 1, "connect": {"token": token(sub="1")}})
    assert "ping" not in replies[0]["connect"] and session.next_deadline() is None
    with pytest.raises(ValueError, match="whole seconds"):
        SessionOptions(ping_interval=0.5)


async def test_connection_expiry() -> None:
    session, _, _ = await connected(exp=T0 + 60)
    assert session.next_deadline() == T0 + 25  # the ping; the expiry closes at +85
    assert session.expired(T0 + 84) is None
    assert session.expired(T0 + 85) == Disconnect(3005, "connection expired")
    assert session.ping_due(T0 + 25) == "{}"
    assert await session.handle_frame("{}") == []  # pong: only the expiry is left
    with pytest.raises(DisconnectError) as caught:
        await session.tick(T0 + 85)
    assert caught.value.disconnect.code == 3005


async def test_subscription_expiry_unsubscribes_with_2501() -> None:
    session, backend, _ = await connected()
    sub = token(sub="42", channel="closed:a", expire_at=int(T0) + 60)
    await send(
        session,
        {"id": 2, "subscribe": {"channel": "closed:a", "token": sub}},
        {"id": 3, "subscribe": {"channel": "chat:b"}},
    )
    assert session.next_deadline() == T0 + 25  # the ping
    session.ping_due(T0 + 25)
    await session.handle_frame("{}")
    assert session.next_deadline() == T0 + 50  # the next ping, then the sub at +85
    assert await session.expire_subscriptions(T0 + 84) == []
    lines = await session.tick(T0 + 85)
    assert lines == [
        '{"push":{"channel":"closed:a","unsubscribe":'
        '{"code":2501,"reason":"subscription expired"}}}',
        "{}",
    ]
    assert backend.calls[-1] == ("unsubscribe", "closed:a")
    assert session.channels == {"chat:b"}


async def test_close_leaves_every_channel() -> None:
    session, backend, _ = await connected(channels=["news:a"])
    await send(session, {"id": 2, "subscribe": {"channel": "chat:b"}})
    await session.close()
    assert sorted(c[1] for c in backend.calls if c[0] == "unsubscribe") == ["chat:b", "news:a"]
    assert not session.connected and session.next_deadline() is None
    assert (await closed_with(session, {})).disconnect.code == 3501


async def test_client_id_defaults_to_uuid4() -> None:
    session = Session(RULES, TokenVerifier(), FakeBackend())
    assert len(session.client_id) == 36 and session.client_id[14] == "4"


@pytest.mark.parametrize(("fraction", "ttl"), [(0.0, 60), (0.2, 60), (0.99, 60)])
async def test_ttl_counts_whole_seconds_as_go_and_is_never_left_out(
    fraction: float, ttl: int
) -> None:
    session, _, clock = make()
    clock.now = T0 + fraction
    (reply,) = await send(session, {"id": 1, "connect": {"token": token(sub="1", exp=T0 + 60)}})
    assert reply["connect"]["ttl"] == ttl
    # Under a second left: still 1, never 0 (an omitted ttl breaks centrifuge-python).
    clock.now = T0 + 59.7
    (reply,) = await send(session, {"id": 2, "refresh": {"token": token(sub="1", exp=T0 + 60)}})
    assert reply["refresh"] == {
        "client": session.client_id,
        "expires": True,
        "ttl": 1,
    }


def test_client_ids_are_random_uuid4_strings() -> None:
    ids = {
        Session(RULES, TokenVerifier(hmac_secret=SECRET), FakeBackend()).client_id
        for _ in range(2000)
    }
    assert len(ids) == 2000
    for client_id in ids:
        parsed = uuid.UUID(client_id)
        assert str(parsed) == client_id
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


class HoldingBackend(FakeBackend):
    """Publications arrive while each subscribe joins: their pushes follow its reply."""

    async def subscribe(self, channel: str, join_leave: bool = False) -> list[str]:  # type: ignore[override]
        await super().subscribe(channel, join_leave)
        return [f'{{"push":{{"channel":"{channel}","pub":{{"data":{n}}}}}}}' for n in (1, 2)]


async def test_with_emit_each_reply_goes_out_with_the_pushes_that_follow_it() -> None:
    backend = HoldingBackend()
    session = Session(
        RULES, TokenVerifier(hmac_secret=SECRET), backend, client_id=CLIENT, clock=Clock()
    )
    sent: list[str] = []

    def emit(text: str) -> bool:
        sent.append(text)
        return True

    text = frame(
        {"id": 1, "connect": {"token": token(sub="42")}},
        {"id": 2, "subscribe": {"channel": "chat:a"}},
        {"send": {"data": 1}},  # no reply: nothing sent for it
        {"id": 3, "subscribe": {"channel": "chat:b"}},
    )
    assert await session.handle_frame(text, emit) == []  # all of it went through emit
    frames = [[json.loads(line) for line in each.split("\n")] for each in sent]
    assert [[line.get("id") for line in each] for each in frames] == [
        [1],
        [2, None, None],
        [3, None, None],
    ]
    assert [line["push"]["pub"]["data"] for line in frames[1][1:]] == [1, 2]
    assert {line["push"]["channel"] for line in frames[2][1:]} == {"chat:b"}


async def test_emit_answering_false_ends_the_frame() -> None:
    session, backend, _ = make()
    sent: list[str] = []

    def emit(text: str) -> bool:
        sent.append(text)
        return False  # the client is closing

    text = frame(
        {"id": 1, "connect": {"token": token(sub="42")}},
        {"id": 2, "subscribe": {"channel": "chat:a"}},
    )
    assert await session.handle_frame(text, emit) == []
    assert len(sent) == 1 and json.loads(sent[0])["id"] == 1
    assert backend.joined() == []  # the subscribe never ran


async def test_without_emit_pushes_follow_their_reply_in_the_lines() -> None:
    backend = HoldingBackend()
    session = Session(
        RULES, TokenVerifier(hmac_secret=SECRET), backend, client_id=CLIENT, clock=Clock()
    )
    lines = await session.handle_frame(
        frame(
            {"id": 1, "connect": {"token": token(sub="42")}},
            {"id": 2, "subscribe": {"channel": "chat:a"}},
        )
    )
    assert [json.loads(line).get("id") for line in lines] == [1, 2, None, None]


def test_a_session_keeps_no_instance_dict() -> None:
    session, _, _ = make()
    with pytest.raises(AttributeError):
        session.__dict__  # noqa: B018
