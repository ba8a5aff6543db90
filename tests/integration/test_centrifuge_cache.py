"""Cache recovery mode, publish results and idempotent publishes (issue 21, item 4).

A namespace with ``force_recovery_mode = "cache"`` gives a subscriber that asks to
recover (an empty ``since`` in centrifuge-js: ``recover: true`` at offset 0) the
channel's latest publication at once, in the subscribe result, as Centrifugo does;
``auto_cache_recover`` gives it without asking, server-side subscriptions too. The
server API's ``publish`` and ``broadcast`` answer the publication's ``offset`` and
``epoch``, and publish once per ``idempotency_key``. With ``memory://`` and Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cent
import httpx
import pytest
from centrifuge import Client, PublicationContext, SubscriptionEventHandler
from quart import Quart

from realtime import create_app

from ..conftest import RedisServer
from .test_centrifuge_endpoint import PATH, SECRET, connected, peer, token
from .test_fanout import hypercorn

KEY = "cache-api-key"
KEEPS = {"allow_subscribe_for_client": True, "history_size": 10, "history_ttl": "300s"}
CHANNELS: dict[str, Any] = {
    "without_namespace": {"allow_subscribe_for_client": True},
    "namespaces": [
        {"name": "cache", **KEEPS, "force_recovery": True, "force_recovery_mode": "cache"},
        {"name": "auto", **KEEPS, "force_recovery": True, "force_recovery_mode": "cache",
         "auto_cache_recover": True},
        {"name": "stream", **KEEPS, "force_recovery": True},
    ],
}  # fmt: skip


def settings(**more: Any) -> dict[str, Any]:
    return {"token_hmac_secret": SECRET, "api_key": KEY, "channel": CHANNELS, **more}


@pytest.fixture(params=["memory", "redis"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    more = {}
    if request.param == "redis":
        redis: RedisServer = request.getfixturevalue("redis_server")
        more["broker"] = redis.url
    app = create_app(tmp_path, settings=settings(**more))
    async with hypercorn(app) as port:
        yield app, port


async def api(port: int, method: str, body: dict[str, Any]) -> Any:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"http://127.0.0.1:{port}/api/{method}", json=body, headers={"X-API-Key": KEY}
        )
    assert response.status_code == 200, response.text
    return response.json()


async def publish_three(port: int, channel: str) -> list[dict[str, Any]]:
    return [
        (await api(port, "publish", {"channel": channel, "data": {"n": n}}))["result"]
        for n in (1, 2, 3)
    ]


async def test_publish_results_carry_offset_and_epoch_where_history_is_kept(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    results = await publish_three(port, "stream:a")
    assert [result["offset"] for result in results] == [1, 2, 3]
    assert len({result["epoch"] for result in results}) == 1 and results[0]["epoch"]
    # No history, no position: {} as in Centrifugo.
    assert await api(port, "publish", {"channel": "plain", "data": 1}) == {"result": {}}
    broadcast = await api(port, "broadcast", {"channels": ["stream:a", "plain"], "data": 4})
    first, second = broadcast["result"]["responses"]
    assert first["result"] == {"offset": 4, "epoch": results[0]["epoch"]}
    assert second == {"result": {}}


async def test_a_subscriber_asking_to_recover_gets_the_latest_publication_at_once(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    results = await publish_three(port, "cache:now-playing")
    epoch = results[0]["epoch"]
    client = await connected(port, "ann")
    # What centrifuge-js sends for an empty `since`: recover at offset 0.
    reply = await client.call("subscribe", channel="cache:now-playing", recover=True)
    sub = reply["subscribe"]
    assert sub["recovered"] is True and sub["was_recovering"] is True
    assert [pub["data"] for pub in sub["publications"]] == [{"n": 3}]
    assert sub["publications"][0]["offset"] == 3
    assert (sub["offset"], sub["epoch"]) == (3, epoch)
    # Live publications follow it.
    await api(port, "publish", {"channel": "cache:now-playing", "data": {"n": 4}})
    push = await client.push()
    assert push["push"]["pub"]["data"] == {"n": 4} and push["push"]["pub"]["offset"] == 4
    # Back from elsewhere, at an old position or in an old epoch: the latest only.
    again = await connected(port, "ann")
    stale = await again.call(
        "subscribe", channel="cache:now-playing", recover=True, offset=1, epoch="old"
    )
    assert [pub["data"] for pub in stale["subscribe"]["publications"]] == [{"n": 4}]
    # At the top already: recovered, nothing to send.
    top = await connected(port, "ann")
    same = await top.call("subscribe", channel="cache:now-playing", recover=True, offset=4,
                          epoch=epoch)  # fmt: skip
    assert same["subscribe"]["recovered"] is True and "publications" not in same["subscribe"]
    # Not asking: positioned only, as in stream mode.
    plain = await connected(port, "bob")
    positioned = (await plain.call("subscribe", channel="cache:now-playing"))["subscribe"]
    assert "publications" not in positioned and positioned["offset"] == 4
    for each in (client, again, top, plain):
        await each.ws.close()


async def test_an_empty_cache_channel_recovers_nothing(server: tuple[Quart, int]) -> None:
    _, port = server
    client = await connected(port, "ann")
    sub = (await client.call("subscribe", channel="cache:empty", recover=True))["subscribe"]
    assert "publications" not in sub and "recovered" not in sub  # false: left out
    await client.ws.close()


async def test_auto_cache_recover_needs_no_asking_even_server_side(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    await publish_three(port, "auto:score")
    client = await connected(port, "ann")
    sub = (await client.call("subscribe", channel="auto:score"))["subscribe"]
    assert [pub["data"] for pub in sub["publications"]] == [{"n": 3}]
    assert sub["was_recovering"] is True and sub["recovered"] is True
    # A token's server-side subscription: in the connect result.
    carl = await peer(port)
    reply = await carl.call("connect", token=token("carl", channels=["auto:score"]))
    subs = reply["connect"]["subs"]
    assert [pub["data"] for pub in subs["auto:score"]["publications"]] == [{"n": 3}]
    for each in (client, carl):
        await each.ws.close()


async def test_stream_mode_is_unchanged(server: tuple[Quart, int]) -> None:
    _, port = server
    results = await publish_three(port, "stream:s")
    client = await connected(port, "ann")
    sub = (await client.call("subscribe", channel="stream:s", recover=True, offset=1,
                             epoch=results[0]["epoch"]))["subscribe"]  # fmt: skip
    assert [pub["data"] for pub in sub["publications"]] == [{"n": 2}, {"n": 3}]
    await client.ws.close()


async def test_an_idempotent_publish_twice_within_the_window_publishes_once(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    client = await connected(port, "ann")
    await client.call("subscribe", channel="stream:orders")
    body = {"channel": "stream:orders", "data": {"order": 17}, "idempotency_key": "order-17"}
    first = await api(port, "publish", body)
    again = await api(port, "publish", {**body, "data": {"order": "retry"}})
    assert first == again and first["result"]["offset"] == 1
    assert (await client.push())["push"]["pub"]["data"] == {"order": 17}
    with pytest.raises(TimeoutError):
        await client.push(timeout=0.3)
    # broadcast: per channel, the first result again.
    many = {"channels": ["stream:orders", "plain"], "data": 2, "idempotency_key": "b-1"}
    one = await api(port, "broadcast", many)
    two = await api(port, "broadcast", many)
    assert one == two and one["result"]["responses"][0]["result"]["offset"] == 2
    assert (await client.push())["push"]["pub"]["data"] == 2
    with pytest.raises(TimeoutError):
        await client.push(timeout=0.3)
    # With cent, as an application retries.
    async with cent.AsyncClient(f"http://127.0.0.1:{port}/api", KEY) as sdk:
        request = cent.PublishRequest(channel="stream:orders", data={"x": 1}, idempotency_key="c")
        results = [await sdk.publish(request) for _ in range(3)]
    assert {(r.offset, r.epoch) for r in results} == {(3, first["result"]["epoch"])}
    kept = await api(port, "history", {"channel": "stream:orders", "limit": -1})
    assert [pub["data"] for pub in kept["result"]["publications"]] == [{"order": 17}, 2, {"x": 1}]
    await client.ws.close()


async def test_an_oversized_idempotency_key_is_refused(server: tuple[Quart, int]) -> None:
    _, port = server
    body = {"channel": "stream:x", "data": 1, "idempotency_key": "k" * 129}
    reply = await api(port, "publish", body)
    assert reply["error"]["code"] == 107 and "idempotency_key" in reply["error"]["message"]
    bad = await api(port, "broadcast", {"channels": ["stream:x"], "data": 1,
                                        "idempotency_key": "k" * 129})  # fmt: skip
    assert bad["error"]["code"] == 107


async def test_a_script_broadcast_says_where_it_stands(
    server: tuple[Quart, int], tmp_path: Path
) -> None:
    _, port = server
    script = (
        "import json\n"
        "sent = broadcast({'n': 1}, channel='stream:script')\n"
        "plain = broadcast('x', channel='plain')\n"
        "print(json.dumps([sent, sent.offset, sent.epoch, plain, plain.offset, plain.epoch,\n"
        "                  sent == 0]))\n"
    )
    (tmp_path / "pub.py").write_text(script)  # the app's directory: scripts drop in
    async with httpx.AsyncClient() as http:
        response = await http.get(f"http://127.0.0.1:{port}/pub.py")
    assert response.status_code == 200, response.text
    queued, offset, epoch, plain, plain_offset, plain_epoch, zero = response.json()
    assert (queued, offset, plain, plain_offset, plain_epoch, zero) == (0, 1, 0, 0, "", True)
    assert epoch


async def test_centrifuge_python_gets_the_latest_on_subscribing(
    tmp_path: Path,
) -> None:
    app = create_app(tmp_path, settings=settings())
    async with hypercorn(app) as port:
        await publish_three(port, "auto:feed")
        got: asyncio.Queue[Any] = asyncio.Queue()

        class Events(SubscriptionEventHandler):
            async def on_publication(self, ctx: PublicationContext) -> None:
                await got.put(ctx.pub.data)

        client = Client(f"ws://127.0.0.1:{port}{PATH}", token=token("ann"))
        sub = client.new_subscription("auto:feed", Events())
        await client.connect()
        await sub.subscribe()
        assert await asyncio.wait_for(got.get(), 5) == {"n": 3}
        await client.disconnect()
