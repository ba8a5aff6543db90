"""The Redis broker as /metrics shows it, on a real server over a real redis-server:
up while subscribed and down while Redis is, the publications this process found it
missed, its presence members, its publishes timed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from realtime_broker import DEFAULT_CHANNEL
from realtime_broker.redis.names import Names

from ..conftest import RedisServer, Server, eventually
from .test_centrifuge_endpoint import Peer, token
from .test_metrics_centrifuge import api, scrape, start_metered, value


@pytest.fixture
def metered(app_dir: Path, redis_server: RedisServer) -> Iterator[tuple[Server, str]]:
    server, internal = start_metered(app_dir, "--broker", redis_server.url)
    try:
        yield server, internal
    finally:
        server.stop()


async def test_broker_up_presence_and_publishes_follow_redis(
    metered: tuple[Server, str], redis_server: RedisServer
) -> None:
    server, internal = metered
    await eventually(lambda: value(scrape(internal), "realtime_broker_up") == 1)
    ws = await connect(f"ws://127.0.0.1:{server.port}/connection/websocket")
    alice = Peer(ws)
    assert "connect" in await alice.call("connect", token=token("alice"))
    assert "subscribe" in await alice.call("subscribe", channel="chat:up")
    assert "publish" in await alice.call("publish", channel="chat:up", data={"n": 1})
    samples = scrape(internal)
    assert value(samples, "realtime_presence_members") == 1
    assert value(samples, "realtime_broker_publish_duration_seconds_count") == 1
    assert value(samples, "realtime_broker_publish_duration_seconds_sum") > 0
    await ws.close()
    await eventually(lambda: value(scrape(internal), "realtime_presence_members") == 0)

    await asyncio.to_thread(redis_server.stop)
    await eventually(lambda: value(scrape(internal), "realtime_broker_up") == 0, timeout=10)
    await asyncio.to_thread(redis_server.start)
    await eventually(lambda: value(scrape(internal), "realtime_broker_up") == 1, timeout=10)


async def test_publications_missed_while_the_subscription_was_cut_are_counted(
    metered: tuple[Server, str], redis_server: RedisServer
) -> None:
    server, internal = metered
    # Another subscriber keeps listening, so Redis numbers what this server misses
    # while its own subscription is cut (as another process would).
    other = Redis.from_url(redis_server.url, client_name="other-process")
    pubsub = other.pubsub()
    await pubsub.subscribe(Names("realtime").key(DEFAULT_CHANNEL))
    raw = await connect(server.ws_url)  # /ws listens to the default channel
    try:
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{server.url}/send.py?message=before")).status_code == 200
            assert await asyncio.wait_for(raw.recv(), 5) == "before"
            assert value(scrape(internal), "realtime_broker_missed_total") == 0
            clients = redis_server.cli("CLIENT", "LIST", "TYPE", "pubsub").splitlines()
            mine = [c.split()[0].removeprefix("id=") for c in clients if " name= " in c]
            assert len(mine) == 1, clients
            redis_server.cli("CLIENT", "KILL", "ID", mine[0])
            # While the server reconnects (50 ms at least): published, not heard.
            sent = await asyncio.gather(
                *(http.get(f"{server.url}/send.py?message=missed-{n}") for n in range(3))
            )
            assert all(response.status_code == 200 for response in sent)

        def missed() -> float:
            return value(scrape(internal), "realtime_broker_missed_total")

        await eventually(lambda: missed() > 0, timeout=10)
        told = re.findall(r"this process missed (\d+) broadcast", server.log)
        assert missed() == sum(int(n) for n in told) and 1 <= missed() <= 3
    finally:
        await raw.close()
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await other.aclose()


async def test_two_workers_report_one_server(app_dir: Path, redis_server: RedisServer) -> None:
    server, internal = start_metered(app_dir, "--workers", "2", "--broker", redis_server.url)
    peers: list[Peer] = []
    try:
        # Up is the least of the live workers' (livemin): 1, not 2.
        await eventually(lambda: value(scrape(internal), "realtime_broker_up") == 1)
        for n in range(20):  # a connection each: the kernel spreads them over both
            answer = await api(server, "publish", {"channel": "chat:w", "data": {"n": n}})
            # chat: keeps history (app/realtime.toml): where it stands, in one numbering.
            assert answer["result"]["offset"] == n + 1, answer
        for user in ("alice", "bob", "carol", "dave"):
            ws = await connect(f"ws://127.0.0.1:{server.port}/connection/websocket")
            peer = Peer(ws)
            peers.append(peer)
            assert "connect" in await peer.call("connect", token=token(user))
            assert "subscribe" in await peer.call("subscribe", channel="chat:w")
        for _ in range(4):  # whichever worker answers, the sum of both
            samples = scrape(internal)
            assert value(samples, "realtime_publications_total", source="api") == 20
            assert value(samples, "realtime_api_duration_seconds_count", method="publish") == 20
            assert value(samples, "realtime_command_duration_seconds_count", method="connect") == 4
            assert value(samples, "realtime_broker_publish_duration_seconds_count") == 20
        # Gauges are sampled about once a second in the worker that is not scraped.
        await eventually(lambda: value(scrape(internal), "realtime_presence_members") == 4)
        await eventually(
            lambda: value(scrape(internal), "realtime_connections", protocol="centrifuge") == 4
        )
    finally:
        for peer in peers:
            await peer.ws.close()
        server.stop()
