"""The Centrifuge protocol's own SDKs, unchanged, against a real server.

centrifuge-python 0.7 in this process, centrifuge-js 5 in Node (tests/node/client.mjs,
driven through tests/sdk.py). Tokens come from a drop-in script calling the server's
``connection_token()`` and ``subscription_token()``, or from PyJWT with a configured
secret; publications from a script's ``broadcast()`` and from other clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from centrifuge import ReplyError

from ..conftest import RedisServer, Server, eventually, start_caddy
from ..sdk import (
    NodeClient,
    PyClient,
    centrifuge_url,
    channel_config,
    drain,
    fetch_token,
    next_item,
    token_script,
)

#: A script publishing ``{"channel": ..., "data": ...}`` (a JSON body) with broadcast().
PUBLISH_SCRIPT = """\
body = request.json
response.json({"delivered": broadcast(body["data"], channel=body["channel"])})
"""


@pytest.fixture
def scripts(app_dir: Path) -> Path:
    """The app dir with ``token.py`` and ``publish.py`` (scripts load per request)."""
    token_script(app_dir)
    (app_dir / "publish.py").write_text(PUBLISH_SCRIPT)
    return app_dir


@pytest.fixture
def sdk_server(server: Server, scripts: Path) -> Server:
    """The conftest ``server`` (both fan-out modes, default channel rules) with the scripts."""
    assert server.app_dir == scripts
    return server


def publish(server: Server, channel: str, data: object) -> int:
    response = httpx.post(
        server.url + "/publish.py", json={"channel": channel, "data": data}, timeout=5
    )
    response.raise_for_status()
    delivered: int = response.json()["delivered"]
    return delivered


SECRET = "test-secret-for-the-sdk-tests-0123456789"


@pytest.fixture
def configured_server(scripts: Path, tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """``start(toml)``: a server with that realtime.toml plus a known HMAC secret."""
    started: list[Server] = []

    def start(config: str) -> Server:
        path = tmp_path / "realtime.toml"
        path.write_text(f'token_hmac_secret = "{SECRET}"\n' + config)
        server = Server(scripts, "--config", str(path), "--script-timeout", "5").start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def mint(user: str, expire_in: float = 3600, **claims: object) -> str:
    return jwt.encode(
        {"sub": user, "exp": int(time.time() + expire_in), **claims}, SECRET, algorithm="HS256"
    )


# -- centrifuge-python -----------------------------------------------------------------


async def test_python_clients_get_script_broadcasts_and_each_others_posts(
    sdk_server: Server,
) -> None:
    url = centrifuge_url(sdk_server.url)
    alice = PyClient(url, token=fetch_token(sdk_server.url, user="alice"))
    bob = PyClient(url, token=fetch_token(sdk_server.url, user="bob"))
    try:
        for client in (alice, bob):
            connected = await client.connect()
            assert connected.client
        alice_room = await alice.subscribe("chat:room1")
        bob_room = await bob.subscribe("chat:room1")

        assert publish(sdk_server, "chat:room1", {"text": "from a script"}) == 2
        for events in (alice_room, bob_room):
            ctx = await next_item(events.publications)
            assert ctx.pub.data == {"text": "from a script"}
            assert ctx.pub.info is None  # the server published it, no client did

        sub, _ = bob.subs["chat:room1"]
        await sub.publish({"text": "hi alice"})
        for events in (alice_room, bob_room):
            ctx = await next_item(events.publications)
            assert ctx.pub.data == {"text": "hi alice"}
            assert ctx.pub.info is not None and ctx.pub.info.user == "bob"
    finally:
        await alice.close()
        await bob.close()


async def test_python_presence_and_joins_and_leaves_with_the_sdks_own_api(
    sdk_server: Server,
) -> None:
    """Chat rooms keep presence by default: centrifuge-python's presence(),
    presence_stats(), on_join and on_leave work unchanged."""
    url = centrifuge_url(sdk_server.url)
    ada = PyClient(url, token=fetch_token(sdk_server.url, user="ada"))
    bob = PyClient(url, token=fetch_token(sdk_server.url, user="bob"))
    try:
        await ada.connect()
        bob_id = (await bob.connect()).client
        room = await ada.subscribe("chat:here")
        assert (await next_item(room.joins)).info.user == "ada"  # its own, first
        await bob.subscribe("chat:here")
        joined = await next_item(room.joins)
        assert (joined.info.user, joined.info.client) == ("bob", bob_id)
        sub, _ = ada.subs["chat:here"]
        presence = await sub.presence()
        assert {info.user for info in presence.clients.values()} == {"ada", "bob"}
        stats = await sub.presence_stats()
        assert (stats.num_clients, stats.num_users) == (2, 2)
        await bob.close()
        left = await next_item(room.leaves)
        assert (left.info.user, left.info.client) == ("bob", bob_id)
        assert (await sub.presence_stats()).num_clients == 1
    finally:
        await ada.close()
        await bob.close()


async def test_python_anonymous_token_reads_top_level_channels_only(sdk_server: Server) -> None:
    url = centrifuge_url(sdk_server.url)
    anonymous = PyClient(url, token=fetch_token(sdk_server.url, user=""))
    try:
        await anonymous.connect()
        news = await anonymous.subscribe("news")
        assert publish(sdk_server, "news", {"headline": "it works"}) == 1
        ctx = await next_item(news.publications)
        assert ctx.pub.data == {"headline": "it works"}

        # Nobody but the server publishes at the top level.
        with pytest.raises(ReplyError) as refused:
            await anonymous.client.publish("news", {"text": "spam"})
        assert refused.value.code == 103
        # chat:* is for signed-in users.
        sub, room = anonymous.subscription("chat:room1")
        await sub.subscribe()
        unsubscribed = await next_item(room.unsubscribed)
        assert (unsubscribed.code, unsubscribed.reason) == (103, "permission denied")
    finally:
        await anonymous.close()


async def test_python_refusals_private_rooms_and_unknown_rpc(sdk_server: Server) -> None:
    url = centrifuge_url(sdk_server.url)
    alice = PyClient(url, token=fetch_token(sdk_server.url, user="alice"))
    try:
        await alice.connect()
        await alice.subscribe("news")
        for channel in ("news", "chat:not-joined"):
            # news: no client publishing at the top level; chat: only where subscribed.
            with pytest.raises(ReplyError) as refused:
                await alice.client.publish(channel, {"text": "refused"})
            assert refused.value.code == 103, channel

        sub, staff = alice.subscription("$chat:staff")
        await sub.subscribe()
        unsubscribed = await next_item(staff.unsubscribed)
        assert unsubscribed.code == 103
        alice.client.remove_subscription(sub)

        token = fetch_token(sdk_server.url, user="alice", channel="$chat:staff")
        staff = await alice.subscribe("$chat:staff", token=token)
        assert publish(sdk_server, "$chat:staff", {"text": "staff only"}) == 1
        assert (await next_item(staff.publications)).pub.data == {"text": "staff only"}

        with pytest.raises(ReplyError) as unknown:
            await alice.client.rpc("no-such-method", {"x": 1})
        assert unknown.value.code == 108  # no plugin implements rpc: "not available"
        assert drain(alice.events.disconnected) == []
    finally:
        await alice.close()


async def test_python_token_refreshed_through_get_token_without_a_gap(sdk_server: Server) -> None:
    url = centrifuge_url(sdk_server.url)

    async def get_token() -> str:
        async with httpx.AsyncClient() as http:
            response = await http.get(
                sdk_server.url + "/token.py", params={"user": "alice", "expire_in": "2"}
            )
        token: str = response.json()["token"]
        return token

    alice = PyClient(url, get_token=get_token)
    try:
        await alice.connect()
        room = await alice.subscribe("chat:refresh")
        sent = []
        for number in range(24):  # 6 s: three 2-second tokens
            sent.append(number)
            publish(sdk_server, "chat:refresh", {"n": number})
            await asyncio.sleep(0.25)
        received = [(await next_item(room.publications)).pub.data["n"] for _ in sent]
        assert received == sent
        assert alice.events.tokens_fetched >= 3  # the first one and at least two refreshes
        assert drain(alice.events.disconnected) == []
        assert drain(alice.events.connected) == []  # connected once, never again
    finally:
        await alice.close()


async def test_python_expired_token_gets_109_then_a_fresh_one(
    configured_server: Callable[[str], Server],
) -> None:
    server = configured_server(
        channel_config(
            allow_subscribe_for_client=True,
            allow_publish_for_subscriber=True,
        )
    )
    calls = 0

    async def get_token() -> str:
        nonlocal calls
        calls += 1
        return mint("ada")

    # Expired ten seconds ago: the server answers 109, the SDK asks get_token.
    ada = PyClient(
        centrifuge_url(server.url), token=mint("ada", expire_in=-10), get_token=get_token
    )
    try:
        await ada.connect()
        assert calls == 1
        room = await ada.subscribe("lobby")
        sub, _ = ada.subs["lobby"]
        await sub.publish({"text": "configured rules"})
        ctx = await next_item(room.publications)
        assert ctx.pub.info is not None and ctx.pub.info.user == "ada"
    finally:
        await ada.close()


async def test_python_connect_reply_has_a_ttl_however_close_the_expiry(
    configured_server: Callable[[str], Server],
) -> None:
    """``expires`` comes with ``ttl`` >= 1 (centrifuge-python reads it unconditionally).

    A token expiring within the second (``exp`` - now < 1 s) is still valid: Centrifugo
    counts ttl in whole seconds of Unix time (``exp - now.Unix()``), never 0.
    """
    server = configured_server("")
    while time.time() % 1 < 0.6:  # exp = next second: under 0.4 s away
        await asyncio.sleep(0.02)
    expiry = int(time.time()) + 1
    token = jwt.encode({"sub": "ada", "exp": expiry}, SECRET, algorithm="HS256")

    async def get_token() -> str:
        return mint("ada")

    ada = PyClient(centrifuge_url(server.url), token=token, get_token=get_token)
    try:
        await ada.connect()
        await eventually(lambda: ada.events.tokens_fetched >= 1, message="a token refresh")
        # Nothing must happen next: past the first token's expiry (and a second the
        # server may take to act on it), still connected.
        await eventually(lambda: time.time() > expiry + 1, message="the first token's expiry")
        assert drain(ada.events.disconnected) == []
    finally:
        await ada.close()


async def test_python_server_side_subscriptions_from_the_token(sdk_server: Server) -> None:
    token = fetch_token(sdk_server.url, user="eve", channels=["news", "chat:ops"])
    eve = PyClient(centrifuge_url(sdk_server.url), token=token)
    try:
        await eve.connect()
        assert publish(sdk_server, "chat:ops", {"text": "server-side"}) == 1
        ctx = await next_item(eve.events.server_publications)
        assert (ctx.channel, ctx.pub.data) == ("chat:ops", {"text": "server-side"})
    finally:
        await eve.close()


# -- centrifuge-js in Node --------------------------------------------------------------


async def test_node_client_subscribes_several_channels_in_the_connect_frame(
    sdk_server: Server,
) -> None:
    url = centrifuge_url(sdk_server.url)
    channels = ["news", "chat:a", "chat:b"]
    carol = await NodeClient.start(
        {
            "url": url,
            "token": fetch_token(sdk_server.url, user="carol"),
            "subscriptions": [{"channel": channel} for channel in channels],
            "frames": True,
        }
    )
    alice = PyClient(url, token=fetch_token(sdk_server.url, user="alice"))
    try:
        await carol.next("connected")
        for channel in channels:
            await carol.next("subscribed", where=lambda e, c=channel: e["channel"] == c)
        first = carol.frames_out()[0]
        assert [next(iter(set(command) - {"id"})) for command in first] == [
            "connect", "subscribe", "subscribe", "subscribe",
        ]  # fmt: skip
        assert [command["subscribe"]["channel"] for command in first[1:]] == channels

        for channel in channels:
            publish(sdk_server, channel, {"to": channel})
        for channel in channels:
            event = await carol.next("publication", where=lambda e, c=channel: e["channel"] == c)
            assert event["data"] == {"to": channel}

        await alice.connect()
        alice_a = await alice.subscribe("chat:a")
        reply = await carol.command("publish", channel="chat:a", data={"text": "from node"})
        assert reply["ok"], reply
        ctx = await next_item(alice_a.publications)
        assert ctx.pub.data == {"text": "from node"}
        assert ctx.pub.info is not None and ctx.pub.info.user == "carol"
        event = await carol.next("publication", where=lambda e: e["channel"] == "chat:a")
        assert event["info"]["user"] == "carol"

        reply = await carol.command("publish", channel="news", data={"text": "refused"})
        assert not reply["ok"] and reply["error"]["code"] == 103
        reply = await carol.command("rpc", method="no-such-method", data={})
        assert not reply["ok"] and reply["error"]["code"] == 108  # no rpc hook at all

        await carol.command("subscribe", channel="$chat:staff")
        event = await carol.next("unsubscribed", where=lambda e: e["channel"] == "$chat:staff")
        assert (event["code"], event["reason"]) == (103, "permission denied")
        assert carol.seen("disconnected") == []
    finally:
        await alice.close()
        await carol.close()


async def test_node_client_refreshes_its_tokens_without_a_gap(sdk_server: Server) -> None:
    base = sdk_server.url + "/token.py?user=dave&expire_in=2"
    dave = await NodeClient.start(
        {
            "url": centrifuge_url(sdk_server.url),
            "tokenUrl": base,
            "subscriptions": [
                {"channel": "chat:refresh"},
                # A private channel: its subscription token expires and is refreshed too.
                {"channel": "$chat:vip", "tokenUrl": base + "&channel=%24chat%3Avip"},
            ],
            "frames": True,
        }
    )
    try:
        await dave.next("connected")
        await dave.next("subscribed", where=lambda e: e["channel"] == "chat:refresh")
        await dave.next("subscribed", where=lambda e: e["channel"] == "$chat:vip")
        sent = list(range(24))  # 6 s of 2-second tokens
        for number in sent:
            publish(sdk_server, "chat:refresh", {"n": number})
            publish(sdk_server, "$chat:vip", {"n": number})
            await asyncio.sleep(0.25)
        for channel in ("chat:refresh", "$chat:vip"):
            for number in sent:
                event = await dave.next("publication", where=lambda e, c=channel: e["channel"] == c)
                assert event["data"] == {"n": number}
        commands = [command for frame in dave.frames_out() for command in frame]
        assert sum("refresh" in command for command in commands) >= 2
        assert sum("sub_refresh" in command for command in commands) >= 2
        assert len(dave.seen("connected")) == 1
        assert dave.seen("disconnected") == [] and dave.seen("unsubscribed") == []
    finally:
        await dave.close()


async def test_node_client_server_side_subscriptions_from_the_token(sdk_server: Server) -> None:
    token = fetch_token(sdk_server.url, user="eve", channels=["news", "chat:ops"])
    eve = await NodeClient.start({"url": centrifuge_url(sdk_server.url), "token": token})
    try:
        await eve.next("connected")
        for channel in ("news", "chat:ops"):
            await eve.next("server_subscribed", where=lambda e, c=channel: e["channel"] == c)
            publish(sdk_server, channel, {"to": channel})
            event = await eve.next(
                "server_publication", where=lambda e, c=channel: e["channel"] == c
            )
            assert event["data"] == {"to": channel}
    finally:
        await eve.close()


async def test_python_recovers_what_it_missed_across_a_reconnect(
    configured_server: Callable[[str], Server],
) -> None:
    """centrifuge-python's own recovery: offsets tracked, ``recover`` sent on resubscribe."""
    feed = {"name": "feed", "history_size": 100, "history_ttl": "300s", "force_recovery": True}
    server = configured_server(channel_config([{**feed, "allow_subscribe_for_client": True}]))
    ada = PyClient(centrifuge_url(server.url), token=mint("ada"))
    try:
        await ada.connect()
        room = await ada.subscribe("feed:room")
        got = []
        for n in range(3):
            publish(server, "feed:room", {"n": n})
            ctx = await next_item(room.publications)
            got.append((ctx.pub.data["n"], ctx.pub.offset))
        await ada.client.disconnect()
        for n in range(3, 6):  # missed while away
            publish(server, "feed:room", {"n": n})
        await ada.connect()
        back = await next_item(room.subscribed)
        assert back.was_recovering and back.recovered
        for _ in range(3):
            ctx = await next_item(room.publications)
            got.append((ctx.pub.data["n"], ctx.pub.offset))
        publish(server, "feed:room", {"n": 6})
        ctx = await next_item(room.publications)
        got.append((ctx.pub.data["n"], ctx.pub.offset))
        assert got == [(n, n + 1) for n in range(7)]  # each once, in order, no hole
    finally:
        await ada.close()


