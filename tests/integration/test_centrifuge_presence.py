"""Presence, and joins and leaves, on the Centrifuge protocol under real Hypercorn.

With ``memory://`` (both fan-out paths) and over Redis with two hosts: who is in a
channel is the broker's one answer on every host, each join and leave is pushed
once, and the clients of a host that is SIGKILLed leave within the presence TTL.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cent
import httpx
import pytest
from quart import Quart
from websockets.asyncio.client import connect

from realtime import get_host
from realtime_broker import (
    MAX_INFO_SIZE,
    Member,
    PresenceEvent,
    PresenceMode,
    Publication,
    get_broker,
)
from realtime_broker.redis.envelope import ENVELOPE_OVERHEAD
from realtime_centrifuge.plugin import get_node

from ..conftest import RedisServer, Server
from ..sdk import channel_config
from .test_centrifuge_endpoint import SECRET, Peer, connected, peer, served_app, token
from .test_fanout import hypercorn

API_KEY = "presence-api-key"
ROOM = {
    "name": "room",
    "presence": True,
    "join_leave": True,
    "force_push_join_leave": True,
    "allow_subscribe_for_client": True,
    "allow_presence_for_subscriber": True,
}
CHANNELS = {
    "without_namespace": {
        "allow_subscribe_for_client": True,
        "allow_subscribe_for_anonymous": True,
        "presence": True,
        "join_leave": True,
        "force_push_join_leave": True,
    },
    "namespaces": [
        ROOM,
        # Joins and leaves only for subscribers asking, and presence for any signed-in client.
        {
            "name": "ask",
            "presence": True,
            "join_leave": True,
            "allow_subscribe_for_client": True,
            "allow_presence_for_client": True,
        },
        {"name": "quiet", "allow_subscribe_for_client": True},
    ],
}


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    app = await served_app(
        tmp_path, channel=CHANNELS, fast_path=request.param == "fast-path", api_key=API_KEY
    )
    async with hypercorn(app) as port:
        yield app, port


async def event(client: Peer, timeout: float = 5.0) -> tuple[str, str, str]:
    """The next join or leave push: (kind, user, client id)."""
    push = (await client.push(timeout))["push"]
    kind = "join" if "join" in push else "leave"
    assert kind in push, push
    info = push[kind]["info"]
    return kind, info["user"], info["client"]


async def subscribe(client: Peer, channel: str, **params: Any) -> dict[str, Any]:
    reply = await client.call("subscribe", channel=channel, **params)
    assert "subscribe" in reply, reply
    return dict(reply["subscribe"])


async def own_id(port: int, user: str, **claims: Any) -> tuple[Peer, str]:
    """A connected client, and the client id the server gave it."""
    client = await peer(port)
    client.skip_join_leave = False
    reply = await client.call("connect", token=token(user, **claims))
    return client, str(reply["connect"]["client"])


async def test_members_see_each_other_and_each_join_and_leave_once(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    alice, alice_id = await own_id(port, "alice", info={"name": "Alice"})
    await subscribe(alice, "room:a")
    # Its own join follows its subscribe reply.
    assert await event(alice) == ("join", "alice", alice_id)
    bob, bob_id = await own_id(port, "bob")
    await subscribe(bob, "room:a")
    assert await event(alice) == ("join", "bob", bob_id)
    assert await event(bob) == ("join", "bob", bob_id)
    for client in (alice, bob):
        presence = (await client.call("presence", channel="room:a"))["presence"]["presence"]
        assert set(presence) == {alice_id, bob_id}
        assert presence[alice_id] == {
            "user": "alice",
            "client": alice_id,
            "conn_info": {"name": "Alice"},
        }
        stats = (await client.call("presence_stats", channel="room:a"))["presence_stats"]
        assert stats == {"num_clients": 2, "num_users": 2}
    await bob.ws.close()
    assert await event(alice) == ("leave", "bob", bob_id)
    presence = (await alice.call("presence", channel="room:a"))["presence"]["presence"]
    assert set(presence) == {alice_id}
    # No second leave for bob, and unsubscribing is a leave too.
    await alice.call("unsubscribe", channel="room:a")
    carol, _ = await own_id(port, "carol")
    await subscribe(carol, "room:a")
    kind, user, _ = await event(carol)
    assert (kind, user) == ("join", "carol")
    stats = (await carol.call("presence_stats", channel="room:a"))["presence_stats"]
    assert stats == {"num_clients": 1, "num_users": 1}
    with pytest.raises(TimeoutError):
        await carol.push(timeout=0.3)
    await alice.ws.close()
    await carol.ws.close()


async def test_two_tabs_of_one_user_are_one_user(server: tuple[Quart, int]) -> None:
    _, port = server
    tabs = [await own_id(port, "dana") for _ in range(2)]
    for tab, _ in tabs:
        await subscribe(tab, "room:b")
    stats = (await tabs[0][0].call("presence_stats", channel="room:b"))["presence_stats"]
    assert stats == {"num_clients": 2, "num_users": 1}
    for tab, _ in tabs:
        await tab.ws.close()


async def test_joins_and_leaves_reach_only_subscribers_that_ask_unless_forced(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    silent, _ = await own_id(port, "silent")
    asking, asking_id = await own_id(port, "asking")
    await subscribe(silent, "ask:x")
    await subscribe(asking, "ask:x", join_leave=True)
    assert await event(asking) == ("join", "asking", asking_id)
    other, other_id = await own_id(port, "other")
    await subscribe(other, "ask:x")
    assert await event(asking) == ("join", "other", other_id)
    with pytest.raises(TimeoutError):
        await silent.push(timeout=0.3)
    # allow_presence_for_client: a client not subscribed may read it.
    outsider, _ = await own_id(port, "outsider")
    presence = (await outsider.call("presence", channel="ask:x"))["presence"]["presence"]
    assert len(presence) == 3
    for client in (silent, asking, other, outsider):
        await client.ws.close()


async def test_presence_is_refused_where_the_namespace_does_not_keep_it_or_allow_it(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    alice = await connected(port, "alice")
    assert (await alice.call("presence", channel="quiet:a"))["error"]["code"] == 108
    assert (await alice.call("presence_stats", channel="quiet:a"))["error"]["code"] == 108
    # allow_presence_for_subscriber: only once subscribed.
    assert (await alice.call("presence", channel="room:a"))["error"]["code"] == 103
    assert (await alice.call("presence", channel="nope:a"))["error"]["code"] == 102
    await subscribe(alice, "room:a")
    assert "presence" in await alice.call("presence", channel="room:a")
    await alice.ws.close()


async def test_raw_clients_in_a_presence_channel_get_publications_only(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    async with connect(f"ws://127.0.0.1:{port}/ws?channel=lobby") as raw:
        member, _ = await own_id(port, "alice")
        await subscribe(member, "lobby")
        await member.push()  # its own join: the channel has joins and leaves
        await get_broker(get_host(app)).publish("lobby", "hello")
        assert await asyncio.wait_for(raw.recv(), 5) == "hello"
        await member.ws.close()
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(raw.recv(), 0.3)


async def test_the_server_api_and_scripts_read_presence(
    server: tuple[Quart, int], tmp_path: Path
) -> None:
    _, port = server
    alice, alice_id = await own_id(port, "alice", info={"n": 1})
    await subscribe(alice, "room:c")
    url = f"http://127.0.0.1:{port}/api"

    def run() -> None:
        api = cent.Client(url, API_KEY)
        presence = api.presence(cent.PresenceRequest(channel="room:c")).presence
        assert presence[alice_id].user == "alice"
        assert presence[alice_id].conn_info == {"n": 1}
        stats = api.presence_stats(cent.PresenceStatsRequest(channel="room:c"))
        assert (stats.num_clients, stats.num_users) == (1, 1)
        with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
            api.presence(cent.PresenceRequest(channel="quiet:c"))
        assert caught.value.code == 108

    await asyncio.to_thread(run)
    script = tmp_path / "who.py"
    script.write_text(
        "import json\n"
        "print(json.dumps({'members': presence('room:c'), 'stats': presence_stats('room:c')}))\n"
    )
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/who.py", timeout=10)
    assert response.status_code == 200, response.text
    body = json.loads(response.text)
    assert body["members"][alice_id]["user"] == "alice"
    assert body["stats"] == {"num_clients": 1, "num_users": 1}
    await alice.ws.close()


async def test_memory_presence_counts_users_and_says_who_came_first_and_left_last(
    tmp_path: Path,
) -> None:
    app = await served_app(tmp_path, channel=CHANNELS)
    async with hypercorn(app):
        broker = get_broker(get_host(app))
        assert broker.presence_mode("room:z") == PresenceMode(True, True)
        assert broker.presence_mode("quiet:z") is None
        events: list[tuple[bool, str, bool]] = []
        broker.on_presence(lambda _, e: events.append((e.joined, e.member.client, e.user_changed)))
        await broker.join_presence("room:z", Member("c1", "u"))
        await broker.join_presence("room:z", Member("c2", "u"))
        await broker.join_presence("room:z", Member("c2", "u"))  # again: no second join
        await broker.leave_presence("room:z", "c1")
        await broker.leave_presence("room:z", "c1")  # again: no second leave
        await broker.leave_presence("room:z", "c2")
        await broker.join_presence("quiet:z", Member("c3", "v"))  # not tracked there
        assert events == [
            (True, "c1", True),
            (True, "c2", False),
            (False, "c1", False),
            (False, "c2", True),
        ]
        assert (await broker.presence_stats("room:z")).clients == 0


async def test_both_kinds_of_subscriber_share_one_encoding_of_a_publication(
    server: tuple[Quart, int],
) -> None:
    """Subscribers with joins and leaves and those without get the same text for a
    publication (encoded once); only the first kind gets a join."""
    app, _ = server
    node = get_node(get_host(app))
    publication = Publication('{"x":1}', json=True)
    plain = node.format.encode("room:a", publication)
    assert plain is not None and '"pub"' in plain
    assert node.format_join_leave.encode("room:a", publication) is plain
    join = PresenceEvent(True, Member("c1", "u1"))
    assert node.format.encode("room:a", join) is None
    assert '"join"' in (node.format_join_leave.encode("room:a", join) or "")


# -- over Redis ------------------------------------------------------------------------


async def test_over_redis_two_hosts_see_the_same_members_and_one_user_across_them(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    one = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    two = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(one) as port_one, hypercorn(two) as port_two:
        alice, alice_id = await own_id(port_one, "alice")
        await subscribe(alice, "room:r")
        assert await event(alice) == ("join", "alice", alice_id)
        bob, bob_id = await own_id(port_two, "bob")
        await subscribe(bob, "room:r")
        assert await event(alice) == ("join", "bob", bob_id)
        assert await event(bob) == ("join", "bob", bob_id)
        # Two tabs of one user on two hosts: one user.
        tabs = [await own_id(port, "carol") for port in (port_one, port_two)]
        for tab, _ in tabs:
            await subscribe(tab, "room:r")
        for client in (alice, bob):
            for _ in range(2):
                kind, user, _ = await event(client)
                assert (kind, user) == ("join", "carol")
        for client in (alice, bob):
            presence = (await client.call("presence", channel="room:r"))["presence"]["presence"]
            assert set(presence) == {alice_id, bob_id, tabs[0][1], tabs[1][1]}
            stats = (await client.call("presence_stats", channel="room:r"))["presence_stats"]
            assert stats == {"num_clients": 4, "num_users": 3}
        await bob.ws.close()
        assert await event(alice) == ("leave", "bob", bob_id)
        for tab, _ in tabs:
            await tab.ws.close()
        for _ in range(2):
            kind, user, _ = await event(alice)
            assert (kind, user) == ("leave", "carol")
        with pytest.raises(TimeoutError):
            await alice.push(timeout=0.5)
        stats = (await alice.call("presence_stats", channel="room:r"))["presence_stats"]
        assert stats == {"num_clients": 1, "num_users": 1}
        await alice.ws.close()


async def test_over_redis_a_killed_hosts_clients_each_leave_once_within_the_ttl(
    tmp_path: Path, app_dir: Path, redis_server: RedisServer
) -> None:
    """SIGKILL a host: its clients are pruned by the other host within the presence
    TTL plus one renewal, and each leave is pushed exactly once."""
    ttl, interval = 3.0, 1.0
    config = tmp_path / "realtime.toml"
    config.write_text(f'token_hmac_secret = "{SECRET}"\n' + channel_config([ROOM]))
    doomed = Server(
        app_dir,
        "--config", str(config),
        "--broker", redis_server.url,
        "--presence-ttl", str(ttl),
        "--presence-update-interval", str(interval),
    ).start()  # fmt: skip
    survivor = await served_app(
        tmp_path,
        channel={"namespaces": [ROOM]},
        broker=redis_server.url,
        presence_ttl=ttl,
        presence_update_interval=interval,
    )
    try:
        async with hypercorn(survivor) as port:
            watcher, watcher_id = await own_id(port, "watcher")
            await subscribe(watcher, "room:k")
            assert await event(watcher) == ("join", "watcher", watcher_id)
            doomed_ids = set()
            for n in range(3):
                victim, victim_id = await own_id(doomed.port, f"victim{n}")
                await subscribe(victim, "room:k")
                assert await event(watcher) == ("join", f"victim{n}", victim_id)
                doomed_ids.add(victim_id)
            assert doomed.process is not None
            doomed.process.kill()
            doomed.process.wait(10)
            killed = time.monotonic()
            left = set()
            while left != doomed_ids:
                kind, _, client = await event(watcher, timeout=ttl + 2 * interval + 2)
                assert kind == "leave" and client in doomed_ids and client not in left
                left.add(client)
            assert time.monotonic() - killed <= ttl + 2 * interval + 1
            with pytest.raises(TimeoutError):
                await watcher.push(timeout=2 * interval)  # no second leave from anyone
            presence = (await watcher.call("presence", channel="room:k"))["presence"]["presence"]
            assert set(presence) == {watcher_id}
            await watcher.ws.close()
    finally:
        doomed.stop()


async def test_over_redis_a_renewal_or_a_late_join_never_brings_back_a_client_that_left(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The races a renewal and a join in flight have with a leave sent on another
    connection: whichever runs first in Redis, a client that left stays gone, and
    each join and leave is announced once."""
    app = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(app) as port:
        watcher, _ = await own_id(port, "watcher")
        await subscribe(watcher, "room:race")
        await event(watcher)  # its own join
        broker: Any = get_broker(get_host(app))
        # A renewal built before "c1" left, sent after its leave ran: renews nothing.
        await broker.join_presence("room:race", Member("c1", "u1"))
        assert await event(watcher) == ("join", "u1", "c1")
        await broker.leave_presence("room:race", "c1")
        assert await event(watcher) == ("leave", "u1", "c1")
        await broker._renew_chunk("room:race", ["c1"])
        # A join whose leave overtook it (the client is gone here when it returns).
        await broker._add_members("room:race", [Member("c2", "u2")], True)
        assert await event(watcher) == ("join", "u2", "c2")
        assert await event(watcher) == ("leave", "u2", "c2")
        with pytest.raises(TimeoutError):
            await watcher.push(timeout=0.5)
        # A member Redis lost (restart, eviction) is added back, with a join.
        await broker.join_presence("room:race", Member("c3", "u3"))
        assert await event(watcher) == ("join", "u3", "c3")
        keys = broker.presence_keys("room:race")
        redis_server.cli("HDEL", keys[0], "c3")
        redis_server.cli("ZREM", keys[1], "c3")
        await broker._renew_chunk("room:race", ["c3"])
        assert await event(watcher) == ("join", "u3", "c3")
        presence = (await watcher.call("presence", channel="room:race"))["presence"]["presence"]
        assert sorted(info["user"] for info in presence.values()) == ["u3", "watcher"]
        await watcher.ws.close()


