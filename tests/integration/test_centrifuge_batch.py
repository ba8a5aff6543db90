"""The server API's ``batch`` (issue 21, item 4): many commands in one request.

Run in order (``parallel: true``: at once, a bounded number at a time), each answered
in the request's order as ``{"<method>": result}`` or ``{"error": ...}``, under
``{"replies": [...]}`` as Centrifugo answers; ``cent``'s ``Client.batch`` reads it.
Bad input: a null command is 107, an unknown one 104, a field of the wrong type 107
for that command alone; a body that is not a batch, or one over the command limit, 400.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cent
import httpx
import pytest
from quart import Quart

from realtime import create_app, get_host
from realtime_broker import get_broker
from realtime_centrifuge.api import BATCH_CONCURRENCY, MAX_BATCH_COMMANDS

from .test_centrifuge_cache import KEY, settings
from .test_centrifuge_endpoint import connected
from .test_fanout import hypercorn


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[Quart, int]]:
    app = create_app(tmp_path, settings=settings())
    async with hypercorn(app) as port:
        yield app, port


async def batch(port: int, body: Any) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"http://127.0.0.1:{port}/api/batch", json=body, headers={"X-API-Key": KEY}
        )


async def test_commands_run_in_order_each_answered_in_its_place(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    client = await connected(port, "ann")
    await client.call("subscribe", channel="stream:b")
    response = await batch(
        port,
        {
            "commands": [
                {"publish": {"channel": "stream:b", "data": 1}},
                {"publish": {"channel": "x:unknown", "data": 2}},
                {"history": {"channel": "stream:b", "limit": 10}},
                {"publish": {"channel": "stream:b", "data": 3}},
                {"presence_stats": {"channel": "stream:b"}},
                {"broadcast": {"channels": ["stream:b", "plain"], "data": 4}},
                {"info": {}},
            ]
        },
    )
    assert response.status_code == 200
    replies = response.json()["replies"]
    assert "result" not in response.json()  # Go's BatchResponse: replies only
    epoch = replies[0]["publish"]["epoch"]
    assert replies[0] == {"publish": {"offset": 1, "epoch": epoch}}
    assert replies[1] == {"error": {"code": 102, "message": "unknown channel"}}
    # In order: the history read sees the first publication and not the third.
    assert [pub["data"] for pub in replies[2]["history"]["publications"]] == [1]
    assert replies[3] == {"publish": {"offset": 2, "epoch": epoch}}
    assert replies[4]["error"]["code"] == 108  # no presence in that namespace
    assert replies[5]["broadcast"]["responses"][0]["result"]["offset"] == 3
    assert replies[6]["info"]["nodes"]
    got = [(await client.push())["push"]["pub"]["data"] for _ in range(3)]
    assert got == [1, 3, 4]
    await client.ws.close()


async def test_cent_batch_works(server: tuple[Quart, int]) -> None:
    _, port = server
    async with cent.AsyncClient(f"http://127.0.0.1:{port}/api", KEY) as api:
        for parallel in (False, True):
            result = await api.batch(
                cent.BatchRequest(
                    requests=[
                        cent.PublishRequest(channel="stream:c", data={"n": 1}),
                        cent.PublishRequest(channel="plain", data={"n": 2}),
                        cent.HistoryRequest(channel="stream:c", limit=10),
                        # (cent 5.2 fails on an error reply with KeyError, with
                        # Centrifugo as here: only commands that succeed.)
                        cent.InfoRequest(),
                        cent.ChannelsRequest(),
                    ],
                    parallel=parallel,
                )
            )
            published, plain, history, _, channels = result.replies
            assert isinstance(published, cent.PublishResult) and published.offset >= 1
            assert isinstance(plain, cent.PublishResult) and plain.offset == 0
            assert isinstance(history, cent.HistoryResult)
            assert isinstance(channels, cent.ChannelsResult)
            if not parallel:
                assert [pub.data for pub in history.publications] == [{"n": 1}]


async def test_parallel_runs_commands_at_once_and_answers_in_order(
    server: tuple[Quart, int],
) -> None:
    """``parallel`` runs ``BATCH_CONCURRENCY`` commands at a time (a slow broker is
    waited for once a round, not once a command) and answers in the request's order."""
    app, port = server
    commands: list[dict[str, Any]] = [
        {"publish": {"channel": "stream:p", "data": n}} for n in range(3 * BATCH_CONCURRENCY)
    ]
    commands.insert(5, None)  # type: ignore[arg-type]
    commands.insert(9, {"nonsense": {}})
    broker = get_broker(get_host(app))
    original = broker.publish_result
    running, most = 0, 0

    async def slow(*args: Any, **kwargs: Any) -> Any:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(0.05)
            return await original(*args, **kwargs)
        finally:
            running -= 1

    broker.publish_result = slow  # type: ignore[method-assign]
    started = time.monotonic()
    response = await batch(port, {"commands": commands, "parallel": True})
    took = time.monotonic() - started
    replies = response.json()["replies"]
    assert len(replies) == len(commands)
    assert replies[5] == {"error": {"code": 107, "message": "bad request"}}
    assert replies[9] == {"error": {"code": 104, "message": "not found"}}
    publishes = [reply["publish"] for reply in replies if "publish" in reply]
    assert len(publishes) == 3 * BATCH_CONCURRENCY
    assert most == BATCH_CONCURRENCY and took < 3 * BATCH_CONCURRENCY * 0.05 / 2
    # Sequential: one at a time.
    most = 0
    await batch(port, {"commands": commands[:4]})
    assert most == 1


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"commands": {"publish": {}}}, 400),
        ({"commands": [1, 2]}, 400),
        ({"commands": [{"info": {}}] * (MAX_BATCH_COMMANDS + 1)}, 400),
        ({"commands": [], "parallel": "yes"}, 400),
        ([{"info": {}}], 400),
    ],
)
async def test_a_body_that_is_no_batch_is_a_400(
    server: tuple[Quart, int], body: Any, status: int
) -> None:
    _, port = server
    response = await batch(port, body)
    assert response.status_code == status, response.text


async def test_bad_commands_are_answered_alone(server: tuple[Quart, int]) -> None:
    _, port = server
    response = await batch(
        port,
        {
            "commands": [
                {"publish": {"channel": 5, "data": 1}},  # Go would 400 the whole body
                {"publish": "not an object"},
                {"rpc": {"method": "x"}},
                {"batch": {"commands": []}},  # no batch in a batch, as in Go
                {"publish": {"channel": "plain", "data": 1}, "info": {}},  # the first runs
                {"publish": None, "info": {}},
                {},
            ]
        },
    )
    assert response.status_code == 200
    replies = response.json()["replies"]
    assert replies[0]["error"]["code"] == 107 and "channel" in replies[0]["error"]["message"]
    assert replies[1]["error"]["code"] == 107
    assert replies[2:4] == [{"error": {"code": 104, "message": "not found"}}] * 2
    assert replies[4] == {"publish": {}}
    assert "info" in replies[5]
    assert replies[6] == {"error": {"code": 104, "message": "not found"}}
    empty = await batch(port, {})
    assert empty.json() == {"replies": []}
