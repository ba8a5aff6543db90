"""Helpers for tests that drive the Centrifuge SDKs against a real server.

- ``NodeClient``: centrifuge-js in Node (``tests/node/client.mjs``) as a subprocess,
  its events read as JSON lines with timeouts, commands written to its stdin.
- ``PyClient``: a centrifuge-python ``Client`` whose events land in queues.
- ``token_script``: a drop-in script minting tokens with the server's own natives.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import shutil
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
from centrifuge import (
    Client,
    ClientEventHandler,
    ConnectedContext,
    ConnectingContext,
    DisconnectedContext,
    ErrorContext,
    JoinContext,
    LeaveContext,
    PublicationContext,
    ServerPublicationContext,
    SubscribedContext,
    Subscription,
    SubscriptionErrorContext,
    SubscriptionEventHandler,
    UnsubscribedContext,
)

ROOT = Path(__file__).resolve().parent.parent
HARNESS = ROOT / "tests" / "node" / "client.mjs"

#: A drop-in script answering ``{"token": ...}``: ``?user=NAME`` for a connection
#: token (``&channels=NAME`` repeated: server-side subscriptions), plus
#: ``&channel=NAME`` for a subscription token; ``expire_in`` in seconds.
TOKEN_SCRIPT = textwrap.dedent(
    """\
    user = request.values.get("user", "")
    channel = request.values.get("channel")
    expire_in = float(request.values.get("expire_in", "3600"))
    if channel:
        token = subscription_token(user, channel, expire_in=expire_in)
    else:
        channels = request.values.getlist("channels")
        token = connection_token(user, expire_in=expire_in, channels=channels)
    response.json({"token": token})
    """
)


def token_script(app_dir: Path, name: str = "token.py") -> str:
    """Put the token script in ``app_dir``; returns its URL path."""
    (app_dir / name).write_text(TOKEN_SCRIPT)
    return f"/{name}"


def centrifuge_url(http_url: str) -> str:
    """``http://host:port`` -> ``ws://host:port/connection/websocket``."""
    return http_url.replace("http", "ws", 1) + "/connection/websocket"


def fetch_token(http_url: str, path: str = "/token.py", **params: Any) -> str:
    response = httpx.get(http_url + path, params=params, timeout=5)
    response.raise_for_status()
    token: str = response.json()["token"]
    return token


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise RuntimeError("node is not installed: run scripts/test (scripts/setup ... npm)")
    if not (ROOT / "node_modules" / "centrifuge").is_dir():
        raise RuntimeError("node_modules/centrifuge is missing: run scripts/setup '' npm")
    return node


Event = dict[str, Any]
T = TypeVar("T")


class NodeClient:
    """centrifuge-js in a Node subprocess; every event it prints is kept in ``events``."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: list[Event] = []
        self._consumed: set[int] = set()  # indices of events next() returned
        self._changed = asyncio.Condition()
        self._reader = asyncio.create_task(self._pump())
        self._ids = 0
        self.stderr = b""

    @classmethod
    async def start(cls, config: Mapping[str, Any]) -> NodeClient:
        process = await asyncio.create_subprocess_exec(
            node_executable(),
            str(HARNESS),
            json.dumps(config),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def _pump(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            event = json.loads(line)
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()
        async with self._changed:
            self.events.append({"event": "process_exit"})
            self._changed.notify_all()

    async def next(
        self, name: str, timeout: float = 10.0, where: Callable[[Event], bool] | None = None
    ) -> Event:
        """The first event ``name`` (matching ``where``) that next() did not return yet."""
        deadline = time.monotonic() + timeout

        def find() -> int | None:
            for index, event in enumerate(self.events):
                if index in self._consumed or event["event"] != name:
                    continue
                if where is None or where(event):
                    return index
            return None

        async with self._changed:
            while (index := find()) is None:
                remaining = deadline - time.monotonic()
                exited = self.events and self.events[-1]["event"] == "process_exit"
                if remaining <= 0 or exited:
                    raise AssertionError(
                        f"no {name!r} event from centrifuge-js within {timeout} s; "
                        f"events: {self.dump()}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)
        self._consumed.add(index)
        return self.events[index]

    def seen(self, name: str, where: Callable[[Event], bool] | None = None) -> list[Event]:
        """Every event ``name`` so far, consumed or not."""
        return [e for e in self.events if e["event"] == name and (where is None or where(e))]

    async def command(self, op: str, timeout: float = 10.0, **fields: Any) -> Event:
        """Send a command; returns its reply event (``ok``, ``result`` or ``error``)."""
        assert self.process.stdin is not None
        self._ids += 1
        number = self._ids
        self.process.stdin.write(json.dumps({"id": number, "op": op, **fields}).encode() + b"\n")
        await self.process.stdin.drain()
        deadline = time.monotonic() + timeout
        async with self._changed:
            while True:
                for event in self.events:
                    if event["event"] == "reply" and event["id"] == number:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no reply to {op!r} within {timeout} s: {self.dump()}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), remaining)

    def frames_out(self) -> list[list[Event]]:
        """Frames the client sent (with ``frames`` on), each as its list of commands."""
        return [
            [json.loads(part) for part in event["data"].split("\n") if part]
            for event in self.seen("frame_out")
        ]

    def dump(self) -> str:
        return "\n".join(json.dumps(e) for e in self.events[-40:]) + (
            "\nstderr: " + self.stderr.decode(errors="replace") if self.stderr else ""
        )

    async def close(self) -> None:
        if self.process.returncode is None:
            assert self.process.stdin is not None
            with contextlib.suppress(ConnectionError):
                self.process.stdin.close()
            try:
                await asyncio.wait_for(self.process.wait(), 5)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._reader, 5)
        if self.process.stderr is not None:
            self.stderr = await self.process.stderr.read()


@dataclass
class PyEvents:
    """What a centrifuge-python client and its subscriptions reported, in queues."""

    connected: asyncio.Queue[ConnectedContext] = field(default_factory=asyncio.Queue)
    connecting: asyncio.Queue[ConnectingContext] = field(default_factory=asyncio.Queue)
    disconnected: asyncio.Queue[DisconnectedContext] = field(default_factory=asyncio.Queue)
    errors: asyncio.Queue[ErrorContext] = field(default_factory=asyncio.Queue)
    server_publications: asyncio.Queue[ServerPublicationContext] = field(
        default_factory=asyncio.Queue
    )
    tokens_fetched: int = 0


class _ClientEvents(ClientEventHandler):
    def __init__(self, events: PyEvents) -> None:
        self.events = events

    async def on_connecting(self, ctx: ConnectingContext) -> None:
        self.events.connecting.put_nowait(ctx)

    async def on_connected(self, ctx: ConnectedContext) -> None:
        self.events.connected.put_nowait(ctx)

    async def on_disconnected(self, ctx: DisconnectedContext) -> None:
        self.events.disconnected.put_nowait(ctx)

    async def on_error(self, ctx: ErrorContext) -> None:
        self.events.errors.put_nowait(ctx)

    async def on_publication(self, ctx: ServerPublicationContext) -> None:
        self.events.server_publications.put_nowait(ctx)


@dataclass
class SubEvents(SubscriptionEventHandler):
    """A subscription's events in queues."""

    subscribed: asyncio.Queue[SubscribedContext] = field(default_factory=asyncio.Queue)
    unsubscribed: asyncio.Queue[UnsubscribedContext] = field(default_factory=asyncio.Queue)
    publications: asyncio.Queue[PublicationContext] = field(default_factory=asyncio.Queue)
    errors: asyncio.Queue[SubscriptionErrorContext] = field(default_factory=asyncio.Queue)
    joins: asyncio.Queue[JoinContext] = field(default_factory=asyncio.Queue)
    leaves: asyncio.Queue[LeaveContext] = field(default_factory=asyncio.Queue)

    async def on_join(self, ctx: JoinContext) -> None:
        self.joins.put_nowait(ctx)

    async def on_leave(self, ctx: LeaveContext) -> None:
        self.leaves.put_nowait(ctx)

    async def on_subscribed(self, ctx: SubscribedContext) -> None:
        self.subscribed.put_nowait(ctx)

    async def on_unsubscribed(self, ctx: UnsubscribedContext) -> None:
        self.unsubscribed.put_nowait(ctx)

    async def on_publication(self, ctx: PublicationContext) -> None:
        self.publications.put_nowait(ctx)

    async def on_error(self, ctx: SubscriptionErrorContext) -> None:
        self.errors.put_nowait(ctx)


