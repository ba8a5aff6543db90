"""Redis ACLs for production, as docs/operations.md recommends them, against redis-server 7.

realtime gets a user limited to its own keys and channels and to the commands it runs;
nobody else may publish on its channels. ``/-/health`` reports a process whose
subscription is refused, and recovers by itself once Redis allows it again.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect

from realtime_broker.redis import RedisBroker

from ..conftest import RedisServer, Server
from .test_broker_channels import SETTINGS
from .test_centrifuge_endpoint import Peer

#: The line in docs/operations.md, word for word (the password aside).
REALTIME_USER = (
    "realtime on >s3cret resetkeys ~realtime:* resetchannels &realtime:* -@all "
    "+evalsha +script|load +hget +hmget +hset +hincrby +hgetall +hdel +del +expire "
    "+publish +subscribe +unsubscribe +ping +select +pexpire +xadd +xrange +xrevrange +time "
    "+zadd +zrem +zrangebyscore +zscore +hlen +hscan"
)
ADMIN = ("--user", "admin", "--pass", "adminpw", "--no-auth-warning")


@pytest.fixture
def locked_down(redis_server: RedisServer) -> RedisServer:
    """Redis with realtime's user, an admin, another application's user, and no default."""
    redis_server.cli("ACL", "SETUSER", "admin", "on", ">adminpw", "~*", "&*", "+@all")
    redis_server.cli("ACL", "SETUSER", *REALTIME_USER.split())
    # Another application on the same Redis: every key and command, but no channels.
    redis_server.cli("ACL", "SETUSER", "other", "on", ">otherpw", "~*", "resetchannels", "+@all")
    redis_server.cli("ACL", "SETUSER", "default", "off")
    return redis_server


def admin(redis_server: RedisServer, *args: str) -> str:
    return redis_server.cli(*ADMIN, *args)


async def health(server: Server) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.url}/-/health", headers={"Connection": "close"})


async def until_sent(server: Server, message: str) -> str:
    """Broadcast until the page's subscription is up (503 before), and say to how many."""
    deadline = time.monotonic() + 5
    while (response := await send(server, message)).status_code == 503:
        assert time.monotonic() < deadline, response.text
        await asyncio.sleep(0.05)
    assert response.status_code == 200, response.text
    return response.text.strip()


async def send(server: Server, message: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.get(f"{server.url}/send.py", params={"message": message})


async def test_realtime_works_with_the_recommended_acl_and_others_cannot_publish(
    app_dir: Path, locked_down: RedisServer
) -> None:
    url = f"redis://realtime:s3cret@127.0.0.1:{locked_down.port}/0"
    server = Server(app_dir, "--workers", "2", "--broker", url).start()
    try:
        # Enough pages that both workers get some (the kernel spreads them at random;
        # a worker with no client listens to no channel, and has nothing to cut).
        pages = [await connect(server.ws_url) for _ in range(16)]
        assert (await send(server, "one")).status_code == 200
        # Every subscription cut: each worker resubscribes and compares with Redis
        # (HMGET, and a PING through the subscription) under the same user.
        admin(locked_down, "CLIENT", "KILL", "TYPE", "pubsub")
        deadline = time.monotonic() + 10
        while server.log.count("resubscribed to redis") < 2:
            assert time.monotonic() < deadline, server.log
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.2)  # every worker's count reported again
        response = await send(server, "two")
        assert response.text.strip() == "Sent to 16 clients."
        for ws in pages:
            assert [await asyncio.wait_for(ws.recv(), 5) for _ in range(2)] == ["one", "two"]
            await ws.close()
        assert (await health(server)).status_code == 200
        other = redis.Redis(port=locked_down.port, username="other", password="otherpw")
        with pytest.raises(redis.exceptions.NoPermissionError):
            other.publish("realtime:channel:default", "realtime/1 abcd1234 99 tforged")
        other.close()
        assert "NOPERM" not in server.log and "no permissions" not in server.log
    finally:
        server.stop()