HUB_SIZE_SCRIPT = """\
from realtime_hub import get_hub
from realtime import current_host
print(len(get_hub(current_host())))
"""


async def test_python_recovers_on_the_other_host_when_its_host_is_killed(
    scripts: Path, tmp_path: Path, redis_server: RedisServer
) -> None:
    """Two hosts behind Caddy over Redis: SIGKILL the client's host, the SDK reconnects
    through Caddy to the other and recovers contiguously."""
    (scripts / "size.py").write_text(HUB_SIZE_SCRIPT)
    feed = {"name": "feed", "history_size": 100, "history_ttl": "300s", "force_recovery": True}
    config = tmp_path / "realtime.toml"
    config.write_text(
        f'token_hmac_secret = "{SECRET}"\n'
        + channel_config([{**feed, "allow_subscribe_for_client": True}])
    )
    hosts = [
        Server(scripts, "--config", str(config), "--broker", redis_server.url).start()
        for _ in range(2)
    ]
    caddy, caddy_port = start_caddy(
        hosts[0].port,
        tmp_path / "caddy-cluster.log",
        config="deploy/Caddyfile.cluster",
        extra_env={"REALTIME_UPSTREAM_2": f"127.0.0.1:{hosts[1].port}"},
    )
    ada = PyClient(centrifuge_url(f"http://127.0.0.1:{caddy_port}"), token=mint("ada"))
    try:
        await ada.connect()
        room = await ada.subscribe("feed:room")
        got = []
        for n in range(3):
            publish(hosts[n % 2], "feed:room", {"n": n})
            ctx = await next_item(room.publications)
            got.append((ctx.pub.data["n"], ctx.pub.offset))
        sizes = [int(httpx.get(f"{h.url}/size.py", timeout=5).text) for h in hosts]
        assert sorted(sizes) == [0, 1], sizes
        mine, other = (hosts[0], hosts[1]) if sizes[0] else (hosts[1], hosts[0])
        assert mine.process is not None
        mine.process.kill()  # no drain, no close frame: the host is gone
        mine.process.wait(10)
        for n in range(3, 6):
            publish(other, "feed:room", {"n": n})
        back = await next_item(room.subscribed, timeout=30)
        assert back.was_recovering and back.recovered
        for _ in range(3):
            ctx = await next_item(room.publications)
            got.append((ctx.pub.data["n"], ctx.pub.offset))
        publish(other, "feed:room", {"n": 6})
        ctx = await next_item(room.publications)
        got.append((ctx.pub.data["n"], ctx.pub.offset))
        assert got == [(n, n + 1) for n in range(7)]
    finally:
        await ada.close()
        caddy.terminate()
        caddy.wait(10)
        for host in hosts:
            host.stop()
