"""The Centrifuge protocol and the server API as /metrics shows them, on a real server.

``realtime run`` with the internal listener (so the metrics plugin exports), driven by
real WebSockets and HTTP: every command timed once under its method, refused connects
counted as ``auth``, publications by source, API calls timed and logged; and, in the
test's own Hypercorn, the log ids a connection's work runs with.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from realtime import create_app, get_host, hookimpl
from realtime.logs import CONTEXT
from realtime_broker import get_broker
from realtime_centrifuge import server_api
from realtime_centrifuge.plugin import get_node

from ..conftest import Server, eventually, reserve_port, wait_until
from .test_centrifuge_endpoint import SECRET, connected, peer, token
from .test_fanout import hypercorn

KEY = "metrics-api-key-0123456789"
Samples = Mapping[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(internal: str) -> Samples:
    """Every sample /metrics shows, by name and labels."""
    response = httpx.get(f"{internal}/metrics", timeout=10)
    assert response.status_code == 200, response.text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def start_metered(app_dir: Path, *args: str) -> tuple[Server, str]:
    """``realtime run`` with the internal listener and the server API on; its URL."""
    internal = f"127.0.0.1:{reserve_port()}"
    server = Server(
        app_dir,
        "--internal-bind", internal,
        "--token-hmac-secret", SECRET,
        "--api-key", KEY,
        *args,
    ).start()  # fmt: skip

    def ready() -> bool:
        try:
            return httpx.get(f"http://{internal}/-/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, timeout=10, message="internal listener")
    except BaseException:
        server.stop()
        raise
    return server, f"http://{internal}"


@pytest.fixture
def metered(app_dir: Path) -> Iterator[tuple[Server, str]]:
    server, internal = start_metered(app_dir)
    try:
        yield server, internal
    finally:
        server.stop()


async def api(server: Server, method: str, body: Mapping[str, Any], key: str = KEY) -> Any:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.url}/api/{method}?api_key={key}", json=body, headers={"X-API-Key": key}
        )
    return response.json() if response.status_code == 200 else response.status_code


async def test_commands_api_calls_and_publications_on_metrics(
    metered: tuple[Server, str],
) -> None:
    server, internal = metered
    before = scrape(internal)
    assert value(before, "realtime_command_duration_seconds_count", method="connect") == 0
    assert value(before, "realtime_broker_up") == 1

    alice = await connected(server.port)
    room = "chat:metrics"
    assert "subscribe" in await alice.call("subscribe", channel=room)
    assert "publish" in await alice.call("publish", channel=room, data={"text": "hi"})
    history = await alice.call("history", channel=room, limit=10)
    assert len(history["history"]["publications"]) == 1

    forger = await peer(server.port)
    await forger.send({"connect": {"token": token("mallory", secret="not-the-secret" * 3)}})
    assert (await forger.closed())[0] == 3500

    published = await api(server, "publish", {"channel": room, "data": {"n": 1}})
    assert published["result"]["offset"] == 2  # the room keeps history: its position
    broadcast = await api(server, "broadcast", {"channels": ["chat:a", "chat:b"], "data": {}})
    assert len(broadcast["result"]["responses"]) == 2
    assert await api(server, "publish", {"channel": room, "data": {}}, key="wrong") == 401
    assert "result" in await api(server, "history", {"channel": room, "limit": 5})

    samples = scrape(internal)
    commands = {
        method: value(samples, "realtime_command_duration_seconds_count", method=method)
        for method in ("connect", "subscribe", "publish", "history", "presence", "unknown")
    }
    assert commands == {
        "connect": 2, "subscribe": 1, "publish": 1, "history": 1, "presence": 0, "unknown": 0,
    }  # fmt: skip
    assert value(samples, "realtime_command_duration_seconds_sum", method="connect") > 0
    assert value(samples, "realtime_handshakes_total", result="auth") == 1
    assert value(samples, "realtime_publications_total", source="client") == 1
    assert value(samples, "realtime_publications_total", source="api") == 3  # 1 + 2 channels
    calls = {
        method: value(samples, "realtime_api_duration_seconds_count", method=method)
        for method in ("publish", "broadcast", "history", "info")
    }
    assert calls == {"publish": 2, "broadcast": 1, "history": 1, "info": 0}  # the 401 too
    # The broker: one publish each, the room's member, its history read.
    assert value(samples, "realtime_broker_publish_duration_seconds_count") == 4
    assert value(samples, "realtime_presence_members") == 1
    reads = value(samples, "realtime_history_reads_total")
    assert reads >= 2  # the history command and the API's (a subscribe reads positions)
    await api(server, "history", {"channel": room})
    assert value(scrape(internal), "realtime_history_reads_total") == reads + 1

    def connections() -> float:
        return value(scrape(internal), "realtime_connections", protocol="centrifuge")

    await eventually(lambda: connections() == 1)  # alice; the forger is gone
    await alice.ws.close()
    await eventually(lambda: value(scrape(internal), "realtime_presence_members") == 0)
    await eventually(lambda: connections() == 0)

    # One access line per API request, without the query string or the key.
    log = server.log
    for line in ("POST /api/publish 200", "POST /api/publish 401", "POST /api/broadcast 200",
                 "POST /api/history 200"):  # fmt: skip
        assert line in log, log
    assert KEY not in log and "api_key=" not in log


class Recorder:
    """A plugin answering ``rpc`` with the log ids its call ran with."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []

    @hookimpl
    def rpc(self, method: str) -> Any:
        ids = dict(CONTEXT.get())
        self.seen.append(ids)
        logging.getLogger("realtime.test").info("rpc %s", method)
        return ids


