"""Debian's php-symfony-mercure publishes to the hub, as a Symfony application does.

tests/php/mercure_publish.php uses ``Symfony\\Component\\Mercure\\Hub`` with a
``StaticTokenProvider`` (the publisher JWT) and an ``Update``: a private update with
``type``, ``id`` and ``retry`` reaches the subscriber whose JWT grants its topic
(Node's eventsource@3, and the raw stream, where the ``retry`` field is seen) and
neither the one without a JWT nor one granted other topics. A publisher JWT without
a ``mercure.publish`` claim for the topic is refused, and the library says so.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest

from realtime import create_app

from ..conftest import ROOT
from ..integration.test_fanout import hypercorn
from ..integration.test_mercure import Events
from .test_mercure_eventsource import (
    BOOKS,
    KEY,
    PATH,
    PUBLISHER,
    READER,
    NodeSubscriber,
    book,
    hub_url,
    subscribed,
    token,
    update,
)

SCRIPT = ROOT / "tests" / "php" / "mercure_publish.php"


async def php_publish(port: int, jwt_token: str, *args: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of the PHP publisher."""
    php = shutil.which("php")
    if php is None:
        pytest.fail("php is not installed: run scripts/test (it installs php-cli)")
    process = await asyncio.create_subprocess_exec(
        php,
        str(SCRIPT),
        f"http://127.0.0.1:{port}{PATH}",
        jwt_token,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_symfony_s_publisher_sends_a_private_update_to_the_granted_subscriber_only(
    tmp_path: Path,
) -> None:
    settings = {"mercure_jwt_key": KEY, "mercure_anonymous": True}
    app = create_app(tmp_path, settings=settings)
    async with (
        hypercorn(app) as port,
        httpx.AsyncClient(timeout=10) as http,
        http.stream(
            "GET",
            f"http://127.0.0.1:{port}{PATH}",
            params={"topic": BOOKS},
            headers={"authorization": f"Bearer {READER}"},
        ) as raw,
    ):
        assert raw.status_code == 200, await raw.aread()
        frames = Events(raw)
        granted = await NodeSubscriber.open(hub_url(port, BOOKS, jwt_token=READER), "book.updated")
        anonymous = await NodeSubscriber.open(hub_url(port, BOOKS), "book.updated")
        elsewhere = await NodeSubscriber.open(
            hub_url(port, BOOKS, jwt_token=token(subscribe=["https://example.com/authors/{id}"])),
            "book.updated",
        )
        subscribers = (granted, anonymous, elsewhere)
        try:
            for subscriber in subscribers:
                await subscriber.until_open(1)
            await subscribed(app, 4)
            status, out, err = await php_publish(
                port,
                PUBLISHER,
                book(7),
                '{"title": "Dune"}',
                "urn:book:7:v2",
                "book.updated",
                "1500",
                "private",
            )
            assert (status, out, err) == (0, "urn:book:7:v2", "")
            assert await frames.next() == {
                "event": "book.updated",
                "retry": "1500",
                "id": "urn:book:7:v2",
                "data": '{"title": "Dune"}',
            }
            # A public update after it: whoever has it and not the private one never
            # gets that (one stream, in order).
            status, out, err = await php_publish(port, PUBLISHER, book(8), "public", "urn:book:8")
            assert (status, out, err) == (0, "urn:book:8", "")
            assert await frames.next() == {"id": "urn:book:8", "data": "public"}
            private = update("urn:book:7:v2", '{"title": "Dune"}', "book.updated")
            public = update("urn:book:8", "public")
            assert await granted.events(2) == [private, public]
            assert await anonymous.events(1) == [public]
            assert await elsewhere.events(1) == [public]

            # A JWT that may subscribe but not publish, or publish elsewhere: refused
            # (401), which the library reports as a failed send.
            for refused in (READER, token(publish=["https://example.com/authors/{id}"])):
                status, out, err = await php_publish(port, refused, book(9), "no", "urn:book:9")
                assert status == 1 and out == ""
                assert "Failed to send an update." in err
                assert "401" in err, err
            status, out, err = await php_publish(port, PUBLISHER, book(10), "last", "urn:book:10")
            assert (status, out) == (0, "urn:book:10")
            last = update("urn:book:10", "last")
            for subscriber in subscribers:
                assert await subscriber.events(1) == [last]
            assert await frames.next() == {"id": "urn:book:10", "data": "last"}
        finally:
            for subscriber in subscribers:
                await subscriber.close()