async def test_over_redis_forged_or_oversized_presence_messages_are_dropped(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Anyone who may PUBLISH on the channel can send what looks like a join: a
    malformed one, or one over the size bound, is counted and dropped, and the
    channel's real joins go on."""
    app = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(app) as port:
        watcher, _ = await own_id(port, "watcher")
        await subscribe(watcher, "room:forged")
        await event(watcher)  # its own join
        broker: Any = get_broker(get_host(app))
        name = broker.key("room:forged")
        # Past the largest envelope a publication may have (body, info, metadata).
        bound = broker.max_message_size + MAX_INFO_SIZE + ENVELOPE_OVERHEAD
        oversized = "realtime/2p j3:abc" + "5:alice" + "x" * (bound + 1)
        for forged in (
            "realtime/2p x3:abc5:alice",  # no such kind
            "realtime/2p j99:abc",  # a length past the end
            "realtime/2p j3:abc9999999:alice",  # a length of more than six digits
            "realtime/2p j3:ab\xff5:alice",  # not UTF-8 once cut
            "realtime/2p j3:abc5:alice{not json",  # info that is not JSON
            'realtime/2p j3:abc5:alice{"a":1}\n{"id":1,"connect":{}}',  # a second frame
            oversized,
        ):
            redis_server.cli("PUBLISH", name, forged)
        await broker.join_presence("room:forged", Member("c9", "real"))
        assert await event(watcher) == ("join", "real", "c9")  # and nothing forged before
        assert broker.tally.counts["foreign"] >= 5
        assert broker.tally.counts["oversized"] >= 1
        await watcher.ws.close()


@pytest.mark.parametrize("broker_url", ["memory", "redis"])
async def test_a_presence_read_returns_at_most_the_bound(
    tmp_path: Path,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    broker_url: str,
) -> None:
    from realtime_broker import presence as presence_module
    from realtime_broker import redis as redis_module

    monkeypatch.setattr(presence_module, "MAX_PRESENCE_MEMBERS", 5)
    monkeypatch.setattr(redis_module, "MAX_PRESENCE_MEMBERS", 5)
    url = redis_server.url if broker_url == "redis" else "memory://"
    app = await served_app(tmp_path, channel=CHANNELS, broker=url)
    async with hypercorn(app):
        broker = get_broker(get_host(app))
        for n in range(12):
            await broker.join_presence("room:many", Member(f"c{n}", f"u{n}"))
        assert len(await broker.presence("room:many")) == 5
        assert (await broker.presence_stats("room:many")).clients == 12  # counted, all


async def test_a_member_info_over_the_bound_is_refused(tmp_path: Path) -> None:
    app = await served_app(tmp_path, channel=CHANNELS)
    async with hypercorn(app):
        broker = get_broker(get_host(app))
        with pytest.raises(ValueError, match="over"):
            await broker.join_presence("room:big", Member("c1", "u", '"' + "x" * 17_000 + '"'))
        assert (await broker.presence_stats("room:big")).clients == 0


def test_a_renewal_interval_not_below_the_ttl_is_refused_at_start() -> None:
    from realtime_broker import MemoryBroker

    with pytest.raises(ValueError, match="--presence-update-interval must be"):
        MemoryBroker("memory://", {"presence_ttl": 5.0, "presence_update_interval": 9.0})
    MemoryBroker("memory://", {"presence_ttl": 5.0, "presence_update_interval": 2.0})


def test_a_join_or_leave_is_decided_once_per_event_whoever_asks() -> None:
    from types import SimpleNamespace

    from realtime_centrifuge.transport import CentrifugeFormat

    looked_up: list[str] = []

    class Channels(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            looked_up.append(key)
            return super().get(key, default)

    hub = SimpleNamespace(channels=Channels())
    node: Any = SimpleNamespace(
        hub=hub,
        options=SimpleNamespace(max_join_leave_subscribers=2),
        broker=SimpleNamespace(history_supported=False),
    )
    publications = CentrifugeFormat(node)
    join_leave = CentrifugeFormat(node, publications)
    hub.channels["room:a"] = {join_leave: {1: "c1", 2: "c2"}}
    join = PresenceEvent(True, Member("c1", "u1"))
    first = join_leave.encode("room:a", join)
    assert first is not None and json.loads(first)["push"]["join"]["info"]["user"] == "u1"
    assert join_leave.encode("room:a", join) is first and looked_up == ["room:a"]
    assert publications.encode("room:a", join) is None  # that kind gets no joins
    # Past the bound: not pushed, and that too is decided once.
    hub.channels["room:b"] = {join_leave: {n: f"c{n}" for n in range(3)}}
    leave = PresenceEvent(False, Member("c1", "u1"))
    assert join_leave.encode("room:b", leave) is None
    assert join_leave.encode("room:b", leave) is None and looked_up == ["room:a", "room:b"]