@pytest.fixture(params=["fast-path", "plain"])
async def recorded(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Recorder, int]]:
    recorder = Recorder()
    fast_path = request.param == "fast-path"
    app = create_app(
        tmp_path, settings={"token_hmac_secret": SECRET, "fast_path": fast_path}, plugins=[recorder]
    )
    async with hypercorn(app) as port:
        yield recorder, port


async def test_a_connections_work_carries_its_connection_and_client_ids(
    recorded: tuple[Recorder, int],
) -> None:
    recorder, port = recorded
    alice = await peer(port)
    client_id = (await alice.call("connect", token=token("alice")))["connect"]["client"]
    bob = await connected(port, "bob")
    first = (await alice.call("rpc", method="a", data={}))["rpc"]["data"]
    await bob.call("rpc", method="b", data={})
    second = (await alice.call("rpc", method="c", data={}))["rpc"]["data"]
    assert first == second  # every frame of the connection, each in its own task or not
    assert first["client"] == client_id and first["connection"].isdigit()
    assert recorder.seen[1]["client"] != client_id
    assert recorder.seen[1]["connection"] != first["connection"]
    await alice.ws.close()
    await bob.ws.close()


async def test_server_api_runs_methods_in_process_without_a_key(tmp_path: Path) -> None:
    app = create_app(tmp_path, settings={"token_hmac_secret": SECRET})  # no api_key: HTTP off
    host = get_host(app)
    assert server_api(host) is None  # not started
    async with hypercorn(app) as port:
        api = server_api(host)
        assert api is not None and not api.enabled
        alice = await connected(port)
        assert "subscribe" in await alice.call("subscribe", channel="news")
        status, body = await api.call("publish", b'{"channel": "news", "data": {"n": 1}}')
        assert (status, json.loads(body)) == (200, {"result": {}})
        assert (await alice.push())["push"]["pub"]["data"] == {"n": 1}
        assert (await api.call("nothing", b"{}"))[0] == 404
        assert (await api.call("publish", b"[]"))[0] == 400
        async with httpx.AsyncClient() as http:  # the HTTP API stays off
            response = await http.post(f"http://127.0.0.1:{port}/api/publish", json={})
        assert response.status_code == 404
        await alice.ws.close()
    assert server_api(host) is None  # shut down


class ContextRecorder(logging.Handler):
    """Keeps the log ids in effect when each record is logged."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, dict[str, str]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.getMessage(), dict(CONTEXT.get())))


async def test_control_messages_applied_to_a_connection_log_with_its_ids(
    tmp_path: Path,
) -> None:
    app = create_app(tmp_path, settings={"token_hmac_secret": SECRET})
    handler = ContextRecorder()
    logger = logging.getLogger("realtime.centrifuge")
    logger.addHandler(handler)
    try:
        async with hypercorn(app) as port:
            alice = await connected(port)
            node = get_node(get_host(app))
            (session,) = [c.state for c in node.users["alice"].values()]
            await get_broker(get_host(app)).publish_control(
                b'{"op": "subscribe", "user": "alice", "channel": "bogus:x"}'
            )  # no such namespace: refused, and said so in alice's connection's name
            await eventually(lambda: any("bogus" in m for m, _ in handler.seen))
            (ids,) = [ids for message, ids in handler.seen if "bogus" in message]
            assert ids["client"] == session.client_id and ids["connection"].isdigit()
            await alice.ws.close()
    finally:
        logger.removeHandler(handler)
