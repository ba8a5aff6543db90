"""The HTTP API against real Pusher WebSocket connections: the ``pusher`` SDK's events
reach ``/app/{key}`` subscribers (not the excluded socket), counts and users are the
connections', and terminate_user_connections closes a user's connections."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from realtime import create_app, get_host

from ..conftest import eventually
from .test_centrifuge_endpoint import SECRET, connected
from .test_fanout import hypercorn
from .test_pusher_api import APPS, call, sdk


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Quart, int]]:
    app = create_app(tmp_path, settings={"pusher_apps": APPS})
    async with hypercorn(app) as port:
        yield app, port


class Socket:
    """One pusher-js-shaped connection."""

    def __init__(self, ws: ClientConnection, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    async def next(self, event: str | None = None, timeout: float = 5) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if event is None or message["event"] == event:
                    return message  # type: ignore[no-any-return]

    async def subscribe(self, channel: str, **fields: Any) -> None:
        await self.ws.send(
            json.dumps({"event": "pusher:subscribe", "data": {"channel": channel, **fields}})
        )
        await self.next("pusher_internal:subscription_succeeded")


async def closed_code(socket: Socket) -> int:
    """The close code the server ends ``socket`` with (whatever it says before)."""
    async with asyncio.timeout(5):
        try:
            while True:
                await socket.ws.recv()
        except ConnectionClosed:
            pass
    return -1 if socket.ws.close_code is None else socket.ws.close_code


@asynccontextmanager
async def open_socket(port: int, key: str = "app-key") -> AsyncIterator[Socket]:
    async with connect(f"ws://127.0.0.1:{port}/app/{key}?protocol=7&client=js") as ws:
        hello = json.loads(await ws.recv())
        assert hello["event"] == "pusher:connection_established"
        yield Socket(ws, json.loads(hello["data"])["socket_id"])


async def test_sdk_events_reach_subscribers_but_the_excluded_one(
    served: tuple[Quart, int],
) -> None:
    _, port = served
    async with open_socket(port) as one, open_socket(port) as two:
        await one.subscribe("news")
        await two.subscribe("news")
        assert await call(sdk(port).trigger, "news", "greet", {"hi": 1}, two.socket_id) == {}
        assert await call(sdk(port).trigger, "news", "second", "text") == {}
        got = await one.next("greet")
        assert (got["channel"], json.loads(got["data"])) == ("news", {"hi": 1})
        assert (await one.next("second"))["data"] == "text"
        # The excluded socket gets the second event only.
        assert (await two.next())["event"] == "second"
        assert await call(sdk(port).channel_info, "news", ["subscription_count"]) == {
            "occupied": True,
            "subscription_count": 2,
        }
        # The second app's clients do not see the first app's "news".
        async with open_socket(port, "key-2") as other:
            await other.subscribe("news")
            assert await call(sdk(port, 1).trigger, "news", "mine", "2") == {}
            assert (await other.next())["event"] == "mine"
            assert await call(sdk(port).channels_info, None, ["subscription_count"]) == {
                "channels": {"news": {"subscription_count": 2}}
            }


async def test_presence_users_and_terminate(served: tuple[Quart, int]) -> None:
    app, port = served
    functions = get_host(app).functions
    async with open_socket(port) as one, open_socket(port) as two:
        for socket, user in ((one, "u1"), (two, "u2")):
            auth = functions["pusher_auth"](
                socket.socket_id, "presence-room", {"user_id": user, "user_info": {}}
            )
            await socket.subscribe("presence-room", **auth)
        assert await call(sdk(port).users_info, "presence-room") == {
            "users": [{"id": "u1"}, {"id": "u2"}]
        }
        assert await call(sdk(port).channels_info, "presence-", ["user_count"]) == {
            "channels": {"presence-room": {"user_count": 2}}
        }
        assert await call(sdk(port).terminate_user_connections, "u1") == {}
        # Pusher's 4000-4099: do not reconnect (4009: unauthorized, as Pusher closes).
        assert 4000 <= await closed_code(one) <= 4099

        async def only_u2() -> bool:
            users = await call(sdk(port).users_info, "presence-room")
            return bool(users == {"users": [{"id": "u2"}]})

        await eventually(only_u2)


async def test_one_bus_for_every_protocol(tmp_path: Path) -> None:
    """An API event reaches raw /ws, Centrifuge and Pusher subscribers of its channel."""
    settings = {
        "pusher_apps": APPS,
        "token_hmac_secret": SECRET,
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            }
        },
    }
    async with hypercorn(create_app(tmp_path, settings=settings)) as port:
        centrifuge = await connected(port, "alice")
        assert "subscribe" in await centrifuge.call("subscribe", channel="news")
        async with open_socket(port) as socket, connect(f"ws://127.0.0.1:{port}/ws") as raw:
            await socket.subscribe("news")
            await socket.subscribe("default")
            sent = await call(sdk(port).trigger, ["news", "default"], "multi", {"a": 1})
            assert sent == {}
            # JSON text goes as JSON: the Centrifuge client gets the value...
            push = await centrifuge.push()
            assert push["push"]["channel"] == "news"
            assert push["push"]["pub"]["data"] == {"a": 1}
            # ...raw /ws (the default channel) the text, and Pusher the event.
            assert await asyncio.wait_for(raw.recv(), 5) == '{"a": 1}'
            events = {
                (m["channel"], m["event"], m["data"])
                for m in [await socket.next("multi"), await socket.next("multi")]
            }
            assert events == {("news", "multi", '{"a": 1}'), ("default", "multi", '{"a": 1}')}
        await centrifuge.ws.close()
