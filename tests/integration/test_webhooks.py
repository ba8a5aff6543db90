"""Webhooks against a real HTTP receiver on loopback: batches, signatures, retries, bounds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import h11
import httpx
import pytest

from realtime import create_app, get_host, hookimpl
from realtime.errors import PluginError
from realtime_events import get_events
from realtime_events.model import Event
from realtime_events.webhooks import SIGNATURE_HEADER, WebhookOptions, WebhookSender, sign

SECRET = b"0123456789abcdef-webhook"


class Receiver:
    """An HTTP/1.1 server that records each POST body and answers as ``answer`` says."""

    def __init__(self, answer: Callable[[int], int | None] = lambda n: 200) -> None:
        #: Given the request's number (0, 1...): a status, or None to never answer.
        self.answer = answer
        self.bodies: list[bytes] = []
        self.signatures: list[str] = []
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.got = asyncio.Event()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                body = b""
                headers: dict[bytes, bytes] = {}
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        headers = dict(event.headers)
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                number = self.requests
                self.requests += 1
                self.bodies.append(body)
                self.signatures.append(headers.get(SIGNATURE_HEADER.lower().encode(), b"").decode())
                self.got.set()
                status = self.answer(number)
                if status is None:
                    await asyncio.sleep(3600)  # hang: the sender must time out
                    return
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    ("content-length", "2")])) or b"")  # fmt: skip
                writer.write(conn.send(h11.Data(data=b"ok")) or b"")
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    def events(self) -> list[dict[str, Any]]:
        return [event for body in self.bodies for event in json.loads(body)["events"]]


@contextlib.asynccontextmanager
async def sender(url: str, **options: Any) -> AsyncIterator[tuple[WebhookSender, dict[str, int]]]:
    outcomes: dict[str, int] = {}

    def outcome(result: str, count: int) -> None:
        outcomes[result] = outcomes.get(result, 0) + count

    async with httpx.AsyncClient(trust_env=False) as client:
        hook = WebhookSender(url, WebhookOptions(secret=SECRET, **options), client,
                             outcome=outcome)  # fmt: skip
        hook.start()
        try:
            yield hook, outcomes
        finally:
            await hook.close()


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


def user_event(n: int) -> Event:
    return Event.of("user_online", user=f"user-{n}")


async def test_batches_arrive_in_order_signed() -> None:
    async with Receiver() as receiver, sender(receiver.url, batch_size=10) as (hook, outcomes):
        for n in range(25):
            hook.offer(user_event(n))
        await until(lambda: outcomes.get("sent", 0) == 25)
        assert [e["user"] for e in receiver.events()] == [f"user-{n}" for n in range(25)]
        assert all(len(json.loads(b)["events"]) <= 10 for b in receiver.bodies)
        assert len(receiver.bodies) >= 3
        for body, signature in zip(receiver.bodies, receiver.signatures, strict=True):
            expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            assert signature == expected == sign(SECRET, body)
        first = receiver.events()[0]
        assert first["name"] == "user_online" and len(first["id"]) == 24
        assert isinstance(json.loads(receiver.bodies[0])["time_ms"], int)


async def test_a_failing_backend_gets_the_same_events_again() -> None:
    # 500, then 503, then taken: the batch arrives three times with the same ids.
    async with (
        Receiver(lambda n: 500 if n == 0 else 503 if n == 1 else 200) as receiver,
        sender(receiver.url) as (hook, outcomes),
    ):
        hook.offer(user_event(1))
        hook.offer(user_event(2))
        await until(lambda: outcomes.get("sent", 0) == 2)
        assert receiver.requests == 3
        ids = [[e["id"] for e in json.loads(body)["events"]] for body in receiver.bodies]
        assert ids[0] == ids[1] == ids[2] and len(ids[0]) == 2
        assert "failed" not in outcomes


async def test_a_refusing_backend_is_not_retried() -> None:
    async with Receiver(lambda n: 400) as receiver, sender(receiver.url) as (hook, outcomes):
        hook.offer(user_event(1))
        await until(lambda: outcomes.get("failed", 0) == 1)
        await asyncio.sleep(0.3)
        assert receiver.requests == 1


async def test_a_hanging_backend_is_given_up_and_costs_only_the_bound() -> None:
    async with (
        Receiver(lambda n: None) as receiver,
        sender(receiver.url, timeout=0.2, retry_for=1.0, queue_size=100, batch_size=10) as (
            hook,
            outcomes,
        ),
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        for n in range(1000):
            hook.offer(user_event(n))  # never blocks, whatever the backend does
        assert loop.time() - started < 0.5
        assert hook.queued <= 100 + 10
        assert outcomes["dropped"] >= 1000 - 110
        await until(lambda: outcomes.get("failed", 0) >= 10, timeout=5)
        assert receiver.requests >= 2  # retried before giving up
        # The queue moves on: the next batch is tried after the first was given up.
        assert hook.queued < 110


class Recorder:
    """A plugin hearing events through the hooks, one sync and one async."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []

    @hookimpl
    def user_online(self, user: str) -> None:
        self.heard.append(("online", user))

    @hookimpl
    async def on_disconnect(self, client: str, code: int, reason: str) -> None:
        await asyncio.sleep(0)
        self.heard.append(("disconnect", f"{client}:{code}:{reason}"))


def events_app(tmp_path: Any, recorder: object, **settings: Any) -> Any:
    (tmp_path / "app").mkdir(exist_ok=True)
    return create_app(tmp_path / "app", plugins=[recorder], settings=settings)


async def test_emit_reaches_hooks_and_webhooks(tmp_path: Any) -> None:
    recorder = Recorder()
    async with Receiver() as receiver:
        app = events_app(tmp_path, recorder, webhook_url=receiver.url,
                         webhook_secret=SECRET.decode())  # fmt: skip
        async with app.test_app():
            events = get_events(get_host(app))
            events.emit("user_online", user="alice")
            events.emit("disconnect", client="c1", user="alice", protocol="centrifuge",
                        code=3000, reason="bye")  # fmt: skip
            await until(lambda: len(receiver.events()) == 2 and len(recorder.heard) == 2)
        names = [e["name"] for e in receiver.events()]
        assert names == ["user_online", "disconnect"]
        assert receiver.events()[1]["code"] == 3000
        assert recorder.heard == [("online", "alice"), ("disconnect", "c1:3000:bye")]


def test_webhooks_need_a_secret_and_a_real_url(tmp_path: Any) -> None:
    with pytest.raises(PluginError, match="webhook-secret"):
        events_app(tmp_path, Recorder(), webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(PluginError, match="http:// or https://"):
        events_app(tmp_path, Recorder(), webhook_url="ftp://x/", webhook_secret="s" * 16)


def test_unknown_events_and_fields_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown event"):
        Event.of("user_gone", user="x")
    with pytest.raises(ValueError, match="no field"):
        Event.of("user_online", channel="x")
    assert len(Event.of("user_online", user="x" * 10_000).fields["user"]) == 256
