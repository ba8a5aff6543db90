"""Issue 23: the Redis broker behind Sentinels follows a failover without a restart.

Debian's redis-server and redis-sentinel on loopback: a master, its replica, three
Sentinels (quorum 2, the master called down after 1 s). Hosts are ``realtime run``
with ``--broker redis+sentinel://...``; the master is SIGKILLed, the Sentinels promote
the replica, publishing resumes within 10 s, and what a host missed meanwhile is told
to its clients as after a Redis restart: the Centrifuge client is unsubscribed with
"insufficient state" and recovers from history, the raw /ws client is closed with 1012.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime_broker import BrokerUnavailable, Publication
from realtime_broker.redis.sentinel import describe, parse
from realtime_broker.redis.sentinel_broker import SentinelBroker

from ..conftest import Server, eventually
from ..redis_topologies import SentinelSet, sentinel_set  # noqa: F401 (a fixture)
from .test_centrifuge_endpoint import SECRET, Peer, connected

API_KEY = "sentinel-api-key"
#: The promise: a publication made this long after the master died is taken.
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


def host(app_dir: Path, tmp_path: Path, url: str) -> Server:
    config = tmp_path / "realtime.toml"
    config.write_text(CONFIG)
    return Server(app_dir, "--config", str(config), "--broker", url, "--broker-timeout", "1")


async def publish(api: httpx.AsyncClient, server: Server, channel: str, n: int) -> int:
    """The server API's publish on ``server``: 200 once taken, else the API's error code
    (Centrifugo's API answers HTTP 200 with an error in the body: 100 while no master)."""
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


async def raw_messages(ws: ClientConnection, into: list[int]) -> int | None:
    """Collect a raw client's publications until it is closed; its close code."""
    try:
        async for message in ws:
            into.append(json.loads(message)["n"])
    except ConnectionClosed:
        pass
    return ws.close_code


async def pub_numbers(client: Peer, count: int) -> list[int]:
    got = []
    for _ in range(count):
        got.append((await client.push(timeout=10))["push"]["pub"]["data"]["n"])
    return got


def test_the_url_names_sentinels_master_database_and_credentials() -> None:
    target = parse(
        "redis+sentinel://user:p%40ss@h1:26379,h2,[::1]:26381/mymaster/3"
        "?sentinel_password=s3cret&sentinel_username=watch"
    )
    assert target.sentinels == (("h1", 26379), ("h2", 26379), ("::1", 26381))
    assert (target.master, target.db, target.username, target.password) == (
        "mymaster", 3, "user", "p@ss",
    )  # fmt: skip
    assert (target.sentinel_username, target.sentinel_password, target.tls) == (
        "watch", "s3cret", False,
    )  # fmt: skip
    # Centrifugo's spelling of the master's name, and the database as an option.
    centrifugo = parse("rediss+sentinel://:pw@h1:26379?sentinel_master_name=m&db=2")
    assert (centrifugo.master, centrifugo.db, centrifugo.password, centrifugo.tls) == (
        "m", 2, "pw", True,
    )  # fmt: skip
    for bad in ("redis+sentinel://h1:26379", "redis+sentinel:///m", "redis+sentinel://h:x/m",
                "redis+sentinel://h:1/m?what=1"):  # fmt: skip
        with pytest.raises(ValueError, match="Sentinel"):
            parse(bad)
    # Logged and shown without any password.
    shown = describe("redis+sentinel://u:pw@h1:1,h2:2/m?db=0&sentinel_password=x")
    assert shown == "redis+sentinel://h1:1,h2:2/m?db=0"


async def test_a_failover_is_followed_and_what_a_host_missed_is_told(
    app_dir: Path,
    tmp_path: Path,
    sentinel_set: SentinelSet,  # noqa: F811
) -> None:
    """Host A asks only the third Sentinel, which is stopped (SIGSTOP) while the other
    two fail the master over, so A finds the new master only after host B published
    there: a gap A must tell its clients of, every time, rather than by chance."""
    topology = sentinel_set
    first, second, third = topology.sentinels
    a = host(app_dir, tmp_path, topology.url(third))
    b = host(app_dir, tmp_path, topology.url(first, second))
    try:
        a.start()
        b.start()
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as api:
            centrifuge = await connected(a.port)
            sub = (await centrifuge.call("subscribe", channel="feed:x"))["subscribe"]
            assert sub["recoverable"] is True
            raw = await connect(f"{a.ws_url}?channel=news")
            raw_got: list[int] = []
            raw_task = asyncio.create_task(raw_messages(raw, raw_got))
            for n in (1, 2):
                assert await publish(api, b, "feed:x", n) == 200
                assert await publish(api, b, "news", n) == 200
            assert await pub_numbers(centrifuge, 2) == [1, 2]
            await eventually(lambda: raw_got == [1, 2], message="raw client got 1, 2")
            centrifuge_position = (sub.get("epoch", ""), 2)

            assert third.process is not None
            os.kill(third.process.pid, signal.SIGSTOP)
            try:
                topology.master.kill()
                killed = time.monotonic()
                n = 3
                while await publish(api, b, "feed:x", n) != 200:
                    assert time.monotonic() - killed < RESUMES_WITHIN, "publishing did not resume"
                    await asyncio.sleep(0.1)
                resumed = time.monotonic() - killed
                # The Sentinels that failed over agree on the replica (one may learn it
                # from the other a moment later).
                promoted = topology.replica.port
                await eventually(lambda: topology.master_port(first) == promoted, timeout=5)
                assert await publish(api, b, "news", 3) == 200
                for n in (4, 5):
                    assert await publish(api, b, "feed:x", n) == 200
            finally:
                os.kill(third.process.pid, signal.SIGCONT)

            # A follows once its Sentinel is back, and finds it missed 3..5 on feed:x and
            # 3 on news: the raw client is closed with 1012 (its page reloads)...
            code = await asyncio.wait_for(raw_task, 20)
            assert code == 1012 and raw_got == [1, 2]
            # ... the Centrifuge client is told it lost state, and recovers from history.
            push = (await centrifuge.push(timeout=20))["push"]
            assert push["channel"] == "feed:x"
            assert push["unsubscribe"]["code"] == 2500, push
            epoch, offset = centrifuge_position
            back = (
                await centrifuge.call(
                    "subscribe", channel="feed:x", recover=True, epoch=epoch, offset=offset
                )
            )["subscribe"]
            assert back["recovered"] is True, back
            assert [p["data"]["n"] for p in back["publications"]] == [3, 4, 5]
            assert [p["offset"] for p in back["publications"]] == [3, 4, 5]
            # Live again on A: its own publications reach its own client.
            assert await publish(api, a, "feed:x", 6) == 200
            assert await pub_numbers(centrifuge, 1) == [6]
            await centrifuge.ws.close()
        assert resumed < RESUMES_WITHIN
        print(f"publishing resumed {resumed:.2f} s after the master was killed")
    finally:
        a.stop()
        b.stop()


async def test_one_host_with_every_sentinel_loses_nothing_silently(
    app_dir: Path,
    tmp_path: Path,
    sentinel_set: SentinelSet,  # noqa: F811
) -> None:
    """Publishing steadily through the failover: every publication answered 200 reaches
    the raw client, unless the client was closed with 1012 (then it was told)."""
    topology = sentinel_set
    server = host(app_dir, tmp_path, topology.url())
    try:
        server.start()
        async with httpx.AsyncClient(headers={"X-API-Key": API_KEY}, timeout=10) as api:
            raw = await connect(f"{server.ws_url}?channel=news")
            got: list[int] = []
            task = asyncio.create_task(raw_messages(raw, got))
            assert await publish(api, server, "news", 1) == 200
            await eventually(lambda: got == [1], message="the first publication")
            topology.master.kill()
            killed = time.monotonic()
            taken: list[int] = []
            n = 1
            while len(taken) < 5:
                n += 1
                status = await publish(api, server, "news", n)
                assert status in (200, 100), status
                if status == 200:
                    taken.append(n)
                assert taken or time.monotonic() - killed < RESUMES_WITHIN, "did not resume"
                await asyncio.sleep(0.05)
            first_taken = taken[0]
            promoted = topology.replica.port
            await eventually(lambda: topology.master_port() == promoted, timeout=5)
            if task.done():
                assert task.result() == 1012  # told: it missed something
            else:
                await eventually(
                    lambda: got[-len(taken) :] == taken or task.done(),
                    message="every publication taken delivered",
                )
                if task.done():
                    assert task.result() == 1012
                else:
                    assert got == sorted(got) and set(taken) <= set(got)
            await raw.close()
            assert first_taken > 1
    finally:
        server.stop()


async def test_passwords_for_redis_and_for_the_sentinels(tmp_path: Path) -> None:
    """Redis with requirepass, Sentinels with their own: the URL carries both."""
    topology = SentinelSet(tmp_path / "auth", password="redis-pw", sentinel_password="s-pw")
    try:
        topology.start()
        url = topology.url()
        assert url.startswith("redis+sentinel://:redis-pw@") and "sentinel_password=s-pw" in url
        got: list[str | bytes] = []

        def deliver(publication: Publication) -> int:
            got.append(publication.data)
            return 1

        broker = SentinelBroker(url, {"broker_timeout": 0.5})
        broker.subscribe("news", deliver)
        await broker.start()
        try:
            await broker.ready("news")
            await broker.publish("news", "hello")
            await eventually(lambda: got == ["hello"], message="delivered through Sentinel")
        finally:
            await broker.close()
        for wrong in (url.replace(":redis-pw@", ":nope@"), url.replace("s-pw", "nope")):
            refused = SentinelBroker(wrong, {"broker_timeout": 0.5})
            await refused.start()  # serves anyway, saying so; publishing answers 503
            try:
                with pytest.raises(BrokerUnavailable):
                    await refused.publish("news", "no")
                assert not refused.up
            finally:
                await refused.close()
    finally:
        topology.stop()
