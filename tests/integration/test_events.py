"""Events from real servers to a real webhook receiver: per client, and once per cluster."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect

from realtime import PluginError, create_app

from ..conftest import RedisServer, Server
from ..receiver import SECRET, Receiver
from .test_centrifuge_endpoint import SECRET as TOKEN_SECRET
from .test_centrifuge_endpoint import connected, served_app
from .test_fanout import hypercorn

HOOKS = {"webhook_secret": SECRET.decode()}


async def until(condition: Any, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def names(receiver: Receiver, *only: str) -> list[str]:
    return [e["name"] for e in receiver.events() if not only or e["name"] in only]


async def test_a_client_s_life_is_told_in_order(tmp_path: Path) -> None:
    async with Receiver() as receiver:
        app = await served_app(tmp_path, webhook_url=receiver.url, **HOOKS)
        async with hypercorn(app) as port:
            alice = await connected(port, "alice")
            client_id = (await alice.call("subscribe", channel="chat:lobby"))["id"]
            assert client_id is not None
            await until(lambda: "subscribe" in names(receiver))
            await alice.ws.close()
            await until(lambda: "user_offline" in names(receiver))
            async with connect(f"ws://127.0.0.1:{port}/ws") as raw:  # anonymous: no user
                await raw.send("hi")
                await until(lambda: names(receiver).count("connect") == 2)
            await until(lambda: names(receiver).count("disconnect") == 2)
    events = receiver.events()
    mine = [e for e in events if e.get("user") == "alice" or e.get("channel") == "chat:lobby"]
    order = [e["name"] for e in mine]
    assert sorted(order) == sorted(["connect", "user_online", "subscribe", "channel_occupied",
                                    "unsubscribe", "channel_vacated", "disconnect",
                                    "user_offline"])  # fmt: skip
    # The client's own events in the order they happened; each store decision after the
    # change that made it.
    for before, after in [("connect", "subscribe"), ("subscribe", "unsubscribe"),
                          ("unsubscribe", "disconnect"), ("user_online", "user_offline"),
                          ("channel_occupied", "channel_vacated"), ("connect", "user_online"),
                          ("subscribe", "channel_occupied")]:  # fmt: skip
        assert order.index(before) < order.index(after), order
    connect_event = next(e for e in events if e["name"] == "connect")
    assert connect_event["protocol"] == "centrifuge" and connect_event["client"]
    disconnect = next(e for e in mine if e["name"] == "disconnect")
    assert disconnect["client"] == connect_event["client"] and disconnect["code"] in (1000, 1005)
    raw = [e for e in events if e.get("protocol") == "raw"]
    assert [e["name"] for e in raw] == ["connect", "disconnect"] and raw[0]["user"] == ""
    assert len({e["id"] for e in events}) == len(events)


async def test_two_tabs_on_two_hosts_are_one_user_online_and_offline_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with Receiver() as receiver:
        settings = {"broker": redis_server.url, "webhook_url": receiver.url,
                    "webhook_events": "user_online,user_offline,channel_occupied,"
                                      "channel_vacated", **HOOKS}  # fmt: skip
        one = await served_app(tmp_path, **settings)
        two = await served_app(tmp_path, **settings)
        async with hypercorn(one) as port_one, hypercorn(two) as port_two:
            tab1 = await connected(port_one, "bob")
            await tab1.call("subscribe", channel="chat:b")
            tab2 = await connected(port_two, "bob")
            await tab2.call("subscribe", channel="chat:b")
            await until(lambda: names(receiver) == ["user_online", "channel_occupied"]
                        or names(receiver) == ["channel_occupied", "user_online"])  # fmt: skip
            await tab1.ws.close()
            await asyncio.sleep(1.0)  # one tab left on each side of nothing: no event
            assert Counter(names(receiver)) == {"user_online": 1, "channel_occupied": 1}
            await tab2.ws.close()
            await until(lambda: len(receiver.events()) == 4)
            await asyncio.sleep(1.0)
    assert Counter(names(receiver)) == {"user_online": 1, "user_offline": 1,
                                        "channel_occupied": 1, "channel_vacated": 1}  # fmt: skip


async def test_a_killed_host_s_user_goes_offline_once(
    tmp_path: Path, app_dir: Path, redis_server: RedisServer
) -> None:
    ttl, interval = 3.0, 1.0
    async with Receiver() as receiver:
        common = ["--broker", redis_server.url, "--presence-ttl", str(ttl),
                  "--presence-update-interval", str(interval), "--webhook-url", receiver.url,
                  "--webhook-secret", SECRET.decode(), "--token-hmac-secret", TOKEN_SECRET,
                  "--webhook-events", "user_online,user_offline"]  # fmt: skip
        doomed = Server(app_dir, *common).start()
        survivor = Server(app_dir, *common).start()
        try:
            carol = await connected(doomed.port, "carol")
            await until(lambda: names(receiver) == ["user_online"])
            assert doomed.process is not None
            doomed.process.kill()
            doomed.process.wait(10)
            killed = time.monotonic()
            await until(lambda: "user_offline" in names(receiver), timeout=ttl + 3 * interval + 5)
            assert time.monotonic() - killed <= ttl + 3 * interval + 2
            await asyncio.sleep(2 * interval)  # the survivor sweeps again: nothing more
            assert names(receiver) == ["user_online", "user_offline"]
            await carol.ws.close()
        finally:
            doomed.stop()
            survivor.stop()


async def test_an_events_script_is_drop_in_code_with_the_script_functions(
    tmp_path: Path,
) -> None:
    hooks = tmp_path / "hooks.py"
    hooks.write_text(
        "import threading\n"
        "def user_online(user):\n"
        "    broadcast(f'hello {user} from {threading.current_thread().name}')\n"
        "def on_disconnect(user, code):\n"
        "    broadcast(f'bye {user} {code}')\n"
    )
    app = await served_app(tmp_path, events_script=str(hooks))
    async with hypercorn(app) as port, connect(f"ws://127.0.0.1:{port}/ws") as raw:
        await asyncio.sleep(0.2)  # subscribed
        dave = await connected(port, "dave")
        hello = await asyncio.wait_for(raw.recv(), 10)
        assert str(hello).startswith("hello dave from ") and "MainThread" not in str(hello)
        await dave.ws.close()
        assert await asyncio.wait_for(raw.recv(), 10) in ("bye dave 1000", "bye dave 1005")


def test_an_events_script_that_does_not_load_stops_start_up(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def unrelated(): pass\n")
    with pytest.raises(PluginError, match="defines none of"):
        create_app(tmp_path, settings={"events_script": str(bad)})
    bad.write_text("async def user_online(): pass\n")
    with pytest.raises(PluginError, match="must be a plain function"):
        create_app(tmp_path, settings={"events_script": str(bad)})
    bad.write_text("raise RuntimeError('nope')\n")
    with pytest.raises(PluginError, match="failed to load: RuntimeError: nope"):
        create_app(tmp_path, settings={"events_script": str(bad)})


async def test_a_hanging_or_failing_backend_is_retried_and_clients_are_served(
    app_dir: Path,
) -> None:
    """The webhook receiver answers 500 and then hangs for good: its batches are tried
    again and again, while every client still gets every broadcast."""
    async with Receiver(lambda n: 500 if n == 0 else None) as receiver:
        app = await served_app(app_dir, webhook_url=receiver.url, webhook_timeout=0.3,
                               webhook_retry_for=30, **HOOKS)  # fmt: skip
        async with hypercorn(app) as port:
            clients = [await connect(f"ws://127.0.0.1:{port}/ws") for _ in range(20)]
            try:
                await until(lambda: receiver.requests >= 3)  # 500, then hangs: tried again
                for n in range(50):
                    async with httpx.AsyncClient() as http:
                        sent = await http.get(f"http://127.0.0.1:{port}/send.py?message=m{n}")
                        assert sent.status_code == 200
                for ws in clients:
                    got = [await asyncio.wait_for(ws.recv(), 5) for _ in range(50)]
                    assert got == [f"m{n}" for n in range(50)]
            finally:
                for ws in clients:
                    await ws.close()
    # The same first batch each time: retried, not lost or skipped.
    ids = [[e["id"] for e in json.loads(body)["events"]] for body in receiver.bodies[:3]]
    assert ids[0] == ids[1] == ids[2]
