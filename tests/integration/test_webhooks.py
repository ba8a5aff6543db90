"""Webhooks against a real HTTP receiver on loopback: batches, signatures, retries, bounds."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from realtime import create_app, get_host, hookimpl
from realtime.errors import PluginError
from realtime_events import get_events
from realtime_events.model import Event
from realtime_events.webhooks import WebhookOptions, WebhookSender, sign

from ..receiver import SECRET, Receiver


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


async def test_a_backend_s_answer_body_is_never_read_into_memory() -> None:
    # 256 MiB of answer: the sender takes the status and hangs up, reading none of it.
    size = 256 * 1024 * 1024
    async with (
        Receiver(body_size=size) as receiver,
        sender(receiver.url) as (hook, outcomes),
    ):
        hook.offer(user_event(1))
        await until(lambda: outcomes.get("sent", 0) == 1, timeout=10)
        await asyncio.sleep(0.5)
        assert receiver.body_written < size // 8


def test_a_retry_after_is_bounded_whatever_it_says() -> None:
    from realtime_events.webhooks import MAX_BACKOFF, _retry_after

    assert [_retry_after(v) for v in ("2", "-5", "1e9", "nan", "inf", "soon", None)] == [
        2.0, 0.0, MAX_BACKOFF, 0.0, 0.0, 0.0, 0.0,
    ]  # fmt: skip
