"""Joins and leaves stop being pushed above a channel size (issue 18 item 10c).

Each join goes to every subscriber: 1,800 clients joining one room in a second made
1.6 million pushes and stalled broadcasts for 3.2 s. Above
``client_join_leave_max_subscribers`` subscribers a channel's joins and leaves are
not pushed; presence still answers who is there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from quart import Quart

from realtime_centrifuge.budget import join_leave_pushed

from .test_centrifuge_endpoint import served_app
from .test_centrifuge_presence import API_KEY, CHANNELS, event, own_id, subscribe
from .test_fanout import hypercorn


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    app = await served_app(
        tmp_path,
        channel=CHANNELS,
        fast_path=request.param == "fast-path",
        api_key=API_KEY,
        client_join_leave_max_subscribers=2,
    )
    async with hypercorn(app) as port:
        yield app, port


def test_the_bound() -> None:
    assert join_leave_pushed(500, 500) and not join_leave_pushed(501, 500)
    assert join_leave_pushed(10**6, 0)  # 0: no bound


async def test_joins_past_the_bound_are_not_pushed_and_presence_still_answers(
    server: tuple[Quart, int], tmp_path: Path
) -> None:
    _, port = server
    (tmp_path / "after.py").write_text("broadcast('after carol', channel='room:a')\n")
    alice, alice_id = await own_id(port, "alice")
    await subscribe(alice, "room:a")
    assert await event(alice) == ("join", "alice", alice_id)
    bob, bob_id = await own_id(port, "bob")
    await subscribe(bob, "room:a")
    assert await event(alice) == ("join", "bob", bob_id)  # two subscribers: pushed
    assert await event(bob) == ("join", "bob", bob_id)
    carol, carol_id = await own_id(port, "carol")
    await subscribe(carol, "room:a")  # the third: past the bound
    async with httpx.AsyncClient() as http:  # a publication, after carol's join
        response = await http.get(f"http://127.0.0.1:{port}/after.py", timeout=10)
    assert response.status_code == 200, response.text
    for client in (alice, bob, carol):
        push = (await client.push())["push"]
        assert "pub" in push, f"a join came before the publication: {push}"
    presence = (await alice.call("presence", channel="room:a"))["presence"]["presence"]
    assert set(presence) == {alice_id, bob_id, carol_id}
    for client in (alice, bob, carol):
        await client.ws.close()
