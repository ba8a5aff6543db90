"""Issue 23 item 4: NATS as the broker between hosts (Debian's nats-server, nats-py).

Two hosts (``realtime run --broker nats://...``), raw ``/ws`` clients and Centrifuge
clients (centrifuge-python) on both: a script's broadcast reaches all of them; the
nats-server killed and started again on its port: publishing resumes on its own, and
every client is told it may have missed something (raw: 1012; Centrifuge: insufficient
state, 2500, then subscribed again), never silently. History and presence namespaces
are refused at start-up; what is not a realtime envelope on the subjects is dropped and
counted; what is over the size limit is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from centrifuge import SubscribingContext
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from realtime_broker.nats import HEADER

from ..conftest import Server
from ..nats_server import NatsServer
from ..nats_server import nats_server as nats_server  # the fixture
from ..sdk import PyClient, SubEvents, centrifuge_url, channel_config, fetch_token, token_script

SECRET = "test-secret-for-the-nats-tests-0123456789"
#: Top-level channels for anyone; no namespace keeps history or presence.
CONFIG = f'token_hmac_secret = "{SECRET}"\n' + channel_config(
    allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True
)
PUBLISH_SCRIPT = """\
body = request.json
response.json({"delivered": broadcast(body["data"], channel=body.get("channel", "default"))})
"""


@pytest.fixture
def nats_app(app_dir: Path) -> Path:
    (app_dir / "realtime.toml").write_text(CONFIG)
    (app_dir / "publish.py").write_text(PUBLISH_SCRIPT)
    token_script(app_dir)
    return app_dir


@pytest.fixture
def hosts(nats_app: Path, nats_server: NatsServer) -> Iterator[tuple[Server, Server]]:
    args = ("--broker", nats_server.url, "--max-message-size", "1024")
    first = Server(nats_app, *args).start()
    second = Server(nats_app, *args).start()
    yield first, second
    first.stop()
    second.stop()


@dataclass
class Page:
    """A browser tab on ``/ws``: keeps what it receives, reconnects at once when closed."""

    url: str
    got: list[Any] = field(default_factory=list)
    closes: list[int | None] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while True:
            code: int | None = None
            try:
                async with connect(self.url) as ws:
                    async for message in ws:
                        self.got.append(json.loads(message))
                        self.changed.set()
                    code = ws.close_code
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            except OSError:
                code = None
            self.closes.append(code)
            self.changed.set()
            await asyncio.sleep(0.02)


class Subscribing(SubEvents):
    """A subscription's events, with the SDK's ``subscribing`` (a resubscription's code)."""

    def __init__(self) -> None:
        super().__init__()
        self.subscribing: asyncio.Queue[SubscribingContext] = asyncio.Queue()

    async def on_subscribing(self, ctx: SubscribingContext) -> None:
        self.subscribing.put_nowait(ctx)


async def publish(server: Server, data: Any, channel: str = "default") -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(f"{server.url}/publish.py", json={"channel": channel, "data": data})


async def eventually(check: Any, timeout: float = 10.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{message or 'condition'} not met within {timeout} s")
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def pages(*servers: Server, each: int = 2) -> AsyncIterator[list[Page]]:
    made = [Page(server.ws_url) for server in servers for _ in range(each)]
    tasks = [asyncio.create_task(page.run()) for page in made]
    try:
        yield made
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def centrifuge_clients(
    *servers: Server,
) -> tuple[list[PyClient], list[Subscribing]]:
    clients, subs = [], []
    for n, server in enumerate(servers):
        client = PyClient(
            centrifuge_url(server.url), token=fetch_token(server.url, user=f"user{n}")
        )
        await client.connect()
        events = Subscribing()
        sub = client.client.new_subscription("default", events=events)
        client.subs["default"] = (sub, events)
        await sub.subscribe()
        await asyncio.wait_for(events.subscribed.get(), 10)
        events.subscribing.get_nowait()  # the first: "subscribe called"
        clients.append(client)
        subs.append(events)
    return clients, subs


async def reach_all(
    server: Server, raw: list[Page], subs: list[Subscribing], tag: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Publish probes from ``server`` until every client got one (subscriptions across
    hosts take a moment); returns the probe they all got."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        probe = {"probe": f"{tag}-{n}"}
        response = await publish(server, probe)
        if response.status_code == 200:
            await asyncio.sleep(0.1)
            got_raw = all(probe in page.got for page in raw)
            got_sdk = all(
                any(ctx.pub.data == probe for ctx in _peek(events.publications)) for events in subs
            )
            if got_raw and got_sdk:
                return probe
        if time.monotonic() > deadline:
            raise AssertionError(f"probes from {server.url} did not reach every client ({tag})")
        await asyncio.sleep(0.05)


def _peek(queue: asyncio.Queue[Any]) -> list[Any]:
    return list(queue._queue)  # type: ignore[attr-defined]


async def test_a_broadcast_reaches_raw_and_centrifuge_clients_on_both_hosts(
    hosts: tuple[Server, Server],
) -> None:
    first, second = hosts
    clients, subs = await centrifuge_clients(first, second)
    try:
        async with pages(first, second) as raw:
            await reach_all(first, raw, subs, "warm")
            for events in subs:
                while not events.publications.empty():
                    events.publications.get_nowait()
            for page in raw:
                page.got.clear()
            for n, origin in enumerate((first, second, first)):
                response = await publish(origin, {"n": n})
                assert response.status_code == 200, response.text
                # Counted across hosts, from the heartbeats: 2 raw + 1 SDK client each.
                assert response.json()["delivered"] >= 3
            expected = [{"n": 0}, {"n": 1}, {"n": 2}]
            await eventually(lambda: all(page.got == expected for page in raw), message="raw")
            for events in subs:
                got = [(await asyncio.wait_for(events.publications.get(), 10)).pub.data]
                got += [(await asyncio.wait_for(events.publications.get(), 10)).pub.data]
                got += [(await asyncio.wait_for(events.publications.get(), 10)).pub.data]
                assert got == expected
            assert all(page.closes == [] for page in raw)
    finally:
        for client in clients:
            await client.close()
    for server in hosts:
        assert "connected to nats at nats://127.0.0.1" in server.log


async def test_nats_restarted_publishing_resumes_and_every_client_is_told(
    hosts: tuple[Server, Server], nats_server: NatsServer
) -> None:
    first, second = hosts
    clients, subs = await centrifuge_clients(first, second)
    try:
        async with pages(first, second) as raw:
            await reach_all(first, raw, subs, "before")
            nats_server.stop()

            # While NATS is away, a broadcast is refused (503), not silently dropped.
            async def refused() -> bool:
                return (await publish(first, {"during": 1})).status_code == 503

            deadline = time.monotonic() + 10
            while not await refused():
                assert time.monotonic() < deadline, "broadcasts kept answering 200"
                await asyncio.sleep(0.05)
            nats_server.start()
            # Every raw client is closed with 1012 (its page reconnects)...
            await eventually(lambda: all(1012 in page.closes for page in raw), 15, "1012s")
            # ...and every Centrifuge subscription is told: insufficient state, then
            # subscribed again, without losing its connection.
            for events in subs:
                ctx = await asyncio.wait_for(events.subscribing.get(), 15)
                assert ctx.code == 2500, ctx
                await asyncio.wait_for(events.subscribed.get(), 15)
            # Publishing resumes on its own, from either host, to everyone.
            await reach_all(first, raw, subs, "after-first")
            await reach_all(second, raw, subs, "after-second")
    finally:
        for client in clients:
            await client.close()
    for server in hosts:
        assert "lost the nats connection" in server.log
        assert "the nats connection to nats://127.0.0.1" in server.log


def test_history_and_presence_namespaces_are_refused_at_start_up(
    app_dir: Path, nats_server: NatsServer
) -> None:
    """The demo app's chat namespace keeps history and presence: NATS keeps neither."""
    server = Server(app_dir, "--broker", nats_server.url)
    with pytest.raises(RuntimeError, match="exited"):
        server.start()
    assert "NATS carries live publications only" in server.log
    assert "namespace 'chat' (history and presence)" in server.log
    assert "use a Redis broker" in server.log


async def test_bad_and_forged_messages_are_dropped_and_counted(
    hosts: tuple[Server, Server], nats_server: NatsServer
) -> None:
    first, second = hosts
    async with pages(first, second, each=1) as raw:
        await reach_all(first, raw, [], "warm")
        for page in raw:
            page.got.clear()
        intruder = await nats.connect(nats_server.url)
        try:
            subject = "realtime.ch.default"
            await intruder.publish(subject, b"not ours at all")
            await intruder.publish(subject, HEADER + b"j{not json")
            await intruder.publish(subject, HEADER + b"t" + b"x" * 1025)  # over 1024
            await intruder.publish("realtime.control", b"realtime/2c nothex!nothex!! x")
            await intruder.publish("realtime.nodes", b'realtime/2n {"uid": 5}')
            await intruder.flush()
        finally:
            await intruder.close()
        response = await publish(second, {"after": "forgeries"})
        assert response.status_code == 200
        await eventually(lambda: all(page.got == [{"after": "forgeries"}] for page in raw))
        assert all(page.closes == [] for page in raw)
    for server in hosts:
        await eventually(lambda s=server: "realtime.nodes" in s.log, message="logged")
        log = server.log
        assert (
            "ignored message(s) on nats subject realtime.ch.default that realtime did not "
            "publish: 1 since the last report, 1 in all" in log
        )
        assert "realtime.ch.default over the 1024-byte size limit: 1 since" in log
        assert "ignored message(s) on nats subject realtime.control" in log
        assert "ignored message(s) on nats subject realtime.nodes" in log
        async with httpx.AsyncClient(timeout=5) as http:
            assert (await http.get(f"{server.url}/-/health")).status_code == 200


async def test_an_oversized_broadcast_is_refused(hosts: tuple[Server, Server]) -> None:
    first, _ = hosts
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(f"{first.url}/send.py", json={"message": "x" * 1025})
    assert response.status_code == 413
