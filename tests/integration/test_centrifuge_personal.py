"""Personal channels, the server API's ``session`` targets and ``recover_since``
(issue 21, item 5), over real WebSockets.

``user_subscribe_to_personal_channel`` subscribes each signed-in user's connections
server-side to ``#USER`` (``NAMESPACE:#USER`` with ``user_personal_channel_namespace``),
as Centrifugo names it; ``user_personal_single_connection`` keeps one connection per
user. The server API's ``subscribe``, ``unsubscribe``, ``disconnect`` and ``refresh``
take ``session`` (the session id of an emulated or one-way connection: Go gives
WebSockets none), and ``subscribe`` takes ``recover_since``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from realtime import create_app, get_host
from realtime.errors import PluginError
from realtime_centrifuge import Session
from realtime_centrifuge.plugin import get_node

from ..conftest import RedisServer
from .test_centrifuge_cache import CHANNELS, KEY, api, settings
from .test_centrifuge_endpoint import Peer, connected, peer, token
from .test_fanout import hypercorn

PERSONAL = {
    **CHANNELS,
    "namespaces": [
        *CHANNELS["namespaces"],
        {"name": "personal", "presence": True, "history_size": 10, "history_ttl": "60s",
         "force_recovery": True},
    ],
}  # fmt: skip


@pytest.fixture
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    extra = getattr(request, "param", {})
    app = create_app(tmp_path, settings=settings(channel=PERSONAL, **extra))
    async with hypercorn(app) as port:
        yield app, port


def sessions(app: Quart, user: str) -> list[Session]:
    node = get_node(get_host(app))
    return [c.state for c in node.users.get(user, {}).values() if isinstance(c.state, Session)]


async def connect_result(port: int, user: str) -> tuple[Peer, dict[str, Any]]:
    client = await peer(port)
    reply = await client.call("connect", token=token(user))
    return client, reply["connect"]


@pytest.mark.parametrize("server", [{"user_subscribe_to_personal_channel": True}], indirect=True)
async def test_each_users_connections_are_subscribed_to_its_personal_channel(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    (tab1, first), (tab2, second) = [await connect_result(port, "ann") for _ in range(2)]
    bob, third = await connect_result(port, "bob")
    assert "#ann" in first["subs"] and "#ann" in second["subs"] and "#bob" in third["subs"]
    assert (await api(port, "publish", {"channel": "#ann", "data": "for ann"})) == {"result": {}}
    for tab in (tab1, tab2):
        push = await tab.push()
        assert push["push"] == {"channel": "#ann", "pub": {"data": "for ann"}}
    with pytest.raises(TimeoutError):
        await bob.push(timeout=0.3)
    for each in (tab1, tab2, bob):
        await each.ws.close()


@pytest.mark.parametrize(
    "server",
    [
        {
            "user_subscribe_to_personal_channel": True,
            "user_personal_channel_namespace": "personal",
            "user_personal_single_connection": True,
        }
    ],
    indirect=True,
)
async def test_a_namespace_and_a_single_connection(server: tuple[Quart, int]) -> None:
    app, port = server
    old, result = await connect_result(port, "ann")
    sub = result["subs"]["personal:#ann"]
    assert sub["recoverable"] is True and sub["positioned"] is True  # forced in the namespace
    new, _ = await connect_result(port, "ann")
    assert await old.closed() == (3504, "connection limit")
    published = await api(port, "publish", {"channel": "personal:#ann", "data": 1})
    assert published["result"]["offset"] == 1
    assert (await new.push())["push"]["pub"]["data"] == 1
    other, _ = await connect_result(port, "bob")  # another user is left alone
    assert len(sessions(app, "ann")) == 1
    for each in (new, other):
        await each.ws.close()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"user_personal_channel_namespace": "nope"}, "not found"),
        (
            {"user_personal_channel_namespace": "cache", "user_personal_single_connection": True},
            "presence",
        ),
    ],
)
def test_a_personal_channel_needs_its_namespace(
    tmp_path: Path, extra: dict[str, Any], message: str
) -> None:
    config = settings(channel=PERSONAL, user_subscribe_to_personal_channel=True, **extra)
    with pytest.raises(PluginError, match=message):
        create_app(tmp_path, settings=config)


async def test_a_session_targets_the_one_connection_holding_it(
    server: tuple[Quart, int],
) -> None:
    """An emulated or one-way connection's session id (set here as its transport
    would); connections without one (WebSockets) are never a session's target."""
    app, port = server
    (holder, held), (other, _) = [await connect_result(port, "ann") for _ in range(2)]
    by_client = {session.client_id: session for session in sessions(app, "ann")}
    target = by_client.pop(held["client"])
    (bystander,) = by_client.values()
    target.session_id = "s-1"
    body = {"user": "ann", "channel": "stream:t", "session": "s-1"}
    assert await api(port, "subscribe", body) == {"result": {}}
    assert (await holder.push())["push"]["channel"] == "stream:t"
    assert "stream:t" in target.channels and "stream:t" not in bystander.channels
    assert await api(port, "subscribe", {**body, "session": "nobody"}) == {"result": {}}
    assert await _maybe_push(other) is None
    await api(port, "unsubscribe", body)
    assert (await holder.push())["push"]["unsubscribe"]["code"] == 2000
    refresh = {"user": "ann", "session": "s-1", "expire_at": 2_000_000_000}
    await api(port, "refresh", refresh)
    assert (await holder.push())["push"]["refresh"]["expires"] is True
    assert target.expire_at is not None and bystander.expire_at is None
    await api(port, "disconnect", {"user": "ann", "session": "s-1"})
    assert (await holder.closed())[0] == 3503
    assert await _maybe_push(other) is None and len(sessions(app, "ann")) == 1
    await other.ws.close()


