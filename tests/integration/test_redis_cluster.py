"""Issue 23: Redis Cluster with sharded pub/sub (``--broker redis+cluster://...``).

Debian's redis-server as a cluster of 3 primaries and 3 replicas on loopback
(tests/redis_cluster.py). Two hosts (``realtime run``), Centrifuge and raw /ws clients
on channels spread over all three shards: every publication reaches exactly its
channel's subscribers, in order. Then one primary is SIGKILLed and its replica takes
over: publishing on the other shards never stops and their clients notice nothing;
on the killed shard, publishing resumes on its own, and a host that missed
publications meanwhile tells exactly that shard's clients (Centrifuge: unsubscribed
with "insufficient state", then ``recovered: true`` from the replica's history; raw
/ws: closed with 1012).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_broker import Member, PresenceMode, Publication, StreamPosition
from realtime_broker.redis.clustered import RedisClusterBroker
from realtime_broker.redis.names import ClusterNames
from realtime_broker.redis.slots import slot_of

from ..conftest import Server, eventually
from ..redis_cluster import RedisCluster, redis_cluster  # noqa: F401 (a fixture)
from .test_centrifuge_endpoint import SECRET, Peer, connected

API_KEY = "cluster-api-key"
#: The promise: a publication on the killed shard is taken this long after the kill.
RESUMES_WITHIN = 10.0
CONFIG = f"""
token_hmac_secret = "{SECRET}"
api_key = "{API_KEY}"

[channel.without_namespace]
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true

[[channel.namespaces]]
name = "feed"
allow_subscribe_for_client = true
history_size = 100
history_ttl = "600s"
force_recovery = true
"""
NAMES = ClusterNames("realtime")


def host(app_dir: Path, tmp_path: Path, url: str) -> Server:
    config = tmp_path / "realtime.toml"
    config.write_text(CONFIG)
    return Server(app_dir, "--config", str(config), "--broker", url, "--broker-timeout", "1")


def slot(channel: str) -> int:
    return slot_of(NAMES.key(channel))


def spread(cluster: RedisCluster, stem: str) -> list[str]:
    """One channel named ``stem`` + a number per shard, in the shards' order."""
    owners = [node.port for node in cluster.primaries()]
    found: dict[int, str] = {}
    n = 0
    while len(found) < len(owners):
        name = f"{stem}{n}"
        found.setdefault(cluster.primary_of(slot(name)).port, name)
        n += 1
    return [found[port] for port in owners]


async def publish(api: httpx.AsyncClient, server: Server, channel: str, n: int) -> int:
    """The server API's publish: 200 once taken, else the API's error code."""
    try:
        response = await api.post(
            f"{server.url}/api/publish", json={"channel": channel, "data": {"n": n}}
        )
    except httpx.HTTPError:
        return 0
    if response.status_code != 200:
        return response.status_code
    error = response.json().get("error")
    return 200 if error is None else int(error["code"])


class Raw:
    """A raw /ws client on one channel: what it got, and how it was closed."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.got: list[int] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> int | None:
        try:
            async for message in self.ws:
                self.got.append(json.loads(message)["n"])
        except ConnectionClosed:
            pass
        return self.ws.close_code


class Centrifuge:
    """A Centrifuge client subscribed to several channels: its pushes per channel."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.got: dict[str, list[int]] = {}
        self.unsubscribed: dict[str, list[int]] = {}
        self.positions: dict[str, tuple[str, int]] = {}

    async def subscribe(self, channel: str) -> None:
        sub = (await self.peer.call("subscribe", channel=channel))["subscribe"]
        self.got[channel] = []
        self.positions[channel] = (sub.get("epoch", ""), sub.get("offset", 0))

    async def until(self, done: Callable[[], bool], timeout: float = 10) -> None:
        """Read pushes until ``done()``."""
        async with asyncio.timeout(timeout):
            while not done():
                push = (await self.peer.push(timeout=timeout))["push"]
                channel = push["channel"]
                if "pub" in push:
                    pub = push["pub"]
                    self.got[channel].append(pub["data"]["n"])
                    self.positions[channel] = (self.positions[channel][0], pub["offset"])
                elif "unsubscribe" in push:
                    self.unsubscribed.setdefault(channel, []).append(push["unsubscribe"]["code"])

    async def recover(self, channel: str) -> dict[str, Any]:
        epoch, offset = self.positions[channel]
        reply = await self.peer.call(
            "subscribe", channel=channel, recover=True, epoch=epoch, offset=offset
        )
        sub: dict[str, Any] = reply["subscribe"]
        for pub in sub.get("publications", ()):
            self.got[channel].append(pub["data"]["n"])
        return sub


