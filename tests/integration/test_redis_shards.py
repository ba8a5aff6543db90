"""Issue 23: several plain Redis instances sharded by channel (``redis+shards://``).

Three redis-servers on loopback, two hosts over them: each channel on one shard (the
jump consistent hash of its name, as Centrifugo's), publications reaching exactly
their subscribers in order, history and presence kept on the channel's shard; one
shard killed: only its channels answer 503 and, once it is back, tell their
subscribers what they lost; the other shards' channels never notice.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import get_host
from realtime_broker import BrokerUnavailable, Publication, get_broker
from realtime_broker.redis.shards import (
    ShardedBroker,
    fnv1a_64,
    jump_hash,
    shard_index,
    shard_urls,
)

from ..conftest import RedisServer, eventually
from ..redis_topologies import redis_shards, shards_url  # noqa: F401 (a fixture)
from .test_centrifuge_endpoint import Peer, connected, served_app
from .test_fanout import hypercorn

FEED = {
    "name": "feed",
    "allow_subscribe_for_client": True,
    "allow_subscribe_for_anonymous": True,
    "history_size": 10,
    "history_ttl": "600s",
    "force_recovery": True,
    "presence": True,
    "allow_presence_for_subscriber": True,
}
CHANNELS = {"namespaces": [FEED]}


# -- the hash ------------------------------------------------------------------------


def test_fnv1a_64_is_the_standard_one() -> None:
    assert fnv1a_64(b"") == 0xCBF29CE484222325
    assert fnv1a_64(b"a") == 0xAF63DC4C8601EC8C
    assert fnv1a_64(b"foobar") == 0x85944171F73967E8


def test_a_channel_keeps_its_shard_and_a_new_shard_takes_only_about_its_share() -> None:
    names = [f"feed:{n}" for n in range(3000)]
    three = [shard_index(name, 3) for name in names]
    assert three == [shard_index(name, 3) for name in names]  # stable
    spread = Counter(three)
    assert set(spread) == {0, 1, 2} and min(spread.values()) > 800
    four = [shard_index(name, 4) for name in names]
    moved = [(a, b) for a, b in zip(three, four, strict=True) if a != b]
    assert all(b == 3 for _, b in moved)  # only to the new shard...
    assert 600 < len(moved) < 900  # ...and about a quarter of them
    assert all(shard_index(name, 1) == 0 for name in names[:10])
    assert jump_hash(0, 1) == 0
    with pytest.raises(ValueError, match="bucket"):
        jump_hash(1, 0)


def test_the_url_lists_the_shards_with_shared_credentials_and_database() -> None:
    assert shard_urls("redis+shards://:pw@h1:6379,h2:6380/2?x=1") == [
        "redis://:pw@h1:6379/2?x=1",
        "redis://:pw@h2:6380/2?x=1",
    ]
    assert shard_urls("rediss+shards://h1:1") == ["rediss://h1:1"]
    for bad in ("redis://h1:1", "redis+shards:///0", "redis+shards://h:1,h:1"):
        with pytest.raises(ValueError, match="sharded Redis URL"):
            shard_urls(bad)


# -- over three real shards -----------------------------------------------------------


def channels_per_shard(count: int = 2) -> list[list[str]]:
    """``count`` feed channels on each of the three shards."""
    found: list[list[str]] = [[], [], []]
    n = 0
    while any(len(names) < count for names in found):
        name = f"feed:c{n}"
        names = found[shard_index(name, 3)]
        if len(names) < count:
            names.append(name)
        n += 1
    return found


async def publish(app: Quart, channel: str, n: int) -> None:
    await get_broker(get_host(app)).publish(channel, Publication(json.dumps({"n": n}), json=True))


def sharded(app: Quart) -> ShardedBroker:
    broker = get_broker(get_host(app))
    assert isinstance(broker, ShardedBroker)
    return broker


async def subscribe(client: Peer, channel: str, **params: Any) -> dict[str, Any]:
    reply = await client.call("subscribe", channel=channel, **params)
    assert "subscribe" in reply, reply
    sub: dict[str, Any] = reply["subscribe"]
    return sub


async def collect(client: Peer, count: int) -> dict[str, list[int]]:
    """The next ``count`` publications a client gets, by channel."""
    got: dict[str, list[int]] = {}
    for _ in range(count):
        push = (await client.push(timeout=10))["push"]
        assert "pub" in push, push
        got.setdefault(push["channel"], []).append(push["pub"]["data"]["n"])
    return got


async def raw_until_closed(ws: ClientConnection, into: list[int]) -> int | None:
    try:
        async for message in ws:
            into.append(json.loads(message)["n"])
    except ConnectionClosed:
        pass
    return ws.close_code


def key_exists(server: RedisServer, key: str) -> bool:
    return server.cli("EXISTS", key).strip() == "1"


async def test_channels_live_on_their_shards_and_one_shards_outage_costs_only_its_channels(
    tmp_path: Path,
    redis_shards: list[RedisServer],  # noqa: F811
) -> None:
    servers = redis_shards
    url = shards_url(servers)
    per_shard = channels_per_shard()
    everything = [name for names in per_shard for name in names]
    one = await served_app(tmp_path, channel=CHANNELS, broker=url)
    two = await served_app(tmp_path, channel=CHANNELS, broker=url)
    async with hypercorn(one) as port_one, hypercorn(two) as port_two:
        assert [shard.url for shard in sharded(one).shards] == [s.url for s in servers]
        # Alice (host one) on every channel; Bob (host two) on the first of each shard.
        alice = await connected(port_one, "alice")
        bob = await connected(port_two, "bob")
        for name in everything:
            await subscribe(alice, name)
        bobs = [names[0] for names in per_shard]
        for name in bobs:
            await subscribe(bob, name)
        # Publications from both hosts, interleaved: each reaches exactly its channel's
        # subscribers, in order, with its channel's own numbering.
        for n in range(1, 4):
            for name in everything:
                await publish(one if n % 2 else two, name, n)
        assert await collect(alice, 3 * len(everything)) == {name: [1, 2, 3] for name in everything}
        assert await collect(bob, 3 * len(bobs)) == {name: [1, 2, 3] for name in bobs}
        with pytest.raises(TimeoutError):
            await bob.push(timeout=0.3)  # nothing from channels he is not in
        # History and presence with their channel, on its shard only.
        broker_two = sharded(two)
        for index, names in enumerate(per_shard):
            for name in names:
                history = await broker_two.history(name, limit=-1)
                assert [json.loads(p.data)["n"] for p in history.publications] == [1, 2, 3]
                assert history.position.offset == 3
                keys = broker_two.shards[index]
                on = [key_exists(s, keys.history_key(name)) for s in servers]
                assert on == [i == index for i in range(3)], (name, on)
                presence = keys.presence_keys(name)[0]
                assert [key_exists(s, presence) for s in servers] == [i == index for i in range(3)]
            users = {m.user for m in (await broker_two.presence(names[0])).values()}
            assert users == {"alice", "bob"}
        # Both hosts' client counts on every shard (each one's publish script reads its
        # own), the channel maps on the first only: every channel listed, with Bob's twice.
        nodes = broker_two.shards[0].nodes_key
        for server in servers:
            await eventually(partial(_hlen, server, nodes, 2), message="both hosts counted")
        channels = await eventually(
            lambda: _listed(broker_two, everything, bobs), message="every channel listed"
        )
        assert channels
        maps = broker_two.shards[0].channels_key(broker_two.shards[0].node)
        await eventually(lambda: key_exists(servers[0], maps), message="the map on the first")
        for index in (1, 2):  # the others keep only the client counts (and an info)
            shard = broker_two.shards[index]
            assert not key_exists(servers[index], shard.channels_key(shard.node))

        # The second shard dies.
        down = 1
        raw = await connect(f"ws://127.0.0.1:{port_two}/ws?channel={per_shard[down][1]}")
        raw_other = await connect(f"ws://127.0.0.1:{port_two}/ws?channel={per_shard[0][1]}")
        raw_got: list[int] = []
        other_got: list[int] = []
        raw_task = asyncio.create_task(raw_until_closed(raw, raw_got))
        other_task = asyncio.create_task(raw_until_closed(raw_other, other_got))
        await publish(one, per_shard[down][1], 4)
        await publish(one, per_shard[0][1], 4)
        await eventually(lambda: raw_got == [4] and other_got == [4], message="raw clients live")
        await collect(alice, 2)
        servers[down].stop()
        for name in per_shard[down]:
            with pytest.raises(BrokerUnavailable, match=f"shard {down}"):
                await publish(one, name, 5)
        await eventually(
            lambda: sharded(one).shards_down() == [sharded(one).shards[down].describe()],
            message="the shard down, and only it",
        )
        problem = sharded(one).problem()
        assert problem is None or f"shard {down}" in problem
        # The other shards' channels: live as ever, on both hosts.
        others = [name for index, names in enumerate(per_shard) if index != down for name in names]
        for name in others:
            await publish(two, name, 5)
        assert await collect(alice, len(others)) == {name: [5] for name in others}
        assert await collect(bob, 2) == {per_shard[0][0]: [5], per_shard[2][0]: [5]}
        await eventually(lambda: other_got == [4, 5], message="the other raw client")

        # Back, empty (no persistence): its channels' numbering is gone, and their
        # subscribers are told: Centrifuge clients lose the subscription's state (2500),
        # raw clients are closed with 1012. Nobody else hears a thing.
        servers[down].start()
        code = await asyncio.wait_for(raw_task, 15)
        assert code == 1012 and raw_got == [4]
        told = set()
        for _ in per_shard[down]:
            push = (await alice.push(timeout=15))["push"]
            assert push["unsubscribe"]["code"] == 2500, push
            told.add(push["channel"])
        assert told == set(per_shard[down])
        push = (await bob.push(timeout=15))["push"]
        assert push == {"channel": per_shard[down][0], "unsubscribe": push["unsubscribe"]}
        assert not other_task.done()
        # Publishing there resumes; subscribed again, both get it.
        name = per_shard[down][0]
        await subscribe(alice, name)
        await subscribe(bob, name)
        await eventually(lambda: _published(one, name, 6), timeout=10, message="shard back")
        assert await collect(alice, 1) == {name: [6]}
        assert await collect(bob, 1) == {name: [6]}
        for name in others:
            await publish(one, name, 6)
        assert await collect(alice, len(others)) == {name: [6] for name in others}
        await eventually(lambda: other_got == [4, 5, 6], message="the other raw client")
        assert not other_task.done()
        await raw_other.close()
        await other_task
        for client in (alice, bob):
            await client.ws.close()
        await gone(sharded(one), everything)


async def _listed(broker: ShardedBroker, names: list[str], twice: list[str]) -> bool:
    channels = await broker.cluster_channels()
    return all(channels.get(name) == (2 if name in twice else 1) for name in names)


def _hlen(server: RedisServer, key: str, length: int) -> bool:
    return server.cli("HLEN", key).strip() == str(length)


async def gone(broker: ShardedBroker, names: list[str]) -> None:
    """Every client's leave done in Redis before the hosts stop: a leave still running
    then would be cut off with the loop, and its connection left open."""

    async def empty() -> bool:
        for name in names:
            if await broker.presence(name):
                return False
        return True

    await eventually(empty, message="every member gone")


async def _published(app: Quart, channel: str, n: int) -> bool:
    try:
        await publish(app, channel, n)
    except BrokerUnavailable:
        return False
    return True


async def test_a_host_starts_with_a_shard_down_and_serves_the_others_then_that_one(
    tmp_path: Path,
    redis_shards: list[RedisServer],  # noqa: F811
) -> None:
    servers = redis_shards
    per_shard = channels_per_shard(1)
    servers[2].stop()
    app = await served_app(tmp_path, channel=CHANNELS, broker=shards_url(servers))
    async with hypercorn(app) as port:
        broker = sharded(app)
        assert broker.shards_down() == [broker.shards[2].describe()]
        client = await connected(port, "carol")
        for names in per_shard[:2]:
            await subscribe(client, names[0])
            await publish(app, names[0], 1)
            assert await collect(client, 1) == {names[0]: [1]}
        with pytest.raises(BrokerUnavailable, match="shard 2"):
            await publish(app, per_shard[2][0], 1)
        servers[2].start()
        await eventually(lambda: broker.up, timeout=10, message="every shard up")
        await subscribe(client, per_shard[2][0])
        await publish(app, per_shard[2][0], 2)
        assert await collect(client, 1) == {per_shard[2][0]: [2]}
        await client.ws.close()
        await gone(broker, [names[0] for names in per_shard])
