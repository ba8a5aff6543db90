"""The Pusher protocol 7 at ``/app/{key}`` under real Hypercorn, with a plain WebSocket
client sending what pusher-js sends and reading what it reads."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime import create_app, get_host
from realtime_broker import get_broker
from realtime_pusher.session import MAX_SUBSCRIPTIONS
from realtime_pusher.signing import channel_auth, user_auth

from .test_fanout import hypercorn

KEY, SECRET = "app-key", "app-secret"
APPS = [
    {"id": "1", "key": KEY, "secret": SECRET, "enable_client_messages": True},
    {"id": "2", "key": "quiet-key", "secret": "quiet-secret"},
    {"id": "3", "key": "fast-key", "secret": "fast-secret", "activity_timeout": 1},
    {"id": "4", "key": "small-key", "secret": "small-secret", "max_presence_members": 2},
]


def served_app(tmp_path: Path, **settings: Any) -> Quart:
    return create_app(tmp_path, settings={"pusher_apps": APPS, **settings})


@pytest.fixture(params=["fast-path", "plain"])
async def port(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[int]:
    app = served_app(tmp_path, fast_path=request.param == "fast-path")
    async with hypercorn(app) as bound:
        yield bound


class Pusher:
    """A Pusher client by hand: events out, events in (``data`` strings parsed once
    more, as pusher-js does)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.socket_id = ""

    async def send(self, event: str, data: Any = None, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event, "data": data if data is not None else {}}
        if channel is not None:
            message["channel"] = channel
        await self.ws.send(json.dumps(message))

    async def raw(self, timeout: float = 5.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        message: dict[str, Any] = json.loads(text)
        return message

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next event, ``data`` decoded as pusher-js decodes it."""
        message = await self.raw(timeout)
        if isinstance(message.get("data"), str):
            with suppress(ValueError):
                message["data"] = json.loads(message["data"])
        return message

    async def until(self, event: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = await self.next()
                if message["event"] == event:
                    return message

    async def subscribe(
        self, channel: str, secret: str = SECRET, key: str = KEY, **data: Any
    ) -> dict[str, Any]:
        if channel.startswith(("private-", "presence-")) and "auth" not in data:
            data["auth"] = channel_auth(
                key, secret, self.socket_id, channel, data.get("channel_data")
            )
        await self.send("pusher:subscribe", {"channel": channel, **data})
        return await self.next()

    async def closed(self, timeout: float = 5.0) -> tuple[int, str]:
        """Read until the close: its code and reason."""

        async def drain() -> None:
            while True:
                await self.ws.recv()

        with pytest.raises(ConnectionClosed) as info:
            await asyncio.wait_for(drain(), timeout)
        rcvd = info.value.rcvd
        assert rcvd is not None
        return rcvd.code, rcvd.reason


@asynccontextmanager
async def pusher(
    port: int, key: str = KEY, query: str = "protocol=7&client=js&version=8.4.0", **kwargs: Any
) -> AsyncIterator[Pusher]:
    async with connect(f"ws://127.0.0.1:{port}/app/{key}?{query}", **kwargs) as ws:
        client = Pusher(ws)
        established = await client.raw()
        assert established["event"] == "pusher:connection_established", established
        client.socket_id = json.loads(established["data"])["socket_id"]
        yield client


def presence_data(user_id: Any, info: Any = None) -> str:
    data: dict[str, Any] = {"user_id": user_id}
    if info is not None:
        data["user_info"] = info
    return json.dumps(data)


async def test_connection_established_is_what_pusher_js_reads(port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7&client=js&version=8.4.0") as ws:
        message = json.loads(await ws.recv())
        assert message["event"] == "pusher:connection_established"
        assert isinstance(message["data"], str)  # JSON text in a string, as Pusher sends it
        data = json.loads(message["data"])
        assert re.fullmatch(r"\d+\.\d+", data["socket_id"])
        assert data["activity_timeout"] == 120


async def test_socket_ids_differ(port: int) -> None:
    async with pusher(port) as one, pusher(port) as two:
        assert one.socket_id != two.socket_id


async def test_ping_is_answered_with_pong(port: int) -> None:
    async with pusher(port) as client:
        await client.send("pusher:ping")
        assert (await client.next()) == {"event": "pusher:pong", "data": {}}


async def test_unknown_key_closes_4001_and_a_bad_protocol_4007(port: int) -> None:
    async with connect(f"ws://127.0.0.1:{port}/app/nope?protocol=7") as ws:
        client = Pusher(ws)
        error = await client.next()
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4001
        assert (await client.closed())[0] == 4001
    async with connect(f"ws://127.0.0.1:{port}/app/{KEY}?protocol=99") as ws:
        client = Pusher(ws)
        error = await client.next()
        assert error["data"]["code"] == 4007
        assert (await client.closed())[0] == 4007


async def test_a_silent_connection_is_pinged_then_closed_4201(port: int) -> None:
    async with pusher(port, key="fast-key") as client:
        established_timeout = 1
        ping = await client.next(timeout=established_timeout + 3)
        assert ping["event"] == "pusher:ping"
        code, _ = await client.closed(timeout=5)
        assert code == 4201


async def test_a_pong_keeps_the_connection(port: int) -> None:
    async with pusher(port, key="fast-key") as client:
        for _ in range(2):
            ping = await client.next(timeout=4)
            assert ping["event"] == "pusher:ping"
            await client.send("pusher:pong")
        await client.send("pusher:ping")
        assert (await client.until("pusher:pong"))["event"] == "pusher:pong"


async def test_a_public_subscriber_gets_a_broadcast_under_the_default_event(
    tmp_path: Path,
) -> None:
    app = served_app(tmp_path)
    async with hypercorn(app) as port, pusher(port) as client:
        ok = await client.subscribe("news")
        assert ok == {
            "event": "pusher_internal:subscription_succeeded",
            "channel": "news",
            "data": {},
        }
        broker = get_broker(get_host(app))
        await broker.publish("news", "hi")
        message = await client.raw()
        assert message == {"event": "message", "channel": "news", "data": "hi"}
        from realtime_broker import Publication

        await broker.publish("news", Publication('{"a":1}', json=True, event="greet"))
        message = await client.raw()
        assert message == {"event": "greet", "channel": "news", "data": '{"a":1}'}
        await broker.publish("news", b"\x00binary")  # not sent: Pusher has no binary
        await broker.publish("news", "after")
        assert (await client.raw())["data"] == "after"
        # The second app's channels live under "2:" on the bus.
        async with pusher(port, key="quiet-key") as other:
            await other.subscribe("news", secret="quiet-secret", key="quiet-key")
            await broker.publish("2:news", "for two")
            assert await other.raw() == {"event": "message", "channel": "news", "data": "for two"}
            await broker.publish("news", "for one")
            assert (await client.raw())["data"] == "for one"
        # Unsubscribed: nothing more.
        await client.send("pusher:unsubscribe", {"channel": "news"})
        await client.send("pusher:ping")
        assert (await client.next())["event"] == "pusher:pong"
        await broker.publish("news", "gone")
        await client.send("pusher:ping")
        assert (await client.next())["event"] == "pusher:pong"


async def test_private_channels_need_the_right_auth(port: int) -> None:
    async with pusher(port) as client:
        ok = await client.subscribe("private-room")
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        ok = await client.subscribe("private-encrypted-room")
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        bad = await client.subscribe("private-other", secret="wrong")
        assert bad["event"] == "pusher:subscription_error"
        assert bad["channel"] == "private-other"
        assert bad["data"]["type"] == "AuthError" and bad["data"]["status"] == 401
        # Another connection's auth does not do either.
        missing = await client.subscribe("private-x", auth=f"{KEY}:" + "0" * 64)
        assert missing["data"]["status"] == 401


async def test_bad_input_gets_errors_never_a_close(port: int) -> None:
    async with pusher(port) as client:
        await client.ws.send("{not json")
        assert (await client.next())["event"] == "pusher:error"
        await client.ws.send("[1, 2]")
        assert (await client.next())["event"] == "pusher:error"
        await client.send("pusher:subscribe", "nope")
        assert (await client.next())["event"] == "pusher:error"
        bad = await client.subscribe("bad name!")
        assert bad["event"] == "pusher:subscription_error"
        assert (await client.subscribe("x" * 201))["event"] == "pusher:error"
        assert (await client.subscribe("x" * 200))["event"] == (
            "pusher_internal:subscription_succeeded"
        )
        await client.send("pusher:unsubscribe", 5)
        assert (await client.next())["event"] == "pusher:error"
        # Someone else's user channel.
        bad = await client.subscribe("#server-to-user-7")
        assert bad["data"]["type"] == "AuthError"
        await client.send("pusher:ping")
        assert (await client.next())["event"] == "pusher:pong"


async def test_subscriptions_are_bounded_below_the_incoming_burst(port: int) -> None:
    """As many as pusher-js resubscribes to at once on a reconnect fit the hub's
    default burst of incoming frames, a signin beside them; one more is refused."""
    async with pusher(port) as client:
        for number in range(MAX_SUBSCRIPTIONS):
            await client.send("pusher:subscribe", {"channel": f"c{number}"})
        await client.send("pusher:ping")
        for _ in range(MAX_SUBSCRIPTIONS):
            assert (await client.next())["event"] == "pusher_internal:subscription_succeeded"
        assert (await client.next())["event"] == "pusher:pong"  # still connected
        over = await client.subscribe("one-more")
        assert over["event"] == "pusher:subscription_error"
        assert over["data"]["type"] == "LimitReached"
        # Subscribing again to one already in is fine.
        assert (await client.subscribe("c5"))["event"] == "pusher_internal:subscription_succeeded"


async def test_an_oversized_frame_closes_with_the_hubs_code(port: int) -> None:
    async with pusher(port, max_size=None) as client:
        await client.ws.send(json.dumps({"event": "client-x", "data": "x" * 70_000}))
        code, _ = await client.closed()
        assert code == 1009


async def test_presence_members_once_per_user(port: int) -> None:
    channel = "presence-room"
    async with pusher(port) as alice, pusher(port) as bob, pusher(port) as bob2:
        ok = await alice.subscribe(channel, channel_data=presence_data("alice", {"name": "A"}))
        assert ok["event"] == "pusher_internal:subscription_succeeded"
        assert ok["data"] == {
            "presence": {"ids": ["alice"], "hash": {"alice": {"name": "A"}}, "count": 1}
        }
        ok = await bob.subscribe(channel, channel_data=presence_data(42, {"name": "B"}))
        presence = ok["data"]["presence"]
        assert sorted(presence["ids"]) == ["42", "alice"] and presence["count"] == 2
        assert presence["hash"]["42"] == {"name": "B"}
        added = await alice.next()
        assert added == {
            "event": "pusher_internal:member_added",
            "channel": channel,
            "data": {"user_id": "42", "user_info": {"name": "B"}},
        }
        # Bob's second connection: no member_added for anyone.
        ok = await bob2.subscribe(channel, channel_data=presence_data("42", {"name": "B"}))
        assert ok["data"]["presence"]["count"] == 2
        # Bob's first leaves: he is still there.
        await bob.send("pusher:unsubscribe", {"channel": channel})
        await bob.send("pusher:ping")
        assert (await bob.next())["event"] == "pusher:pong"
        # ... and his last: one member_removed.
        await bob2.ws.close()
        removed = await alice.next()
        assert removed == {
            "event": "pusher_internal:member_removed",
            "channel": channel,
            "data": {"user_id": "42"},
        }
        # Nothing in between: the next thing alice hears is her own pong.
        await alice.send("pusher:ping")
        assert (await alice.next())["event"] == "pusher:pong"


async def test_presence_auth_covers_channel_data(port: int) -> None:
    async with pusher(port) as client:
        auth = channel_auth(KEY, SECRET, client.socket_id, "presence-x", presence_data("a"))
        bad = await client.subscribe("presence-x", auth=auth, channel_data=presence_data("b"))
        assert bad["data"]["type"] == "AuthError"
        bad = await client.subscribe("presence-x", channel_data=json.dumps({"user_info": {}}))
        assert bad["data"]["type"] == "AuthError"
        bad = await client.subscribe("presence-x")
        assert bad["data"]["type"] == "AuthError"  # no channel_data, not signed in
        big = await client.subscribe("presence-x", channel_data=presence_data("a", "x" * 3000))
        assert big["data"]["type"] == "LimitReached"


async def test_presence_channels_hold_a_bounded_number_of_members(port: int) -> None:
    """Pusher's limit (100 by default, per app): a member past it is refused, so what
    subscription_succeeded lists (and each subscribe costs) stays bounded; a user
    already in gets in again on another connection."""
    channel, key, secret = "presence-full", "small-key", "small-secret"
    async with (
        pusher(port, key) as a,
        pusher(port, key) as b,
        pusher(port, key) as c,
        pusher(port, key) as b2,
    ):
        for client, user in ((a, "a"), (b, "b")):
            ok = await client.subscribe(channel, secret, key, channel_data=presence_data(user))
            assert ok["event"] == "pusher_internal:subscription_succeeded"
        refused = await c.subscribe(channel, secret, key, channel_data=presence_data("c"))
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["type"] == "LimitReached"
        ok = await b2.subscribe(channel, secret, key, channel_data=presence_data("b"))
        assert ok["data"]["presence"]["count"] == 2
        await a.ws.close()
        assert (await b.next())["event"] == "pusher_internal:member_removed"
        ok = await c.subscribe(channel, secret, key, channel_data=presence_data("c"))
        assert ok["data"]["presence"]["count"] == 2


async def test_client_events_reach_the_others_with_user_id(port: int) -> None:
    channel = "presence-chat"
    async with pusher(port) as alice, pusher(port) as bob:
        await alice.subscribe(channel, channel_data=presence_data("alice"))
        await bob.subscribe(channel, channel_data=presence_data("bob"))
        await alice.until("pusher_internal:member_added")
        await alice.send("client-typing", {"on": True}, channel)
        event = await bob.next()
        assert event == {
            "event": "client-typing",
            "channel": channel,
            "data": {"on": True},
            "user_id": "alice",
        }
        # Not back to the sender: her next is her pong.
        await alice.send("pusher:ping")
        assert (await alice.next())["event"] == "pusher:pong"
        # Private channels: no user_id.
        await alice.subscribe("private-p")
        await bob.subscribe("private-p")
        await bob.send("client-x", "text", "private-p")
        assert await alice.raw() == {"event": "client-x", "channel": "private-p", "data": "text"}


async def test_client_events_refused(port: int) -> None:
    async with pusher(port) as client:
        await client.subscribe("public")
        await client.send("client-x", {}, "public")
        error = await client.next()
        assert error["event"] == "pusher:error" and error["data"]["code"] == 4301
        await client.send("client-x", {}, "private-not-subscribed")
        assert (await client.next())["data"]["code"] == 4301
        await client.subscribe("private-p")
        await client.send("client-x", "x" * (10 * 1024 + 1), "private-p")
        assert (await client.next())["data"]["code"] == 4301
        await client.send("client-" + "x" * 200, {}, "private-p")
        assert (await client.next())["data"]["code"] == 4301
    async with pusher(port, key="quiet-key") as quiet:
        await quiet.subscribe("private-p", secret="quiet-secret", key="quiet-key")
        await quiet.send("client-x", {}, "private-p")
        error = await quiet.next()
        assert error["data"]["code"] == 4301 and "not enabled" in error["data"]["message"]


async def test_client_events_are_rate_limited(port: int) -> None:
    async with pusher(port) as alice, pusher(port) as bob:
        await alice.subscribe("private-r")
        await bob.subscribe("private-r")
        for number in range(15):
            await alice.send("client-n", {"n": number}, "private-r")
        errors = 0
        for _ in range(5):
            message = await alice.next()
            assert message["event"] == "pusher:error" and message["data"]["code"] == 4301
            errors += 1
        received = [(await bob.next())["data"]["n"] for _ in range(10)]
        assert received == list(range(10))
        assert errors == 5


async def test_signin_and_events_to_the_user(tmp_path: Path) -> None:
    app = served_app(tmp_path)
    async with hypercorn(app) as port, pusher(port) as client:
        user_data = json.dumps({"id": "u1", "user_info": {"name": "U"}})
        await client.send(
            "pusher:signin",
            {"user_data": user_data, "auth": user_auth(KEY, SECRET, client.socket_id, user_data)},
        )
        ok = await client.raw()
        assert ok["event"] == "pusher:signin_success"
        assert json.loads(ok["data"]) == {"user_data": user_data}
        sub = await client.subscribe("#server-to-user-u1")
        assert sub["event"] == "pusher_internal:subscription_succeeded"
        from realtime_broker import Publication
        from realtime_pusher.node import get_node

        node = get_node(get_host(app))
        channel = node.user_channel(node.apps.by_id["1"], "u1")
        await get_broker(get_host(app)).publish(
            channel, Publication('{"x":1}', json=True, event="note")
        )
        assert await client.raw() == {
            "event": "note",
            "channel": "#server-to-user-u1",
            "data": '{"x":1}',
        }
        # A presence channel as the signed-in user, without channel_data.
        ok = await client.subscribe("presence-u")
        assert ok["data"]["presence"] == {"ids": ["u1"], "hash": {"u1": {"name": "U"}}, "count": 1}
        # Terminated: closed 4009.
        await node.terminate_user(node.apps.by_id["1"], "u1")
        code, _ = await client.closed()
        assert code == 4009


async def test_a_signed_in_members_info_is_bounded_too(port: int) -> None:
    async with pusher(port) as client:
        user_data = json.dumps({"id": "big", "user_info": {"bio": "x" * 3000}})
        await client.send(
            "pusher:signin",
            {"user_data": user_data, "auth": user_auth(KEY, SECRET, client.socket_id, user_data)},
        )
        assert (await client.raw())["event"] == "pusher:signin_success"
        big = await client.subscribe("presence-signed")
        assert big["event"] == "pusher:subscription_error"
        assert big["data"]["type"] == "LimitReached"


async def test_a_bad_signin_closes_4009(port: int) -> None:
    async with pusher(port) as client:
        await client.send("pusher:signin", {"user_data": '{"id":"u"}', "auth": f"{KEY}:bad"})
        code, _ = await client.closed()
        assert code == 4009


async def test_the_origin_check_covers_pusher_handshakes(port: int) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with connect(
            f"ws://127.0.0.1:{port}/app/{KEY}?protocol=7",
            origin="http://evil.example",  # type: ignore[arg-type]
        ):
            pass
    assert info.value.response.status_code == 403
    async with pusher(port, origin=f"http://127.0.0.1:{port}") as client:
        assert client.socket_id


async def test_the_default_event_is_a_setting(tmp_path: Path) -> None:
    app = served_app(tmp_path, pusher_default_event="update")
    async with hypercorn(app) as port, pusher(port) as client:
        await client.subscribe("news")
        await get_broker(get_host(app)).publish("news", "hi")
        assert await client.raw() == {"event": "update", "channel": "news", "data": "hi"}


async def test_a_publication_is_encoded_once_for_every_subscriber_of_an_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_pusher.node import PusherFormat

    calls: list[str] = []
    encode = PusherFormat.encode

    def counted(self: PusherFormat, channel: str, publication: Any) -> str | None:
        calls.append(channel)
        return encode(self, channel, publication)

    monkeypatch.setattr(PusherFormat, "encode", counted)
    app = served_app(tmp_path)
    async with (
        hypercorn(app) as port,
        pusher(port) as one,
        pusher(port) as two,
        pusher(port) as three,
    ):
        for client in (one, two, three):
            await client.subscribe("news")
        await get_broker(get_host(app)).publish("news", "hi")
        for client in (one, two, three):
            assert (await client.raw())["data"] == "hi"
        assert calls == ["news"]