def test_channel_slots_are_redis_own_and_the_names_share_the_channels_tag(
    redis_cluster: RedisCluster,  # noqa: F811
) -> None:
    """The broker's slot of a channel is the one Redis computes (CLUSTER KEYSLOT), for
    its shard channel and every key of it: one script, one slot."""
    for channel in ("feed:a", "news0", "{x}", "a}:meta", "with space", "é", "n" * 255):
        expected = redis_cluster.keyslot(NAMES.key(channel))
        assert slot(channel) == expected, channel
        for key in (NAMES.meta_key(channel), NAMES.history_key(channel),
                    *NAMES.presence_keys(channel), NAMES.result_key(channel, "k")):  # fmt: skip
            assert redis_cluster.keyslot(key) == expected, key
    control = redis_cluster.keyslot(NAMES.control)
    assert redis_cluster.keyslot(NAMES.control_key(b"0123abcd")) == control


async def test_every_script_runs_in_its_channels_slot_on_every_shard(
    redis_cluster: RedisCluster,  # noqa: F811
) -> None:
    """Publishing (with history and an idempotency key), reading history, presence
    with its joins and leaves, and control messages, on channels of all three shards,
    between two brokers: each script's keys and shard channel share a slot."""
    settings = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 1024}
    first, second = (RedisClusterBroker(redis_cluster.url, settings) for _ in range(2))
    told: list[tuple[str, bool, str]] = []
    controls: list[bytes] = []
    for broker in (first, second):
        broker.history_policy = lambda channel: (10, 60.0)
        broker.presence_policy = lambda channel: PresenceMode(True, True)
    second.on_presence(lambda ch, event: told.append((ch, event.joined, event.member.client)))
    second.on_control(controls.append)
    channels = spread(redis_cluster, "room")
    got: dict[str, list[str]] = {channel: [] for channel in channels}
    await first.start()
    await second.start()
    try:
        assert len(second._links) == 3 and sum(link.control for link in second._links) == 1
        for channel in channels:
            second.subscribe(channel, lambda p, c=channel: got[c].append(str(p.data)) or 1)
            await second.ready(channel)
        for channel in channels:
            for n in (1, 2):
                result = await first.publish_result(channel, f"{channel}-{n}", idempotency_key="k")
                assert result.position == StreamPosition(1, result.position.epoch), result
            assert (await first.publish_result(channel, "again", idempotency_key="k")).suppressed
            await first.publish(channel, Publication(f"{channel}-2"))
        await eventually(
            lambda: all(got[c] == [f"{c}-1", f"{c}-2"] for c in channels), message="in order"
        )
        for channel in channels:
            page = await second.history(channel, limit=-1)
            assert [p.data for p in page.publications] == [f"{channel}-1", f"{channel}-2"]
            assert page.position.offset == 2
            await first.join_presence(channel, Member(f"c-{channel}", "u"))
        await eventually(lambda: len(told) == 3, message="three joins heard")
        assert sorted(told) == sorted((c, True, f"c-{c}") for c in channels)
        for channel in channels:
            assert set(await second.presence(channel)) == {f"c-{channel}"}
            await first.leave_presence(channel, f"c-{channel}")
        await eventually(lambda: len(told) == 6, message="three leaves heard")
        await first.publish_control(b'{"op":"x"}')
        await eventually(lambda: controls == [b'{"op":"x"}'], message="the control message")
        assert not second.tally.counts, second.tally.counts
    finally:
        await first.close()
        await second.close()


