"""The Mercure hub over real sockets: EventSource-shaped subscriptions read with httpx.

One Hypercorn in the test's loop (both ways a stream is written: taken over from
Hypercorn, or through ASGI); publishers are plain form POSTs with JWTs, as
Symfony's publisher sends them. Every refusal is a 4xx with text, never a traceback.
"""

from __future__ import annotations

import asyncio
import time
import types
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt
import pytest
from quart import Quart

from realtime import create_app, get_host
from realtime_broker import Publication, get_broker
from realtime_hub import get_hub

from ..conftest import eventually
from .test_fanout import hypercorn

KEY = "mercure-test-key-long-enough-for-hs256!"
PATH = "/.well-known/mercure"
BOOK = "https://example.com/books/1"
TEMPLATE = "https://example.com/books/{id}"


def token(
    publish: list[str] | None = None, subscribe: list[str] | None = None, **claims: Any
) -> str:
    mercure: dict[str, Any] = {}
    if publish is not None:
        mercure["publish"] = publish
    if subscribe is not None:
        mercure["subscribe"] = subscribe
    return jwt.encode({"mercure": mercure, **claims}, KEY, algorithm="HS256")


PUBLISHER = token(publish=["*"])


@asynccontextmanager
async def served(
    tmp_path: Path, plugins: tuple[types.ModuleType, ...] = (), **settings: Any
) -> AsyncIterator[tuple[Quart, int]]:
    (tmp_path / "send.py").write_text(
        "from realtime_broadcast import broadcast\n"
        "broadcast(request.values['m'], channel=request.values['c'])\n"
    )
    config = {
        "mercure_jwt_key": KEY,
        "mercure_anonymous": True,
        "mercure_history_size": 50,
        **settings,
    }
    app = create_app(tmp_path, settings=config, plugins=list(plugins))
    async with hypercorn(app) as port:
        yield app, port


@pytest.fixture(params=["fast-path", "plain"])
async def server(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[Quart, int]]:
    async with served(tmp_path, fast_path=request.param == "fast-path") as app_port:
        yield app_port


class Events:
    """Server-sent events as a client parses them: a dict of fields per event.

    One task reads the lines into a queue, so a wait that times out loses nothing.
    """

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.comments = 0
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for line in self.response.aiter_lines():
                self.queue.put_nowait(line)
        except httpx.HTTPError:
            pass
        finally:
            self.queue.put_nowait(None)

    async def _line(self) -> str:
        line = await self.queue.get()
        if line is None:
            self.queue.put_nowait(None)
            raise EOFError("the stream ended")
        return line

    async def next(self, timeout: float = 5.0) -> dict[str, str]:
        async with asyncio.timeout(timeout):
            event: dict[str, str] = {}
            while True:
                line = await self._line()
                if line == "":
                    if event:
                        return event
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if name == "data" and "data" in event:
                    event["data"] += "\n" + value
                else:
                    event[name] = value

    async def comment(self, timeout: float = 5.0) -> None:
        """Wait for the next comment line (a heartbeat, or the stream's first line)."""
        async with asyncio.timeout(timeout):
            while True:
                line = await self._line()
                if line.startswith(":"):
                    self.comments += 1
                    return
                assert not line, f"an event before a heartbeat: {line!r}"

    async def nothing(self, seconds: float = 0.3) -> None:
        with pytest.raises(TimeoutError):
            await self.next(seconds)


@asynccontextmanager
async def subscribe(
    port: int, *topics: str, jwt_token: str | None = None, **kwargs: Any
) -> AsyncIterator[Events]:
    params: list[tuple[str, str]] = [("topic", t) for t in topics]
    params += list(kwargs.pop("params", []))
    headers = dict(kwargs.pop("headers", {}))
    if jwt_token is not None:
        headers["authorization"] = f"Bearer {jwt_token}"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "GET", f"http://127.0.0.1:{port}{PATH}", params=params, headers=headers, **kwargs
        ) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        events = Events(response)
        try:
            yield events
        finally:
            events.reader.cancel()


async def wait_subscribed(app: Quart, channel: str, count: int = 1) -> None:
    hub = get_hub(get_host(app))
    await eventually(lambda: hub.subscribers(channel) >= count)


async def publish(
    port: int, topics: list[str] | str, data: str = "", *, jwt_token: str = PUBLISHER, **fields: str
) -> httpx.Response:
    form = [("topic", t) for t in ([topics] if isinstance(topics, str) else topics)]
    form += [("data", data), *fields.items()]
    async with httpx.AsyncClient() as http:
        return await http.post(
            f"http://127.0.0.1:{port}{PATH}",
            content=urlencode(form),
            headers={
                "authorization": f"Bearer {jwt_token}",
                "content-type": "application/x-www-form-urlencoded",
            },
        )