class PyClient:
    """A centrifuge-python client with its events in queues; ``get_token`` optional."""

    def __init__(
        self,
        url: str,
        *,
        token: str = "",
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.events = PyEvents()
        getter = None
        if get_token is not None:
            inner = get_token

            async def counted() -> str:
                self.events.tokens_fetched += 1
                return await inner()

            getter = counted
        self.client = Client(
            url,
            events=_ClientEvents(self.events),
            token=token,
            get_token=getter,
            name="python-test",
            max_reconnect_delay=2.0,
        )
        self.subs: dict[str, tuple[Subscription, SubEvents]] = {}

    async def connect(self, timeout: float = 10.0) -> ConnectedContext:
        await self.client.connect()
        return await next_item(self.events.connected, timeout)

    def subscription(self, channel: str, token: str = "") -> tuple[Subscription, SubEvents]:
        events = SubEvents()
        sub = self.client.new_subscription(channel, events=events, token=token)
        self.subs[channel] = (sub, events)
        return sub, events

    async def subscribe(self, channel: str, token: str = "", timeout: float = 10.0) -> SubEvents:
        """Subscribe and wait for ``subscribed``."""
        sub, events = self.subscription(channel, token)
        await sub.subscribe()
        await next_item(events.subscribed, timeout)
        return events

    async def close(self) -> None:
        # disconnect() sends the close frame from a task it does not wait for; the
        # test's loop may end first and leave the socket to the garbage collector.
        # Wait for that connection (the SDK's own attribute) to finish closing.
        connection = getattr(self.client, "_conn", None)
        await self.client.disconnect()
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.wait_closed(), 5)
        # A connection the SDK gave up on mid-way (an exception in a handler) leaves
        # its socket to the garbage collector: collect now, so the ResourceWarning
        # lands on the test that caused it rather than a later one.
        gc.collect()


async def next_item(queue: asyncio.Queue[T], timeout: float = 10.0) -> T:
    """The next item of ``queue``, or an AssertionError after ``timeout`` seconds."""
    try:
        return await asyncio.wait_for(queue.get(), timeout)
    except TimeoutError:
        raise AssertionError(f"nothing arrived within {timeout} s") from None


def drain(queue: asyncio.Queue[T]) -> list[T]:
    """What is in ``queue`` now, without waiting."""
    items: list[T] = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items


def channel_config(namespaces: Iterable[Mapping[str, Any]] = (), **top: Any) -> str:
    """A realtime.toml ``[channel]`` section in Centrifugo v6's layout."""
    lines = ["[channel.without_namespace]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in top.items()]
    for namespace in namespaces:
        lines.append("[[channel.namespaces]]")
        lines += [f"{key} = {json.dumps(value)}" for key, value in namespace.items()]
    return "\n".join(lines) + "\n"