async def _maybe_push(client: Peer, wait: float = 0.3) -> dict[str, Any] | None:
    try:
        return await client.push(timeout=wait)
    except TimeoutError:
        return None


async def test_recover_since_on_a_server_side_subscribe(server: tuple[Quart, int]) -> None:
    _, port = server
    results = [
        (await api(port, "publish", {"channel": "stream:r", "data": n}))["result"]
        for n in (1, 2, 3)
    ]
    epoch = results[0]["epoch"]
    client = await connected(port, "ann")
    since = {"offset": 1, "epoch": epoch}
    body = {"user": "ann", "channel": "stream:r", "recover_since": since}
    assert await api(port, "subscribe", body) == {"result": {}}
    push = (await client.push())["push"]
    assert push["channel"] == "stream:r"
    assert push["subscribe"] == {"recoverable": True, "positioned": True, "epoch": epoch,
                                 "offset": 1}  # fmt: skip
    missed = [(await client.push())["push"]["pub"] for _ in range(2)]
    assert [(pub["data"], pub["offset"]) for pub in missed] == [(2, 2), (3, 3)]
    await api(port, "publish", {"channel": "stream:r", "data": 4})
    assert (await client.push())["push"]["pub"]["offset"] == 4
    # A position in another epoch: the top, nothing replayed (as a client's own).
    again = await connected(port, "bob")
    stale = {"user": "bob", "channel": "stream:r", "recover_since": {"offset": 1, "epoch": "x"}}
    await api(port, "subscribe", stale)
    assert (await again.push())["push"]["subscribe"]["offset"] == 4
    assert await _maybe_push(again) is None
    async with httpx.AsyncClient() as http:
        bad = await http.post(
            f"http://127.0.0.1:{port}/api/subscribe",
            json={**body, "recover_since": {"offset": -1}},
            headers={"X-API-Key": KEY},
        )
    assert bad.status_code == 400 and "recover_since.offset" in bad.text
    # An empty position in a cache-mode channel: the latest (a one-way client's way).
    for n in (1, 2):
        await api(port, "publish", {"channel": "cache:now", "data": n})
    await api(port, "subscribe", {"user": "ann", "channel": "cache:now", "recover_since": {}})
    assert (await client.push())["push"]["subscribe"]["offset"] == 2
    assert (await client.push())["push"]["pub"] == {"data": 2, "offset": 2}
    assert await _maybe_push(client) is None
    for each in (client, again):
        await each.ws.close()


async def test_rpc_without_a_hook_is_not_available(server: tuple[Quart, int]) -> None:
    _, port = server
    client = await connected(port, "ann")
    reply = await client.call("rpc", method="anything", data={})
    assert reply["error"]["code"] == 108
    await client.ws.close()


async def test_sessions_and_single_connections_across_hosts_over_redis(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The server API of one host reaches a session on the other; a user's new
    connection on one host closes its old one on the other."""
    config = settings(
        channel=PERSONAL,
        broker=redis_server.url,
        user_subscribe_to_personal_channel=True,
        user_personal_channel_namespace="personal",
        user_personal_single_connection=True,
    )
    one, two = (create_app(tmp_path, settings=config) for _ in range(2))
    async with hypercorn(one) as port_one, hypercorn(two) as port_two:
        old, _ = await connect_result(port_one, "ann")
        new, _ = await connect_result(port_two, "ann")
        assert await old.closed() == (3504, "connection limit")
        (session,) = sessions(two, "ann")
        session.session_id = "s-2"
        body = {"user": "ann", "channel": "stream:x", "session": "s-2"}
        assert await api(port_one, "subscribe", body) == {"result": {}}
        assert (await new.push())["push"]["channel"] == "stream:x"
        await api(port_one, "publish", {"channel": "personal:#ann", "data": "hi"})
        assert (await new.push())["push"]["pub"]["data"] == "hi"
        await api(port_one, "disconnect", {"user": "ann", "session": "s-2"})
        assert (await new.closed())[0] == 3503