async def test_health_reports_a_refused_subscription_and_recovers(
    app_dir: Path, locked_down: RedisServer
) -> None:
    url = f"redis://realtime:s3cret@127.0.0.1:{locked_down.port}/0"
    server = Server(app_dir, "--broker", url).start()
    try:
        # A process listens to a channel only while it has clients there: a page.
        page = await connect(server.ws_url)
        assert await until_sent(server, "hello") == "Sent to 1 client."
        assert await asyncio.wait_for(page.recv(), 5) == "hello"
        assert (await health(server)).text == "ok\n"
        # Taking a user's channels away disconnects its subscribers (Redis 7), and
        # every resubscription is refused from then on.
        admin(locked_down, "ACL", "SETUSER", "realtime", "resetchannels")
        deadline = time.monotonic() + 5
        while (response := await health(server)).status_code == 200:
            assert time.monotonic() < deadline, "health never reported the lost subscription"
            await asyncio.sleep(0.1)
        await asyncio.sleep(2.0)  # attempts keep being refused meanwhile
        response = await health(server)
        assert response.status_code == 503
        assert response.text.startswith("broker: not subscribed to the redis broker for ")
        admin(locked_down, "ACL", "SETUSER", "realtime", "&realtime:*")
        deadline = time.monotonic() + 5
        while (response := await health(server)).status_code != 200:
            assert time.monotonic() < deadline, response.text
            await asyncio.sleep(0.1)
        assert (await send(server, "back")).status_code == 200
        assert await asyncio.wait_for(page.recv(), 5) == "back"  # nothing missed meanwhile
        await page.close()
        assert "cannot subscribe to redis yet (NoPermissionError" in server.log
    finally:
        server.stop()


async def test_history_and_presence_work_with_the_recommended_acl(
    app_dir: Path, locked_down: RedisServer
) -> None:
    """The chat rooms' defaults (history, recovery, presence, joins and leaves) run
    their scripts under realtime's user, renewals included."""
    url = f"redis://realtime:s3cret@127.0.0.1:{locked_down.port}/0"
    server = Server(
        app_dir,
        "--broker", url,
        "--token-hmac-secret", "acl-test-secret",  # chat_token.py: one secret, many hosts
        "--presence-ttl", "2",
        "--presence-update-interval", "0.5",
    ).start()  # fmt: skip
    try:
        clients = []
        for user in ("ada", "bob"):
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.get(f"{server.url}/chat_token.py", params={"user": user})
            ws = await connect(f"ws://127.0.0.1:{server.port}/connection/websocket")
            client = Peer(ws)
            client.skip_join_leave = False
            assert "connect" in await client.call("connect", token=answer.json()["token"])
            assert "subscribe" in await client.call("subscribe", channel="chat:acl")
            clients.append(client)
        ada, bob = clients
        assert "join" in (await ada.push())["push"]  # ada's own
        assert (await ada.push())["push"]["join"]["info"]["user"] == "guest-bob"
        assert "publish" in await ada.call("publish", channel="chat:acl", data={"text": "hi"})
        assert (await ada.push())["push"]["pub"]["offset"] == 1
        history = (await bob.call("history", channel="chat:acl", limit=-1))["history"]
        assert [p["data"] for p in history["publications"]] == [{"text": "hi"}]
        await asyncio.sleep(1.5)  # renewals ran, and kept both
        stats = (await ada.call("presence_stats", channel="chat:acl"))["presence_stats"]
        assert stats == {"num_clients": 2, "num_users": 2}
        await bob.ws.close()
        push = (await ada.push())["push"]  # no join again from the renewals: the leave
        assert push["leave"]["info"]["user"] == "guest-bob"
        await ada.ws.close()
        assert "NOPERM" not in server.log and "no permissions" not in server.log, server.log
    finally:
        server.stop()


async def test_control_messages_work_with_the_recommended_acl(locked_down: RedisServer) -> None:
    """The control script and the proofs' reads need no command beyond the ACL's."""
    url = f"redis://realtime:s3cret@127.0.0.1:{locked_down.port}/0"
    broker = RedisBroker(url, SETTINGS)
    heard: list[bytes] = []
    broker.on_control(heard.append)
    await broker.start()
    try:
        assert broker.subscribed
        await broker.publish_control(b'{"op":"refresh","user":"nobody"}')
        async with asyncio.timeout(5):
            while not heard:
                await asyncio.sleep(0.01)
        assert heard == [b'{"op":"refresh","user":"nobody"}']
        assert not broker.tally.counts, broker.tally.counts
    finally:
        await broker.close()
