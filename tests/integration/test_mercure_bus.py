"""Mercure on the one bus: its updates reach other protocols' subscribers of the channel,
two hosts share subscribers and history over Redis, and a stream is bounded as every
connection is (slow readers, connection caps, publish rate)."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import httpx
import jwt
from websockets.asyncio.client import connect

from realtime import create_app, get_host
from realtime_broker import Publication, get_broker
from realtime_hub import get_hub

from ..conftest import RedisServer, eventually
from .test_fanout import hypercorn, send_buffer_max
from .test_mercure import (
    BOOK,
    KEY,
    PATH,
    TEMPLATE,
    publish,
    served,
    subscribe,
    token,
    wait_subscribed,
)


async def test_a_mercure_update_reaches_a_raw_websocket_of_its_channel(tmp_path: Path) -> None:
    async with (
        served(tmp_path) as (app, port),
        connect(f"ws://127.0.0.1:{port}/ws?channel=books") as ws,
    ):
        await wait_subscribed(app, "books")
        response = await publish(port, "books", "to every protocol", id="b1")
        assert response.status_code == 200
        assert await asyncio.wait_for(ws.recv(), 5) == "to every protocol"


async def test_a_private_update_reaches_no_other_protocol(tmp_path: Path) -> None:
    """Private updates are for Mercure subscribers whose grant matches: never for a
    raw /ws or Pusher subscriber of a channel named as the topic (no grant there)."""
    grant = token(subscribe=["books"])
    async with served(tmp_path) as (app, port):
        async with (
            connect(f"ws://127.0.0.1:{port}/ws?channel=books") as ws,
            subscribe(port, "books", jwt_token=grant) as granted,
        ):
            await wait_subscribed(app, "books", 2)
            response = await publish(port, "books", "secret", id="s1", private="on")
            assert response.status_code == 200
            assert (await publish(port, "books", "public", id="s2")).status_code == 200
            assert await asyncio.wait_for(ws.recv(), 5) == "public"
            assert await granted.next() == {"id": "s1", "data": "secret"}
            assert await granted.next() == {"id": "s2", "data": "public"}
        # A granted subscriber replays private updates in order with the rest (a URL
        # topic: kept by mercure_history_size, as the template channel is).
        await publish(port, BOOK, "secret", id="r1", private="on")
        await publish(port, BOOK, "public", id="r2")
        earliest = [("lastEventID", "earliest")]
        async with subscribe(
            port, BOOK, jwt_token=token(subscribe=[BOOK]), params=earliest
        ) as again:
            assert await again.next() == {"id": "r1", "data": "secret"}
            assert await again.next() == {"id": "r2", "data": "public"}
            await again.nothing()


async def test_a_centrifuge_subscriber_hears_a_mercure_update(tmp_path: Path) -> None:
    secret = "centrifuge-secret-long-enough-for-hs256"
    async with served(tmp_path, token_hmac_secret=secret) as (_app, port):
        user = jwt.encode({"sub": "u1"}, secret, algorithm="HS256")
        async with connect(f"ws://127.0.0.1:{port}/connection/websocket") as ws:
            await ws.send(json.dumps({"id": 1, "connect": {"token": user}}))
            assert "connect" in json.loads(await ws.recv())
            await ws.send(json.dumps({"id": 2, "subscribe": {"channel": "books"}}))
            assert json.loads(await ws.recv())["id"] == 2
            await publish(port, "books", '{"title": "Dune"}', id="c1")
            push = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert push["push"]["channel"] == "books"
            assert push["push"]["pub"]["data"] == '{"title": "Dune"}'


async def test_two_hosts_over_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    settings: dict[str, Any] = {
        "broker": redis_server.url,
        "mercure_jwt_key": KEY,
        "mercure_anonymous": True,
        "mercure_history_size": 20,
    }
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = create_app(tmp_path / "a", settings=settings)
    second = create_app(tmp_path / "b", settings=settings)
    async with hypercorn(first) as port_a, hypercorn(second) as port_b:
        async with subscribe(port_a, BOOK) as exact, subscribe(port_a, TEMPLATE) as templated:
            hub = get_hub(get_host(first))
            await wait_subscribed(first, BOOK)
            await eventually(lambda: hub.subscribers("\x01mercure") == 1)
            broker = get_broker(get_host(first))
            await broker.ready(BOOK)
            await broker.ready("\x01mercure")
            response = await publish(port_b, BOOK, "across hosts", id="r1")
            assert response.status_code == 200
            assert await exact.next() == {"id": "r1", "data": "across hosts"}
            assert await templated.next() == {"id": "r1", "data": "across hosts"}
            await publish(port_b, BOOK, "second", id="r2")
        # Missed on host A while away, replayed from Redis's history.
        async with subscribe(port_a, TEMPLATE, headers={"last-event-id": "r1"}) as back:
            assert back.response.headers["last-event-id"] == "r2"
            assert await back.next() == {"id": "r2", "data": "second"}
            await back.nothing()


async def test_a_stalled_reader_is_closed_by_the_overflow_policy(tmp_path: Path) -> None:
    async with served(tmp_path, client_buffer=256 * 1024) as (app, port):
        hub = get_hub(get_host(app))
        broker = get_broker(get_host(app))
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        query = httpx.QueryParams({"topic": "books"})
        request = f"GET {PATH}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        await loop.sock_sendall(sock, request.encode())
        try:
            async with subscribe(port, "books") as quick:
                await wait_subscribed(app, "books", 2)
                payload = "p" * 8000
                most = 3 * send_buffer_max() // 8000
                sent = 0
                while hub.stats.disconnected_slow == 0 and sent < most:
                    publication = Publication(
                        payload, id=f"s{sent}", attrs={"m": "1", "t0": "books"}
                    )
                    await broker.publish("books", publication)
                    sent += 1
                    await asyncio.sleep(0)
                assert hub.stats.disconnected_slow == 1
                await eventually(lambda: hub.subscribers("books") == 1)
                for n in range(sent):
                    assert (await quick.next(timeout=20))["id"] == f"s{n}"
        finally:
            sock.close()


async def test_streams_count_in_the_connection_cap(tmp_path: Path) -> None:
    async with served(tmp_path, max_connections_per_ip=1) as (app, port):
        async with subscribe(port, BOOK), httpx.AsyncClient() as http:
            second = await http.get(f"http://127.0.0.1:{port}{PATH}", params={"topic": BOOK})
            assert second.status_code == 429
        hub = get_hub(get_host(app))
        await eventually(lambda: len(hub) == 0)
        async with subscribe(port, BOOK):
            pass


async def test_publishes_per_address_are_rate_limited(tmp_path: Path) -> None:
    # One every two seconds, in bursts of one: the second and third come too soon.
    async with served(tmp_path, mercure_publish_rate=0.5) as (_app, port):
        statuses = [(await publish(port, BOOK, "x")).status_code for _ in range(3)]
        assert statuses == [200, 429, 429]


async def test_private_grant_by_alternate_topic(tmp_path: Path) -> None:
    """Go's rule: a private update reaches a subscriber of one of its topics when the
    grant matches any of them (here the alternate)."""
    alternate = "https://example.com/users/1/books/1"
    async with (
        served(tmp_path) as (app, port),
        subscribe(port, BOOK, jwt_token=token(subscribe=[alternate])) as events,
    ):
        await wait_subscribed(app, BOOK)
        await publish(port, [BOOK, alternate], "mine", private="1", id="g1")
        assert await events.next() == {"id": "g1", "data": "mine"}


async def test_a_publish_with_redis_down_is_503(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = {"broker": redis_server.url, "broker_timeout": 0.5, "mercure_jwt_key": KEY}
    app = create_app(tmp_path, settings=settings)
    async with hypercorn(app) as port:
        assert (await publish(port, BOOK, "up")).status_code == 200
        redis_server.stop()
        response = await publish(port, BOOK, "down")
        assert response.status_code == 503
