"""History, recovery and positioning on the Centrifuge protocol, under real Hypercorn.

With the ``memory://`` broker: offsets on publications, a subscriber coming back
with its position gets exactly what it missed or ``recovered: false``, and the
``history`` command pages through a channel's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import cent
import httpx
import pytest
from quart import Quart

from realtime import get_host
from realtime_broker import BrokerUnavailable, Publication, get_broker
from realtime_centrifuge.plugin import get_node

from ..conftest import RedisServer
from .test_centrifuge_endpoint import Peer, connected, peer, served_app, token
from .test_fanout import hypercorn

API_KEY = "history-api-key"
CHANNELS = {
    "namespaces": [
        {
            "name": "feed",
            "history_size": 5,
            "history_ttl": "60s",
            "force_recovery": True,
            "allow_subscribe_for_client": True,
            "allow_history_for_subscriber": True,
        },
        {
            "name": "opt",
            "history_size": 5,
            "history_ttl": "60s",
            "allow_recovery": True,
            "allow_subscribe_for_client": True,
        },
        {"name": "plain", "allow_subscribe_for_client": True, "allow_history_for_client": True},
    ]
}


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    app = await served_app(
        tmp_path,
        channel=CHANNELS,
        fast_path=request.param == "fast-path",
        client_recovery_max_publication_limit=3,
        api_key=API_KEY,
    )
    async with hypercorn(app) as port:
        yield app, port


async def publish(app: Quart, channel: str, n: int) -> None:
    await get_broker(get_host(app)).publish(channel, Publication(f'{{"n":{n}}}', json=True))


async def pubs(client: Peer, count: int) -> list[tuple[int, int]]:
    """The next ``count`` pushes' (n, offset)."""
    got = []
    for _ in range(count):
        pub = (await client.push())["push"]["pub"]
        got.append((pub["data"]["n"], pub.get("offset", 0)))
    return got