async def test_exact_and_template_subscribers_get_an_update_once(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    async with (
        subscribe(port, BOOK) as exact,
        subscribe(port, TEMPLATE) as by_template,
        subscribe(port, BOOK, TEMPLATE, "*") as both,
        subscribe(port, "https://example.com/authors/{id}") as other,
    ):
        await wait_subscribed(app, BOOK, 2)
        response = await publish(port, BOOK, "hello", id="urn:x:1")
        assert response.status_code == 200 and response.text == "urn:x:1"
        for events in (exact, by_template, both):
            assert await events.next() == {"id": "urn:x:1", "data": "hello"}
        await other.nothing()
        await both.nothing()  # once, though three selectors match


async def test_publish_answers_a_generated_id_and_fields_go_on_the_wire(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    async with subscribe(port, BOOK) as events:
        await wait_subscribed(app, BOOK)
        response = await publish(
            port, BOOK, "line one\nline two", type="book.updated", retry="5000"
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text.startswith("urn:uuid:")
        assert await events.next() == {
            "event": "book.updated",
            "retry": "5000",
            "id": response.text,
            "data": "line one\nline two",
        }


async def test_private_updates_reach_matching_grants_only(server: tuple[Quart, int]) -> None:
    app, port = server
    right = token(subscribe=[TEMPLATE])
    wrong = token(subscribe=["https://example.com/authors/{id}"])
    async with (
        subscribe(port, BOOK, jwt_token=right) as allowed,
        subscribe(port, TEMPLATE, jwt_token=right) as allowed_by_template,
        subscribe(port, BOOK, jwt_token=wrong) as refused,
        subscribe(port, BOOK) as anonymous,
    ):
        await wait_subscribed(app, BOOK, 3)
        response = await publish(port, BOOK, "secret", private="on", id="p1")
        assert response.status_code == 200
        await publish(port, BOOK, "public", id="p2")
        assert await allowed.next() == {"id": "p1", "data": "secret"}
        assert await allowed_by_template.next() == {"id": "p1", "data": "secret"}
        for events in (allowed, allowed_by_template, refused, anonymous):
            assert await events.next() == {"id": "p2", "data": "public"}


async def test_alternate_topics_deliver_once_on_the_first_subscribed(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    alternate = "https://example.com/users/1/books/1"
    async with subscribe(port, alternate, BOOK) as events, subscribe(port, alternate) as only:
        await wait_subscribed(app, alternate, 2)
        await publish(port, [BOOK, alternate], "two topics", id="a1")
        assert await events.next() == {"id": "a1", "data": "two topics"}
        assert await only.next() == {"id": "a1", "data": "two topics"}
        await events.nothing()


async def test_last_event_id_replays_exactly_what_was_missed(server: tuple[Quart, int]) -> None:
    _app, port = server
    for n in range(1, 6):
        assert (await publish(port, BOOK, f"u{n}", id=f"id{n}")).status_code == 200
    async with subscribe(port, BOOK, headers={"last-event-id": "id3"}) as events:
        assert events.response.headers["last-event-id"] == "id5"
        assert await events.next() == {"id": "id4", "data": "u4"}
        assert await events.next() == {"id": "id5", "data": "u5"}
        await publish(port, BOOK, "u6", id="id6")
        assert await events.next() == {"id": "id6", "data": "u6"}
        await events.nothing()
    async with subscribe(port, TEMPLATE, params=[("lastEventID", "id5")]) as events:
        assert await events.next() == {"id": "id6", "data": "u6"}
        await events.nothing()
    async with subscribe(port, BOOK, params=[("Last-Event-ID", "id5")]) as events:  # version 7
        assert await events.next() == {"id": "id6", "data": "u6"}
    async with subscribe(port, BOOK, params=[("lastEventID", "earliest")]) as events:
        assert [(await events.next())["id"] for _ in range(6)] == [f"id{n}" for n in range(1, 7)]


async def test_heartbeat_comments(tmp_path: Path) -> None:
    async with (
        served(tmp_path, mercure_heartbeat=0.1) as (_app, port),
        subscribe(port, BOOK) as events,
    ):
        await events.comment()  # the stream's first line
        started = time.monotonic()
        await events.comment()
        assert time.monotonic() - started < 2


async def test_the_stream_ends_at_the_tokens_exp(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, port):
        expiring = token(subscribe=["*"], exp=int(time.time()) + 2)
        async with subscribe(port, BOOK, jwt_token=expiring) as events:
            with pytest.raises(EOFError):
                await events.next(timeout=5)


async def test_bad_input_is_a_4xx(tmp_path: Path) -> None:
    async with (
        served(tmp_path, mercure_anonymous=False, mercure_max_topics=3) as (_app, port),
        httpx.AsyncClient() as http,
    ):
        url = f"http://127.0.0.1:{port}{PATH}"
        ok = {"authorization": f"Bearer {token(subscribe=['*'])}"}
        bad_jwt = {
            "authorization": "Bearer "
            + jwt.encode({"mercure": {}}, "another-key-long-enough-for-hs256!!", algorithm="HS256")
        }
        assert (await http.get(url, params={"topic": BOOK})).status_code == 401  # anonymous
        assert (await http.get(url, params={"topic": BOOK}, headers=bad_jwt)).status_code == 401
        assert (
            await http.get(url, params={"topic": BOOK}, headers={"authorization": "Bearer x"})
        ).status_code == 401
        assert (await http.get(url, headers=ok)).status_code == 400  # no topic
        many = [("topic", f"t{n}") for n in range(4)]
        assert (await http.get(url, params=many, headers=ok)).status_code == 400
        assert (await http.get(url, params={"topic": "x" * 300}, headers=ok)).status_code == 400
        assert (await http.get(url, params={"topic": "a{b"}, headers=ok)).status_code == 400
        assert (await http.get(url + "?" + "a" * 20000, headers=ok)).status_code == 414
        pub = {"authorization": f"Bearer {PUBLISHER}"}
        assert (await http.post(url, data={"topic": BOOK, "data": "x"})).status_code == 401
        assert (await http.post(url, data={"topic": BOOK}, headers=bad_jwt)).status_code == 401
        not_publisher = {"authorization": f"Bearer {token(subscribe=['*'])}"}
        assert (
            await http.post(url, data={"topic": BOOK}, headers=not_publisher)
        ).status_code == 401
        narrow = {"authorization": f"Bearer {token(publish=['https://example.com/authors/{id}'])}"}
        assert (await http.post(url, data={"topic": BOOK}, headers=narrow)).status_code == 401
        assert (await http.post(url, data={"data": "x"}, headers=pub)).status_code == 400
        assert (
            await http.post(url, data={"topic": BOOK, "retry": "soon"}, headers=pub)
        ).status_code == 400
        assert (
            await http.post(url, data={"topic": BOOK, "id": "a\nb"}, headers=pub)
        ).status_code == 400
        assert (
            await http.post(url, data={"topic": "https://x/.well-known/mercure"}, headers=pub)
        ).status_code == 403
        assert (await http.post(url, content=b"x" * (300 * 1024), headers=pub)).status_code == 413
        big = {"topic": BOOK, "data": "x" * (64 * 1024 + 1)}
        assert (await http.post(url, data=big, headers=pub)).status_code == 413
        assert (await http.post(url, data={"topic": BOOK}, headers=pub)).status_code == 200


async def test_cors_allowlist(tmp_path: Path) -> None:
    async with (
        served(tmp_path, mercure_cors_origins="https://app.example") as (_app, port),
        httpx.AsyncClient() as http,
    ):
        url = f"http://127.0.0.1:{port}{PATH}"
        preflight = {
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        }
        allowed = await http.options(url, headers={"origin": "https://app.example", **preflight})
        assert allowed.status_code == 204
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        assert allowed.headers["access-control-allow-credentials"] == "true"
        assert "authorization" in allowed.headers["access-control-allow-headers"]
        denied = await http.options(url, headers={"origin": "https://evil.example", **preflight})
        assert denied.status_code == 403 and "access-control-allow-origin" not in denied.headers
        published = await http.post(
            url,
            data={"topic": BOOK},
            headers={"origin": "https://app.example", "authorization": f"Bearer {PUBLISHER}"},
        )
        assert published.headers["access-control-allow-origin"] == "https://app.example"
        # A cookie authorizes a POST from an allowed origin only.
        http.cookies.set("mercureAuthorization", PUBLISHER)
        from_evil = await http.post(
            url, data={"topic": BOOK}, headers={"origin": "https://evil.example"}
        )
        assert (
            from_evil.status_code == 401 and "access-control-allow-origin" not in from_evil.headers
        )
        from_app = await http.post(
            url, data={"topic": BOOK}, headers={"origin": "https://app.example"}
        )
        assert from_app.status_code == 200


async def test_any_origin_is_never_credentialed(tmp_path: Path) -> None:
    """``*`` lets every site use the hub with a token it holds, as Go's CORS answers
    it: ``*``, no credentials, so no site reads updates by the user's cookie; and a
    cookie authorizes a POST only from an origin listed by name (no CSRF)."""
    async with (
        served(tmp_path, mercure_cors_origins="*") as (_app, port),
        httpx.AsyncClient() as http,
    ):
        url = f"http://127.0.0.1:{port}{PATH}"
        evil = {"origin": "https://evil.example"}
        preflight = await http.options(
            url, headers={**evil, "access-control-request-method": "GET"}
        )
        assert preflight.status_code == 204
        assert preflight.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in preflight.headers
        published = await http.post(
            url, data={"topic": BOOK}, headers={**evil, "authorization": f"Bearer {PUBLISHER}"}
        )
        assert published.status_code == 200
        assert published.headers["access-control-allow-origin"] == "*"
        assert "access-control-allow-credentials" not in published.headers
        http.cookies.set("mercureAuthorization", PUBLISHER)
        assert (await http.post(url, data={"topic": BOOK}, headers=evil)).status_code == 401


async def test_a_cookie_or_the_query_authorizes_a_subscriber(server: tuple[Quart, int]) -> None:
    app, port = server
    grant = token(subscribe=[BOOK])
    async with (
        subscribe(port, BOOK, cookies={"mercureAuthorization": grant}) as by_cookie,
        subscribe(port, BOOK, params=[("authorization", grant)]) as by_query,
    ):
        await wait_subscribed(app, BOOK, 2)
        await publish(port, BOOK, "private", private="1", id="c1")
        assert await by_cookie.next() == {"id": "c1", "data": "private"}
        assert await by_query.next() == {"id": "c1", "data": "private"}


async def test_a_script_broadcast_reaches_a_subscriber_with_a_grant(
    server: tuple[Quart, int],
) -> None:
    app, port = server
    async with (
        subscribe(port, BOOK, jwt_token=token(subscribe=[BOOK])) as granted,
        subscribe(port, BOOK) as anonymous,
    ):
        await wait_subscribed(app, BOOK, 2)
        async with httpx.AsyncClient() as http:
            sent = await http.get(
                f"http://127.0.0.1:{port}/send.py", params={"m": "from a script", "c": BOOK}
            )
        assert sent.status_code == 200, sent.text
        assert await granted.next() == {"data": "from a script"}
        await anonymous.nothing()  # mercure_foreign_updates = private


async def test_foreign_updates_may_be_public(tmp_path: Path) -> None:
    async with (
        served(tmp_path, mercure_foreign_updates="public") as (app, port),
        subscribe(port, BOOK) as events,
    ):
        await wait_subscribed(app, BOOK)
        async with httpx.AsyncClient() as http:
            await http.get(f"http://127.0.0.1:{port}/send.py", params={"m": "public", "c": BOOK})
        assert await events.next() == {"data": "public"}


async def test_other_protocols_guarded_channels_stay_theirs(tmp_path: Path) -> None:
    """A Centrifuge ``$`` channel (or a Pusher private-, presence- or user channel, as
    the hub's rules reserve them) is guarded by its protocol's own auth: a Mercure
    grant, even ``*``, with foreign updates public, does not read what is sent there;
    Mercure's own updates to such a topic still reach Mercure subscribers."""
    guarded = "$orders"
    async with (
        served(tmp_path, mercure_foreign_updates="public") as (app, port),
        subscribe(port, guarded, jwt_token=token(subscribe=["*"])) as events,
    ):
        await wait_subscribed(app, guarded)
        broker = get_broker(get_host(app))
        await broker.publish(guarded, Publication("a Centrifuge server publish"))
        assert (await publish(port, guarded, "a Mercure update", id="g1")).status_code == 200
        assert await events.next() == {"id": "g1", "data": "a Mercure update"}


async def test_centrifuges_closed_channels_stay_closed(tmp_path: Path) -> None:
    personal = "dialog:#42"
    rules = {
        "namespaces": [
            {"name": "dialog", "allow_user_limited_channels": True},
            {"name": "staff"},  # Centrifuge clients need a subscription token here
        ]
    }
    async with (
        served(tmp_path, channel=rules, mercure_foreign_updates="public") as (app, port),
        subscribe(port, personal, jwt_token=token(subscribe=["*"])) as events,
    ):
        await wait_subscribed(app, personal)
        await get_broker(get_host(app)).publish(personal, Publication("for user 42 only"))
        assert (await publish(port, personal, "a Mercure update", id="d1")).status_code == 200
        assert await events.next() == {"id": "d1", "data": "a Mercure update"}
        async with subscribe(port, "staff:plans", jwt_token=token(subscribe=["*"])) as staff:
            await wait_subscribed(app, "staff:plans")
            await get_broker(get_host(app)).publish("staff:plans", Publication("tokens only"))
            assert (await publish(port, "staff:plans", "from Mercure", id="s1")).status_code == 200
            assert await staff.next() == {"id": "s1", "data": "from Mercure"}


async def test_an_unknown_last_event_id_replays_nothing(server: tuple[Quart, int]) -> None:
    _app, port = server
    await publish(port, BOOK, "kept", id="k1")
    async with subscribe(port, BOOK, headers={"last-event-id": "never-seen"}) as events:
        assert events.response.headers["last-event-id"] == "k1"
        await events.nothing()
        await publish(port, BOOK, "live", id="k2")
        assert await events.next() == {"id": "k2", "data": "live"}


async def test_without_history_the_resume_point_is_earliest(tmp_path: Path) -> None:
    async with (
        served(tmp_path, mercure_history_size=0) as (app, port),
        subscribe(port, BOOK, headers={"last-event-id": "x"}) as events,
    ):
        assert events.response.headers["last-event-id"] == "earliest"
        await wait_subscribed(app, BOOK)
        await publish(port, BOOK, "live", id="l1")
        assert await events.next() == {"id": "l1", "data": "live"}


async def test_a_replay_keeps_foreign_publications_in_their_place(tmp_path: Path) -> None:
    async with served(tmp_path) as (_app, port), httpx.AsyncClient() as http:
        await publish(port, BOOK, "one", id="f1")
        await publish(port, BOOK, "two", id="f2")
        sent = await http.get(f"http://127.0.0.1:{port}/send.py", params={"m": "script", "c": BOOK})
        assert sent.status_code == 200
        await publish(port, BOOK, "three", id="f3")
        grant = token(subscribe=["*"])
        async with subscribe(
            port, BOOK, jwt_token=grant, headers={"last-event-id": "f1"}
        ) as events:
            assert await events.next() == {"id": "f2", "data": "two"}
            assert await events.next() == {"data": "script"}
            assert await events.next() == {"id": "f3", "data": "three"}


async def test_without_a_subscriber_key_everyone_reads_public_updates(tmp_path: Path) -> None:
    async with (
        served(
            tmp_path, mercure_jwt_key="", mercure_publisher_jwt_key=KEY, mercure_anonymous=False
        ) as (app, port),
        subscribe(port, BOOK, jwt_token=token(subscribe=["*"])) as events,
    ):
        await wait_subscribed(app, BOOK)
        await publish(port, BOOK, "private", private="1", id="n1")
        await publish(port, BOOK, "public", id="n2")
        assert await events.next() == {"id": "n2", "data": "public"}


async def test_malformed_requests_are_4xx_and_log_no_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with served(tmp_path, mercure_anonymous=False) as (_app, port):
        get = b"GET /.well-known/mercure?"
        head = b" HTTP/1.1\r\nHost: x\r\n"
        form = b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4\r\n"
        raw = [
            get + b"topic=%ff" + head + b"\r\n",
            get + b"topic=a&topic=%zz&" + b"t=1&" * 200 + head + b"\r\n",
            get + b"topic=a" + head + b"Authorization: Bearer \xff\xfe" + b"a" * 60 + b"\r\n\r\n",
            get + b"topic=a" + head + b'Cookie: a=";;=\\"; mercureAuthorization=short\r\n\r\n',
            b"POST /.well-known/mercure" + head + form
            + b"Authorization: Bearer " + PUBLISHER.encode() + b"\r\n\r\n\xff\xfe=1",
            b"PUT /.well-known/mercure" + head + b"Content-Length: 0\r\n\r\n",
        ]  # fmt: skip
        statuses = []
        for request in raw:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            status_line = await asyncio.wait_for(reader.readline(), 5)
            statuses.append(int(status_line.split()[1]))
            writer.close()
        assert statuses == [400, 400, 401, 401, 400, 405]
        huge_retry = await publish(port, BOOK, retry="9" * 30)
        assert huge_retry.status_code == 400
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
