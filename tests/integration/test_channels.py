"""Channels end to end: scripts publish to a channel, raw clients listen to one."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from ..conftest import RedisServer, Server, eventually

SCRIPT = """
import json
channel = request.values.get("channel", "default")
value = json.loads(request.values["json"]) if "json" in request.values else None
print(broadcast(value if value is not None else request.values.get("message", ""), channel=channel))
"""


@pytest.fixture
def app(app_dir: Path) -> Path:
    (app_dir / "to.py").write_text(SCRIPT)
    return app_dir


@pytest.fixture
def host(app: Path) -> Iterator[Server]:
    server = Server(app).start()
    yield server
    server.stop()


async def recv(ws: ClientConnection, timeout: float = 5.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


async def silent(ws: ClientConnection, wait: float = 0.3) -> bool:
    try:
        await asyncio.wait_for(ws.recv(), wait)
    except TimeoutError:
        return True
    return False


async def test_a_client_gets_its_channel_only(host: Server) -> None:
    async with (
        connect(f"{host.ws_url}?channel=lobby") as lobby,
        connect(host.ws_url) as default,
        httpx.AsyncClient() as http,
    ):
        sent = await http.get(f"{host.url}/to.py", params={"channel": "lobby", "message": "hi"})
        assert sent.text.strip() == "1"
        assert await recv(lobby) == "hi"
        assert await silent(default)
        # send.py still broadcasts to the default channel, as in the seed.
        assert (await http.get(f"{host.url}/send.py", params={"message": "all"})).is_success
        assert await recv(default) == "all"
        assert await silent(lobby)


async def test_json_values_reach_raw_clients_as_json_text(host: Server) -> None:
    value = {"text": "héllo", "n": [1, 2.5, True]}
    async with connect(host.ws_url) as ws, httpx.AsyncClient() as http:
        sent = await http.get(f"{host.url}/to.py", params={"json": json.dumps(value)})
        assert sent.status_code == 200
        assert json.loads(await recv(ws)) == value


@pytest.mark.parametrize(
    "channel", ["chat:room", "chat:#42,43", "nowhere:room", "$secret", "", "x" * 256, "a\tb"]
)
async def test_raw_clients_may_not_listen_where_anonymous_clients_may_not_subscribe(
    host: Server, channel: str
) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{host.ws_url}?channel={quote(channel, safe='')}", open_timeout=5)
    assert refused.value.response.status_code == 403


async def test_a_query_string_over_ten_fields_is_refused(host: Server) -> None:
    query = "&".join(f"x{i}=1" for i in range(11))
    with pytest.raises(InvalidStatus) as refused:
        await connect(f"{host.ws_url}?{query}", open_timeout=5)
    assert refused.value.response.status_code == 403
    async with connect(f"{host.ws_url}?{query.rsplit('&', 2)[0]}") as ws:  # nine: fine
        assert ws.response is not None


async def test_a_bad_channel_name_is_a_400_and_nothing_is_sent(host: Server) -> None:
    async with connect(host.ws_url) as ws, httpx.AsyncClient() as http:
        params = {"channel": "x" * 256, "message": "m"}
        response = await http.get(f"{host.url}/to.py", params=params)
        assert response.status_code == 400
        assert "channel name" in response.text
        assert await silent(ws)


async def test_over_redis_each_process_hears_only_its_clients_channels(
    app: Path, redis_server: RedisServer
) -> None:
    one = Server(app, "--broker", redis_server.url).start()
    two = Server(app, "--broker", redis_server.url).start()
    try:
        async with (
            connect(f"{one.ws_url}?channel=north") as north,
            connect(f"{two.ws_url}?channel=south") as south,
            httpx.AsyncClient() as http,
        ):

            def both_subscribed() -> bool:
                channels = redis_server.cli("PUBSUB", "CHANNELS").split()
                return any("north" in c for c in channels) and any("south" in c for c in channels)

            await eventually(both_subscribed, message="both subscriptions on Redis")
            # Published on one process, delivered by the other only.
            sent = await http.get(f"{one.url}/to.py", params={"channel": "south", "message": "s"})
            assert sent.status_code == 200
            assert await recv(south) == "s"
            assert await silent(north)
        await asyncio.sleep(0.5)
        # Nobody listens any more: no process stays subscribed to those channels.
        channels = redis_server.cli("PUBSUB", "CHANNELS").split()
        assert not any("north" in c or "south" in c for c in channels)
    finally:
        one.stop()
        two.stop()


def test_a_channel_table_in_the_config_file_replaces_the_default_rules(
    app_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "realtime.toml"
    config.write_text(
        "[channel.without_namespace]\n"
        "allow_subscribe_for_client = true  # signed-in users only: raw clients are not\n"
        "[[channel.namespaces]]\n"
        'name = "public"\n'
        "allow_subscribe_for_client = true\n"
        "allow_subscribe_for_anonymous = true\n"
    )
    server = Server(app_dir, "--config", str(config)).start()
    try:

        async def check() -> None:
            with pytest.raises(InvalidStatus) as refused:
                await connect(server.ws_url, open_timeout=5)
            assert refused.value.response.status_code == 403
            async with connect(f"{server.ws_url}?channel=public:news") as ws:
                assert ws.response is not None

        asyncio.run(check())
    finally:
        server.stop()
    bad = tmp_path / "bad.toml"
    bad.write_text("[channel.without_namespace]\nallow_everything = true\n")
    refused = subprocess.run(
        [sys.executable, "-m", "realtime", "run", "--config", str(bad), "--app", str(app_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    assert "channel.without_namespace: unknown option 'allow_everything'" in refused.stderr