async def test_publications_carry_offsets_and_subscribe_says_where_the_stream_is(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    await publish(app, "feed:a", 1)  # before anyone listens: kept all the same
    client = await connected(port)
    sub = (await client.call("subscribe", channel="feed:a"))["subscribe"]
    assert sub["recoverable"] is True and sub["positioned"] is True
    assert sub["offset"] == 1 and sub["epoch"]
    assert "recovered" not in sub and "publications" not in sub
    await publish(app, "feed:a", 2)
    await publish(app, "feed:a", 3)
    assert await pubs(client, 2) == [(2, 2), (3, 3)]
    await client.ws.close()


async def test_a_client_coming_back_gets_exactly_what_it_missed_then_live_ones(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    first = await connected(port)
    # Nothing published yet: the read made no position, so the epoch is empty (left out)
    # and the first publication's epoch, whatever it is, follows offset 0 in it.
    empty = (await first.call("subscribe", channel="feed:a"))["subscribe"]
    assert "epoch" not in empty and empty["recoverable"] is True
    epoch = ""
    await publish(app, "feed:a", 1)
    assert await pubs(first, 1) == [(1, 1)]
    await first.ws.close()
    await publish(app, "feed:a", 2)
    await publish(app, "feed:a", 3)
    back = await connected(port)
    reply = await back.call("subscribe", channel="feed:a", recover=True, epoch=epoch, offset=1)
    sub = reply["subscribe"]
    assert sub["recovered"] is True and sub["was_recovering"] is True
    assert sub["offset"] == 1 and sub["epoch"]  # the client moves on with the pubs, in the
    epoch = sub["epoch"]  # stream's epoch from now on
    assert [(p["data"]["n"], p["offset"]) for p in sub["publications"]] == [(2, 2), (3, 3)]
    # Timed for the benchmark (and later /metrics): that one recovery only.
    (took,) = get_node(get_host(app)).recovery_times
    assert 0 < took < 5
    await publish(app, "feed:a", 4)
    assert await pubs(back, 1) == [(4, 4)]
    await back.ws.close()


async def test_nothing_missed_is_a_recovery_with_no_publications(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    await publish(app, "feed:a", 1)
    client = await connected(port)
    epoch = (await client.call("subscribe", channel="feed:a"))["subscribe"]["epoch"]
    await client.call("unsubscribe", channel="feed:a")
    reply = await client.call("subscribe", channel="feed:a", recover=True, epoch=epoch, offset=1)
    sub = reply["subscribe"]
    assert sub["recovered"] is True and "publications" not in sub and sub["offset"] == 1
    await client.ws.close()


@pytest.mark.parametrize(
    ("case", "position"),
    [
        ("trimmed", {"offset": 1}),  # 2 and 3 fell out of a 5-publication window
        ("over the recovery limit", {"offset": 4}),  # 4 missed, 3 may be replayed
        ("from the future", {"offset": 50}),
        ("another epoch", {"offset": 7, "epoch": "elsewhere"}),
    ],
)
async def test_what_cannot_be_recovered_whole_is_not_recovered_at_all(
    server: tuple[Quart, int], case: str, position: dict[str, Any]
) -> None:
    app, port = server
    client = await connected(port)
    epoch = (await client.call("subscribe", channel="feed:a"))["subscribe"].get("epoch", "")
    await client.call("unsubscribe", channel="feed:a")
    for n in range(1, 9):
        await publish(app, "feed:a", n)
    params = {"epoch": epoch, **position}
    sub = (await client.call("subscribe", channel="feed:a", recover=True, **params))["subscribe"]
    assert "recovered" not in sub, case  # false: omitted, as Go's omitempty does
    assert "publications" not in sub
    assert sub["was_recovering"] is True
    assert sub["offset"] == 8 and sub["epoch"]  # start again from here
    await publish(app, "feed:a", 9)
    assert await pubs(client, 1) == [(9, 9)]
    await client.ws.close()


async def test_with_the_reject_flag_an_unrecoverable_position_is_error_112(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    client = await connected(port)
    reply = await client.call(
        "subscribe", channel="feed:a", recover=True, epoch="gone", offset=3, flag=2
    )
    assert reply["error"]["code"] == 112
    await publish(app, "feed:a", 1)  # not subscribed after all: nothing arrives
    assert (await client.call("subscribe", channel="feed:a"))["subscribe"]["offset"] == 1
    await client.ws.close()


async def test_recovery_is_on_request_where_the_namespace_only_allows_it(
    server: tuple[Quart, int],
) -> None:
    _, port = server
    client = await connected(port)
    sub = (await client.call("subscribe", channel="opt:a"))["subscribe"]
    assert "recoverable" not in sub and "positioned" not in sub and "epoch" not in sub
    await client.call("unsubscribe", channel="opt:a")
    sub = (await client.call("subscribe", channel="opt:a", recoverable=True))["subscribe"]
    assert sub["recoverable"] is True and "offset" not in sub  # 0 in the empty epoch
    await client.ws.close()


async def test_history_pages_through_the_stream(server: tuple[Quart, int]) -> None:
    app, port = server
    for n in range(1, 5):
        await publish(app, "feed:a", n)
    client = await connected(port)
    assert (await client.call("history", channel="feed:a", limit=-1))["error"]["code"] == 103
    await client.call("subscribe", channel="feed:a")  # subscribers may read it
    page = (await client.call("history", channel="feed:a", limit=-1))["history"]
    epoch = page["epoch"]
    assert [p["offset"] for p in page["publications"]] == [1, 2, 3, 4] and page["offset"] == 4
    page = (await client.call("history", channel="feed:a"))["history"]  # limit 0
    assert page == {"publications": [], "epoch": epoch, "offset": 4}
    since = {"offset": 2, "epoch": epoch}
    page = (await client.call("history", channel="feed:a", limit=1, since=since))["history"]
    assert [p["data"]["n"] for p in page["publications"]] == [3]
    page = (await client.call("history", channel="feed:a", limit=2, reverse=True))["history"]
    assert [p["offset"] for p in page["publications"]] == [4, 3]
    page = (await client.call("history", channel="feed:a", limit=-1, since=since, reverse=True))[
        "history"
    ]
    assert [p["offset"] for p in page["publications"]] == [1]
    wrong = {"offset": 2, "epoch": "other"}
    assert (await client.call("history", channel="feed:a", since=wrong))["error"]["code"] == 112
    bad = {"offset": 0, "epoch": epoch}
    reply = await client.call("history", channel="feed:a", since=bad, reverse=True)
    assert reply["error"]["code"] == 107
    assert (await client.call("history", channel="plain:a"))["error"]["code"] == 108
    assert (await client.call("history", channel="nowhere:a"))["error"]["code"] == 102
    await client.ws.close()


async def test_server_side_subscriptions_are_positioned_and_recover_at_connect(
    server: tuple[Quart, int],
) -> None:
    """A token's channels in a namespace forcing recovery: the connect result says
    where each stream stands, and a client back with its position in ``subs`` gets
    what it missed there (Centrifuge's server-side subscription recovery)."""
    app, port = server
    await publish(app, "feed:s", 1)
    first = await peer(port)
    reply = await first.call("connect", token=token("alice", channels=["feed:s"]))
    sub = reply["connect"]["subs"]["feed:s"]
    assert sub["recoverable"] is True and sub["positioned"] is True
    assert sub["offset"] == 1 and sub["epoch"]
    epoch = sub["epoch"]
    await publish(app, "feed:s", 2)
    assert await pubs(first, 1) == [(2, 2)]
    await first.ws.close()
    await publish(app, "feed:s", 3)
    await publish(app, "feed:s", 4)
    back = await peer(port)
    subs = {"feed:s": {"recover": True, "epoch": epoch, "offset": 2}}
    reply = await back.call("connect", token=token("alice", channels=["feed:s"]), subs=subs)
    sub = reply["connect"]["subs"]["feed:s"]
    assert sub["recovered"] is True and sub["was_recovering"] is True
    assert [(p["data"]["n"], p["offset"]) for p in sub["publications"]] == [(3, 3), (4, 4)]
    await publish(app, "feed:s", 5)
    assert await pubs(back, 1) == [(5, 5)]
    # From another epoch: not recovered, and nothing replayed.
    again = await peer(port)
    subs = {"feed:s": {"recover": True, "epoch": "other", "offset": 2}}
    reply = await again.call("connect", token=token("bob", channels=["feed:s"]), subs=subs)
    sub = reply["connect"]["subs"]["feed:s"]
    assert "recovered" not in sub and "publications" not in sub and sub["offset"] == 5
    for client in (back, again):
        await client.ws.close()


async def test_a_server_api_subscribe_says_where_the_stream_stands(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    await publish(app, "feed:p", 1)
    client = await connected(port, "carol")
    api = cent.AsyncClient(f"http://127.0.0.1:{port}/api", API_KEY)
    try:
        await api.subscribe(cent.SubscribeRequest(user="carol", channel="feed:p"))
    finally:
        await api.close()
    push = (await client.push())["push"]
    assert push["channel"] == "feed:p"
    assert push["subscribe"]["recoverable"] is True and push["subscribe"]["offset"] == 1
    await publish(app, "feed:p", 2)
    assert await pubs(client, 1) == [(2, 2)]
    await client.ws.close()


async def test_the_server_api_reads_and_clears_history_with_cent(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    await publish(app, "feed:a", 1)
    await get_broker(get_host(app)).publish("feed:a", Publication("plain text"))
    client = cent.Client(f"http://127.0.0.1:{port}/api", API_KEY)

    def run() -> None:
        page = client.history(cent.HistoryRequest(channel="feed:a", limit=-1))
        assert [(p.data, p.offset) for p in page.publications] == [({"n": 1}, 1), ("plain text", 2)]
        since = cent.StreamPosition(offset=1, epoch=page.epoch)
        later = client.history(cent.HistoryRequest(channel="feed:a", limit=10, since=since))
        assert [p.offset for p in later.publications] == [2] and later.offset == 2
        with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
            client.history(cent.HistoryRequest(channel="plain:a", limit=1))
        assert caught.value.code == 108
        wrong = cent.StreamPosition(offset=1, epoch="other")
        with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
            client.history(cent.HistoryRequest(channel="feed:a", limit=1, since=wrong))
        assert caught.value.code == 112
        with pytest.raises(cent.exceptions.CentApiResponseError) as caught:
            client.publish(cent.PublishRequest(channel="feed:a", data=1, skip_history=True))
        assert caught.value.code == 107
        client.history_remove(cent.HistoryRemoveRequest(channel="feed:a"))
        empty = client.history(cent.HistoryRequest(channel="feed:a", limit=-1))
        assert empty.publications == [] and empty.offset == 2 and empty.epoch == page.epoch

    await asyncio.to_thread(run)


HISTORY_SCRIPT = """
page = history(request.values["channel"], limit=int(request.values.get("limit", "-1")))
print(" ".join(f"{p.offset}:{p.data}" for p in page.publications), page.position.offset)
"""


async def test_a_script_reads_a_channels_history(server: tuple[Quart, int], tmp_path: Path) -> None:
    app, port = server
    (tmp_path / "hist.py").write_text(HISTORY_SCRIPT)
    await publish(app, "feed:a", 1)
    await publish(app, "feed:a", 2)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        answer = await http.get("/hist.py", params={"channel": "feed:a"})
        assert answer.status_code == 200
        assert answer.text.strip() == '1:{"n":1} 2:{"n":2} 2'
        answer = await http.get("/hist.py", params={"channel": "feed:a", "limit": "0"})
        assert answer.text.strip() == "2"
        answer = await http.get("/hist.py", params={"channel": "plain:a"})
        assert answer.status_code == 404 and "keeps no history" in answer.text


async def test_over_redis_two_hosts_share_the_stream_and_a_client_recovers_on_the_other(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """The client's host goes away; it comes back on another and recovers contiguously."""
    one = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    two = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(one) as port_one, hypercorn(two) as port_two:
        client = await connected(port_one)
        sub = (await client.call("subscribe", channel="feed:a"))["subscribe"]
        assert sub["recoverable"] is True and sub.get("offset", 0) == 0  # 0: omitted
        assert "epoch" not in sub  # nothing published yet: the empty epoch, and no key
        epoch = ""
        await publish(two, "feed:a", 1)
        await publish(one, "feed:a", 2)
        assert await pubs(client, 2) == [(1, 1), (2, 2)]
        await client.ws.close()
        await publish(one, "feed:a", 3)
        await publish(two, "feed:a", 4)
        back = await connected(port_two)
        reply = await back.call("subscribe", channel="feed:a", recover=True, epoch=epoch, offset=2)
        sub = reply["subscribe"]
        assert sub["recovered"] is True and sub["epoch"]
        assert [(p["data"]["n"], p["offset"]) for p in sub["publications"]] == [(3, 3), (4, 4)]
        page = (await back.call("history", channel="feed:a", limit=-1))["history"]
        assert [p["offset"] for p in page["publications"]] == [1, 2, 3, 4]
        await publish(one, "feed:a", 5)
        assert await pubs(back, 1) == [(5, 5)]
        await back.ws.close()


async def test_over_redis_resubscribing_under_a_hammering_publisher_leaves_no_hole_or_twin(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """Publications arriving while a subscribe reads the stream are held and merged."""
    channels = {"namespaces": [{**CHANNELS["namespaces"][0], "history_size": 1000}]}
    app = await served_app(tmp_path, channel=channels, broker=redis_server.url)
    other = await served_app(tmp_path, channel=channels, broker=redis_server.url)
    async with hypercorn(app) as port, hypercorn(other):
        stop = asyncio.Event()
        broker = get_broker(get_host(other))  # another process publishes, all along

        async def hammer() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                with contextlib.suppress(BrokerUnavailable):  # while subscribing: not numbered
                    await broker.publish("feed:a", Publication(f'{{"n":{n}}}', json=True))
                await asyncio.sleep(0)

        task = asyncio.create_task(hammer())
        try:
            client = await connected(port)
            position = None
            for round_ in range(30):
                params: dict[str, Any] = {"channel": "feed:a"}
                if position is not None:
                    params.update(recover=True, epoch=position[0], offset=position[1])
                sub = (await client.call("subscribe", **params))["subscribe"]
                if position is not None:
                    assert sub["recovered"] is True, round_
                offsets = [p["offset"] for p in sub.get("publications", [])]
                start = sub.get("offset", 0)
                last = offsets[-1] if offsets else start
                assert offsets == list(range(start + 1, last + 1))
                for _ in range(10):  # then live, each the next
                    pub = (await client.push())["push"]["pub"]
                    assert pub["offset"] == last + 1, round_
                    last = pub["offset"]
                await client.call("unsubscribe", channel="feed:a")
                position = (sub["epoch"], last)
                client.pushes.clear()  # publications sent before the unsubscribe reply
            await client.ws.close()
        finally:
            stop.set()
            await task


@pytest.mark.parametrize("persistent", [False, True], ids=["no persistence", "AOF"])
async def test_a_redis_restart_keeps_offsets_with_aof_and_changes_the_epoch_without(
    tmp_path: Path, persistent: bool
) -> None:
    """Without persistence the stream is gone: a new epoch, and ``recovered`` false,
    never a silent gap. With AOF the numbering continues and recovery works."""
    redis = RedisServer(tmp_path / "redis", appendonly=persistent)
    redis.workdir.mkdir()
    redis.start()
    try:
        app = await served_app(tmp_path, channel=CHANNELS, broker=redis.url)
        async with hypercorn(app) as port:
            await publish(app, "feed:a", 1)  # the stream's epoch exists before the client
            client = await connected(port)
            epoch = (await client.call("subscribe", channel="feed:a"))["subscribe"]["epoch"]
            for n in (2, 3):
                await publish(app, "feed:a", n)
            assert await pubs(client, 2) == [(2, 2), (3, 3)]
            await client.ws.close()
            redis.stop()
            redis.start()
            async with asyncio.timeout(20):  # until the process is back on Redis
                while True:
                    try:
                        await publish(app, "feed:a", 4)
                        break
                    except BrokerUnavailable:
                        await asyncio.sleep(0.1)
            await publish(app, "feed:a", 5)
            back = await connected(port)
            reply = await back.call(
                "subscribe", channel="feed:a", recover=True, epoch=epoch, offset=3
            )
            sub = reply["subscribe"]
            if persistent:
                assert sub["recovered"] is True and sub["epoch"] == epoch
                assert [p["offset"] for p in sub["publications"]] == [4, 5]
            else:
                assert "recovered" not in sub and "publications" not in sub
                assert sub["epoch"] != epoch and sub["offset"] == 2
            await back.ws.close()
    finally:
        redis.stop()


async def test_a_history_call_gets_at_most_the_configured_limit(tmp_path: Path) -> None:
    app = await served_app(tmp_path, channel=CHANNELS, client_history_max_publication_limit=2)
    async with hypercorn(app) as port:
        for n in range(1, 5):
            await publish(app, "feed:a", n)
        client = await connected(port)
        await client.call("subscribe", channel="feed:a")
        for limit in (-1, 3, 1_000_000):  # all, over the cap, far over it
            page = (await client.call("history", channel="feed:a", limit=limit))["history"]
            assert [p["offset"] for p in page["publications"]] == [1, 2], limit
            assert page["offset"] == 4
        await client.ws.close()


async def test_a_failed_stream_read_fails_the_subscribe_and_leaves_it_unsubscribed(
    server: tuple[Quart, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Never a success without its stream fields: 100 (temporary), the SDK retries."""
    app, port = server
    broker = get_broker(get_host(app))
    client = await connected(port)
    epoch = (await client.call("subscribe", channel="feed:f"))["subscribe"].get("epoch", "")
    await client.call("unsubscribe", channel="feed:f")

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise BrokerUnavailable("redis is away")

    with monkeypatch.context() as patched:
        patched.setattr(broker, "_read_history", down)
        reply = await client.call(
            "subscribe", channel="feed:f", recover=True, epoch=epoch, offset=0
        )
        assert reply["error"]["code"] == 100 and reply["error"]["temporary"] is True
    await publish(app, "feed:f", 1)  # not subscribed: nothing comes
    with pytest.raises(TimeoutError):
        await client.push(timeout=0.3)
    sub = await client.call("subscribe", channel="feed:f", recover=True, epoch=epoch, offset=0)
    assert sub["subscribe"]["recovered"] is True
    assert [p["offset"] for p in sub["subscribe"]["publications"]] == [1]
    await client.ws.close()


async def test_over_redis_a_burst_of_reads_waits_for_connections_rather_than_failing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    """More commands in flight than the pool's connections: each waits its turn
    (redis-py's default pool refused the 101st with "Too many connections")."""
    app = await served_app(tmp_path, channel=CHANNELS, broker=redis_server.url)
    async with hypercorn(app):
        broker = get_broker(get_host(app))
        await publish(app, "feed:b", 1)
        pages = await asyncio.gather(*(broker.history("feed:b", limit=-1) for _ in range(300)))
        assert {len(page.publications) for page in pages} == {1}