async def test_sharded_pubsub_over_three_shards_and_a_primary_failing_over(
    app_dir: Path,
    tmp_path: Path,
    redis_cluster: RedisCluster,  # noqa: F811
) -> None:
    """Host A is paused (SIGSTOP) while one shard fails over and host B publishes there,
    so A finds, every time, that it missed publications on that shard only."""
    cluster = redis_cluster
    feeds = spread(cluster, "feed:s")
    news = spread(cluster, "news")
    victim_feed, victim_news = feeds[1], news[1]
    a = host(app_dir, tmp_path, cluster.url).start()
    b = host(app_dir, tmp_path, cluster.url).start()
    try:
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as api:
            centrifuges = {}
            raws: dict[tuple[str, str], Raw] = {}
            for name, server in (("a", a), ("b", b)):
                client = Centrifuge(await connected(server.port))
                for channel in feeds:
                    await client.subscribe(channel)
                centrifuges[name] = client
                for channel in news:
                    raws[name, channel] = Raw(await connect(f"{server.ws_url}?channel={channel}"))
            # Before anything fails: exactly each channel's publications, in order.
            for n in (1, 2):
                for channel in feeds + news:
                    assert await publish(api, b, channel, n) == 200, channel
            for client in centrifuges.values():
                await client.until(lambda c=client: all(c.got[f] == [1, 2] for f in feeds))
            await eventually(
                lambda: all(raw.got == [1, 2] for raw in raws.values()), message="raw 1, 2"
            )

            victim = cluster.primary_of(slot(victim_feed))
            assert victim is cluster.primary_of(slot(victim_news))
            assert victim.cli("WAIT", "1", "5000").strip() == "1"  # the replica has it all
            assert a.process is not None
            os.kill(a.process.pid, signal.SIGSTOP)
            try:
                victim.kill()
                killed = time.monotonic()
                # The other shards take publications all along.
                for channel in [c for c in feeds + news if c not in (victim_feed, victim_news)]:
                    assert await publish(api, b, channel, 3) == 200, channel
                while await publish(api, b, victim_feed, 3) != 200:
                    assert time.monotonic() - killed < RESUMES_WITHIN, "publishing did not resume"
                    await asyncio.sleep(0.05)
                resumed = time.monotonic() - killed
                assert await publish(api, b, victim_news, 3) == 200
                assert cluster.primary_of(slot(victim_feed)) is not victim
            finally:
                os.kill(a.process.pid, signal.SIGCONT)
            for channel in feeds + news:
                assert await publish(api, b, channel, 4) == 200, channel

            # B never lost its place: everything, in order, nobody told anything.
            other = centrifuges["b"]
            await other.until(lambda: all(other.got[f] == [1, 2, 3, 4] for f in feeds))
            await eventually(
                lambda: all(raws["b", c].got == [1, 2, 3, 4] for c in news),
                timeout=10,
                message="B's raw clients got 1..4",
            )
            # A, back, missed 3 on the killed shard's channels: told there, only there.
            client = centrifuges["a"]
            await client.until(lambda: victim_feed in client.unsubscribed, timeout=20)
            assert client.unsubscribed == {victim_feed: [2500]}
            code = await asyncio.wait_for(raws["a", victim_news].task, 20)
            assert code == 1012 and raws["a", victim_news].got == [1, 2]
            back = await client.recover(victim_feed)
            assert back["recovered"] is True, back
            assert client.got[victim_feed] == [1, 2, 3, 4]
            healthy = [f for f in feeds if f != victim_feed]
            await client.until(lambda: all(client.got[f] == [1, 2, 3, 4] for f in healthy))
            for channel in news:
                if channel != victim_news:
                    raw = raws["a", channel]
                    await eventually(lambda r=raw: r.got == [1, 2, 3, 4], message=channel)
                    assert not raw.task.done(), channel
            assert all(not raw.task.done() for (name, _), raw in raws.items() if name == "b")
            assert not centrifuges["b"].unsubscribed
            # Live again on A's killed shard: its own publication reaches its client.
            assert await publish(api, a, victim_feed, 5) == 200
            await client.until(lambda: client.got[victim_feed][-1:] == [5])
            assert client.got[victim_feed] == [1, 2, 3, 4, 5]
        print(f"publishing on the killed shard resumed {resumed:.2f} s after the kill")
    finally:
        a.stop()
        b.stop()


