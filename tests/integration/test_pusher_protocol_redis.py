"""The Pusher protocol across two hosts over Redis: presence members from the broker's
store (one ``member_added`` per user, one ``member_removed`` when its last connection
leaves, wherever its connections are), client events and terminations across hosts."""

from __future__ import annotations

import json
from pathlib import Path

from realtime import get_host
from realtime_broker import get_broker
from realtime_pusher.node import get_node

from ..conftest import RedisServer
from .test_fanout import hypercorn
from .test_pusher_protocol import presence_data, pusher, served_app

ROOM = "presence-room"


async def test_presence_across_two_hosts_one_member_per_user(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    one = served_app(tmp_path, broker=redis_server.url)
    two = served_app(tmp_path, broker=redis_server.url)
    async with (
        hypercorn(one) as port_one,
        hypercorn(two) as port_two,
        pusher(port_one) as alice,
    ):
        ok = await alice.subscribe(ROOM, channel_data=presence_data("alice", {"n": 1}))
        assert ok["data"]["presence"]["ids"] == ["alice"]
        # Two tabs of bob, one on each host.
        async with pusher(port_two) as tab_one, pusher(port_one) as tab_two:
            ok = await tab_one.subscribe(ROOM, channel_data=presence_data("bob", {"n": 2}))
            presence = ok["data"]["presence"]
            assert presence["count"] == 2
            assert presence["hash"] == {"alice": {"n": 1}, "bob": {"n": 2}}
            added = await alice.next()
            assert added["event"] == "pusher_internal:member_added"
            assert added["data"] == {"user_id": "bob", "user_info": {"n": 2}}
            ok = await tab_two.subscribe(ROOM, channel_data=presence_data("bob", {"n": 2}))
            assert ok["data"]["presence"]["count"] == 2
            # A client event from host two reaches host one, not its sender.
            await tab_one.send("client-hi", {"x": 1}, ROOM)
            relayed = await alice.next()
            assert relayed == {
                "event": "client-hi",
                "channel": ROOM,
                "data": {"x": 1},
                "user_id": "bob",
            }
            assert (await tab_two.next())["event"] == "client-hi"
            await tab_one.send("pusher:ping")
            assert (await tab_one.next())["event"] == "pusher:pong"
            # Bob's first tab goes: he is still there (no member_removed).
            await tab_one.ws.close()
            await alice.send("pusher:ping")
            assert (await alice.next())["event"] == "pusher:pong"
            # A script's broadcast on host two, over Redis, reaches host one.
            await get_broker(get_host(two)).publish(ROOM, "hello")
            assert await alice.raw() == {"event": "message", "channel": ROOM, "data": "hello"}
        # Both tabs gone: one member_removed.
        removed = await alice.next()
        assert removed == {
            "event": "pusher_internal:member_removed",
            "channel": ROOM,
            "data": {"user_id": "bob"},
        }
        await alice.send("pusher:ping")
        assert (await alice.next())["event"] == "pusher:pong"
        members = await get_node(get_host(two)).members(ROOM)
        assert members == {"ids": ["alice"], "hash": {"alice": {"n": 1}}, "count": 1}


async def test_terminate_user_closes_its_connections_on_every_host(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    one = served_app(tmp_path, broker=redis_server.url)
    two = served_app(tmp_path, broker=redis_server.url)
    async with (
        hypercorn(one) as port_one,
        hypercorn(two) as port_two,
        pusher(port_one) as here,
        pusher(port_two) as there,
        pusher(port_two) as other,
    ):
        await here.subscribe(ROOM, channel_data=presence_data("carol"))
        await there.subscribe("presence-elsewhere", channel_data=presence_data("carol"))
        await other.subscribe(ROOM, channel_data=presence_data("dave"))
        node = get_node(get_host(one))
        await node.terminate_user(node.apps.by_id["1"], "carol")
        assert (await here.closed())[0] == 4009
        assert (await there.closed())[0] == 4009
        # Dave stays, and hears carol leave once.
        assert (await other.until("pusher_internal:member_removed"))["data"] == {"user_id": "carol"}
        await other.send("pusher:ping")
        assert (await other.next())["event"] == "pusher:pong"
        assert json.loads(json.dumps(await node.members(ROOM)))["ids"] == ["dave"]