async def test_publishing_steadily_through_a_failover_loses_nothing_silently(
    app_dir: Path,
    tmp_path: Path,
    redis_cluster: RedisCluster,  # noqa: F811
) -> None:
    """One host, a raw client per shard, a publication on each channel in turn every
    few tens of milliseconds while a primary is killed: the other shards' publications
    are all taken and all delivered, in order, their clients never closed; on the
    killed shard every publication taken reaches its client, unless the client was
    closed with 1012 (told)."""
    cluster = redis_cluster
    news = spread(cluster, "news")
    victim_news = news[2]
    server = host(app_dir, tmp_path, cluster.url).start()
    try:
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as api:
            raws = {c: Raw(await connect(f"{server.ws_url}?channel={c}")) for c in news}
            taken: dict[str, list[int]] = {c: [] for c in news}
            for channel in news:
                assert await publish(api, server, channel, 0) == 200
                taken[channel].append(0)
            await eventually(lambda: all(raws[c].got == [0] for c in news), message="first")
            victim = cluster.primary_of(slot(victim_news))
            assert victim.cli("WAIT", "1", "5000").strip() == "1"
            victim.kill()
            killed = time.monotonic()
            n = 0
            first_taken = None
            while len([x for x in taken[victim_news] if x > 0]) < 5:
                n += 1
                assert time.monotonic() - killed < RESUMES_WITHIN + 5, "publishing did not resume"
                for channel in news:
                    status = await publish(api, server, channel, n)
                    if channel != victim_news:
                        assert status == 200, (channel, n, status)
                    else:
                        assert status in (200, 100), status
                    if status == 200:
                        taken[channel].append(n)
                        if channel == victim_news and first_taken is None:
                            first_taken = time.monotonic() - killed
                await asyncio.sleep(0.03)
            for channel in news:
                raw = raws[channel]
                if channel == victim_news and raw.task.done():
                    assert raw.task.result() == 1012
                    continue
                await eventually(
                    lambda r=raw, c=channel: r.got == taken[c] or r.task.done(),
                    timeout=10,
                    message=f"{channel} got all taken",
                )
                if channel == victim_news and raw.task.done():
                    assert raw.task.result() == 1012
                else:
                    assert raw.got == taken[channel], channel
                    assert not raw.task.done(), channel
        print(
            f"the killed shard took publications again {first_taken:.2f} s after the kill; "
            f"its client was {'closed (1012)' if raws[victim_news].task.done() else 'kept'}"
        )
    finally:
        server.stop()


async def test_a_slot_moved_to_another_shard_is_followed(
    redis_cluster: RedisCluster,  # noqa: F811
) -> None:
    """Resharding while subscribed: the moved channel's publications reach the
    subscriber again (from its new shard) with its numbering and history moved along,
    anything missed meanwhile told; the shard the move did not touch keeps its link."""
    settings = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 1024}
    publisher, listener = (RedisClusterBroker(redis_cluster.url, settings) for _ in range(2))
    for broker in (publisher, listener):
        broker.history_policy = lambda channel: (10, 60.0)
    lost: list[str] = []
    listener.on_loss(lambda channel, missed: lost.append(channel))
    channels = spread(redis_cluster, "room")
    got: dict[str, list[str]] = {channel: [] for channel in channels}
    await publisher.start()
    await listener.start()
    try:
        for channel in channels:
            listener.subscribe(channel, lambda p, c=channel: got[c].append(str(p.data)) or 1)
            await listener.ready(channel)
            await publisher.publish(channel, "1")
        await eventually(lambda: all(got[c] == ["1"] for c in channels), message="first")
        moved, untouched = channels[0], channels[2]
        kept = listener._link_of(untouched)
        target = redis_cluster.primary_of(slot(channels[1]))
        redis_cluster.move_slot(slot(moved), target)

        async def taken(channel: str, data: str) -> None:
            async with asyncio.timeout(RESUMES_WITHIN):
                while True:
                    try:
                        await publisher.publish(channel, data)
                        return
                    except Exception:
                        await asyncio.sleep(0.05)

        for data in ("2", "3"):
            for channel in channels:
                await taken(channel, data)
        await eventually(
            lambda: all(got[c][-1:] == ["3"] or c in lost for c in channels),
            timeout=10,
            message="3 on all, or a loss told",
        )
        assert all(got[c] == ["1", "2", "3"] for c in channels if c != moved), got
        # The moved channel: everything, or what is missing told.
        assert got[moved] == ["1", "2", "3"] or moved in lost, (got[moved], lost)
        assert set(lost) <= {moved}, lost
        page = await listener.history(moved, limit=-1)
        assert [p.data for p in page.publications] == ["1", "2", "3"]
        assert listener._link_of(untouched) is kept and kept.losses == 0
        assert listener._link_of(moved).slots != frozenset(), "a link holds the moved slot"
        assert slot(moved) in listener._link_of(moved).slots
        assert listener._link_of(moved) is listener._link_of(channels[1])
        # Live on its new shard.
        await publisher.publish(moved, "4")
        await eventually(lambda: got[moved][-1:] == ["4"], message="live after the move")
    finally:
        await publisher.close()
        await listener.close()
