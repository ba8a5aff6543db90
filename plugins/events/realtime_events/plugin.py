"""The events plugin: its hooks, its settings, and :class:`Events`, which emits.

Whoever sees an event happen emits it once (``get_events(host).emit(...)``): the
protocol plugins for their clients, and for ``channel_vacated`` and ``user_offline``
whichever process the broker's store told. Emitting never blocks: hooks run in tasks
(at most MAX_HOOK_TASKS at once; past that an event's hooks are skipped and counted),
webhooks go to bounded queues.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from realtime import Host, LogThrottle, Option, hookimpl
from realtime.plugins import await_me_maybe
from realtime_broker import get_broker
from realtime_broker.plugin import PRESENCE_UPDATE_INTERVAL
from realtime_hub import get_hub

from . import hookspecs, script
from .model import EVENT_NAMES, Event
from .script import hook_name
from .sources import Sources
from .webhooks import WebhookOptions, WebhookSender

log = logging.getLogger("realtime.events")

#: Its sources are the hub's clients and the broker's tracker.
REQUIRES = ("hub", "broker")

EXTENSION_KEY = "realtime_events.events"
SCRIPT_KEY = EXTENSION_KEY + ".script"
#: Hook calls in flight at once; a backlog past it is a hook too slow for its events.
MAX_HOOK_TASKS = 1000

WEBHOOK_URL = Option(
    "webhook_url",
    "",
    "comma-separated http(s) URLs that get every event as signed JSON batches "
    "(docs/events.md; empty: no webhooks)",
)
WEBHOOK_SECRET = Option(
    "webhook_secret",
    "",
    "key of the HMAC-SHA256 signature of each webhook body (X-Realtime-Signature); "
    "required with --webhook-url, at least 16 characters",
    secret=True,
)
WEBHOOK_TIMEOUT = Option("webhook_timeout", 5.0, "seconds one webhook request may take", type=float)
WEBHOOK_QUEUE_SIZE = Option(
    "webhook_queue_size",
    10_000,
    "events waiting per webhook URL at most; past it the oldest are dropped (counted)",
    type=int,
)
WEBHOOK_BATCH_SIZE = Option(
    "webhook_batch_size", 100, "events in one webhook request at most", type=int
)
WEBHOOK_RETRY_FOR = Option(
    "webhook_retry_for",
    60.0,
    "seconds a failing webhook batch is retried (with backoff) before it is dropped",
    type=float,
)
EVENTS_SCRIPT = Option(
    "events_script",
    "",
    "a Python file whose functions named like the event hooks (user_offline, "
    "on_disconnect...) are called for each event (docs/events.md); keep it out of the "
    "app's public folder",
)
WEBHOOK_EVENTS = Option(
    "webhook_events",
    "",
    "comma-separated events the webhooks get (empty: all: " + ", ".join(EVENT_NAMES) + ")",
)
OPTIONS = (EVENTS_SCRIPT, WEBHOOK_URL, WEBHOOK_SECRET, WEBHOOK_EVENTS, WEBHOOK_TIMEOUT,
           WEBHOOK_QUEUE_SIZE, WEBHOOK_BATCH_SIZE, WEBHOOK_RETRY_FOR)  # fmt: skip


def webhook_events(value: str) -> frozenset[str]:
    """The events of ``--webhook-events``, checked; every event when empty."""
    names = frozenset(name.strip() for name in value.split(",") if name.strip())
    unknown = sorted(names - set(EVENT_NAMES))
    if unknown:
        raise ValueError(
            f"--webhook-events: unknown event(s) {', '.join(unknown)}: "
            f"choose from {', '.join(EVENT_NAMES)}"
        )
    return names or frozenset(EVENT_NAMES)


def webhook_urls(value: str) -> list[str]:
    """The URLs of ``--webhook-url``, checked (http or https, with a host)."""
    urls = [url.strip() for url in value.split(",") if url.strip()]
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--webhook-url {url!r} must be an http:// or https:// URL")
    return urls


class Events:
    """Emits events to hooks and webhooks: one per host."""

    def __init__(
        self,
        host: Host,
        senders: list[WebhookSender],
        webhook_events: frozenset[str] = frozenset(),
        handlers: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.host = host
        #: One per webhook URL, each getting ``webhook_events``.
        self.senders = senders
        self.webhook_events = webhook_events
        #: The events script's functions, by event.
        self.handlers = handlers or {}
        #: Events some plugin, or the events script, has a hook for.
        self.hooked = frozenset(
            name
            for name in EVENT_NAMES
            if name in self.handlers or getattr(self.host.hook, hook_name(name)).get_hookimpls()
        )
        #: Events anyone hears: nothing else is made, tracked or counted.
        self.wanted = self.hooked | self.webhook_events
        #: What emits (set by the plugin's startup).
        self.sources: Sources | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._throttle = LogThrottle()
        telemetry = host.telemetry
        self._events = telemetry.counter(
            "realtime_events_total", "Events emitted by this process", ("name",)
        )
        self._webhook = telemetry.counter(
            "realtime_webhook_events_total",
            "Webhook events by fate: sent, failed (given up after retries), dropped (queue full)",
            ("result",),
        )
        self._hooks_skipped = telemetry.counter(
            "realtime_event_hooks_skipped_total",
            "Events whose hooks were skipped (too many running)",
        )
        self._queued = telemetry.gauge("realtime_webhook_queued", "Webhook events waiting")
        self._duration = telemetry.histogram(
            "realtime_webhook_duration_seconds", "Webhook requests", ("ok",)
        )
        telemetry.sampler(self._sample)

    def _sample(self) -> None:
        self._queued.set(sum(sender.queued for sender in self.senders))

    def outcome(self, result: str, count: int) -> None:
        self._webhook.labels(result).inc(count)

    def timing(self, seconds: float, ok: bool) -> None:
        self._duration.labels("true" if ok else "false").observe(seconds)

    def emit(self, name: str, **fields: str | int | None) -> Event | None:
        """Emit one event: its hooks run in a task, webhooks queue it. Never blocks.

        ``None`` (nothing made) where no hook and no webhook wants ``name``.
        """
        if name not in self.wanted:
            if name not in EVENT_NAMES:
                raise ValueError(f"unknown event {name!r}")
            return None
        event = Event.of(name, **fields)
        self._events.labels(name).inc()
        if name in self.webhook_events:
            for sender in self.senders:
                sender.offer(event)
        if name in self.hooked:
            hook = getattr(self.host.hook, hook_name(name))
            if len(self._tasks) >= MAX_HOOK_TASKS:
                self._hooks_skipped.inc()
                self._throttle.warn(log, "busy", "event hooks are too slow: %s skipped", name)
            else:
                task = asyncio.get_running_loop().create_task(self._call(hook, event))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return event

    async def _call(self, hook: Any, event: Event) -> None:
        kwargs: dict[str, Any] = {"host": self.host, "event": event, **event.fields}
        for plugin, call in self.host.plugins.bound(hook.name, **kwargs):
            try:
                await await_me_maybe(call())
            except Exception:
                log.exception("plugin %r failed in %s", plugin, hook.name)
        handler = self.handlers.get(event.name)
        if handler is not None:
            try:
                offered = script.arguments(handler, kwargs)
                # It may block, as scripts do: in the script threads.
                await self.host.run_in_thread(lambda: handler(**offered))
            except Exception:
                log.exception("the events script failed in %s", hook.name)

    async def drain(self, grace: float) -> None:
        """Stopping: the hub closes its clients meanwhile; their releases go to the
        tracker (the last host's users go offline), then the webhooks are flushed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self.sources is not None:
            hub = self.sources.hub
            # The hub's own drain closes them meanwhile; it has no event to wait on.
            while len(hub) and loop.time() < deadline - grace / 2:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await self.sources.settle(max(0.0, deadline - loop.time()) / 2)
        left = max(0.1, deadline - loop.time())
        await asyncio.gather(*(sender.flush(left) for sender in self.senders))

    async def close(self) -> None:
        if self.sources is not None:
            await self.sources.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(*(sender.close() for sender in self.senders))


def get_events(host: Host) -> Events:
    """The host's :class:`Events` (the plugin has started)."""
    events = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(events, Events):
        raise RuntimeError("the events plugin is not running")
    return events


@hookimpl
def register_hookspecs() -> object:
    return hookspecs


@hookimpl
def register_options() -> list[Option[Any]]:
    return list(OPTIONS)


@hookimpl
def validate(host: Host) -> None:
    urls = webhook_urls(host.setting(WEBHOOK_URL))
    webhook_events(host.setting(WEBHOOK_EVENTS))
    if host.setting(EVENTS_SCRIPT):
        # Loaded once, here: its top-level code runs once, and a failure stops start-up.
        host.app.extensions[SCRIPT_KEY] = script.load(
            Path(host.setting(EVENTS_SCRIPT)), host.functions
        )
    if urls and len(host.setting(WEBHOOK_SECRET)) < 16:
        raise ValueError("--webhook-url needs --webhook-secret of at least 16 characters")
    for seconds in (WEBHOOK_TIMEOUT, WEBHOOK_RETRY_FOR):
        if host.setting(seconds) <= 0:
            raise ValueError(f"{seconds.flag} must be positive")
    for count in (WEBHOOK_QUEUE_SIZE, WEBHOOK_BATCH_SIZE):
        if host.setting(count) < 1:
            raise ValueError(f"{count.flag} must be at least 1")


@hookimpl
def startup(host: Host) -> None:
    options = WebhookOptions(
        secret=host.setting(WEBHOOK_SECRET).encode(),
        timeout=host.setting(WEBHOOK_TIMEOUT),
        queue_size=host.setting(WEBHOOK_QUEUE_SIZE),
        batch_size=host.setting(WEBHOOK_BATCH_SIZE),
        retry_for=host.setting(WEBHOOK_RETRY_FOR),
    )
    urls = webhook_urls(host.setting(WEBHOOK_URL))
    senders: list[WebhookSender] = []
    chosen = webhook_events(host.setting(WEBHOOK_EVENTS)) if urls else frozenset[str]()
    events = Events(host, senders, chosen, host.app.extensions.get(SCRIPT_KEY))
    if urls:
        # Never the environment's proxies: webhooks go where the operator said.
        client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
        host.app.extensions[EXTENSION_KEY + ".client"] = client
        for url in urls:
            sender = WebhookSender(url, options, client, outcome=events.outcome,
                                   timing=events.timing)  # fmt: skip
            sender.start()
            senders.append(sender)
        names = ", ".join(sorted(events.webhook_events))
        log.info("webhooks: %d URL(s), events %s", len(urls), names)
    if events.wanted:
        events.sources = Sources(events, get_hub(host), get_broker(host), host.telemetry)
        events.sources.start(sweep_every=host.setting(PRESENCE_UPDATE_INTERVAL))
    host.app.extensions[EXTENSION_KEY] = events


@hookimpl
async def drain(host: Host, grace: float) -> None:
    events = host.app.extensions.get(EXTENSION_KEY)
    if isinstance(events, Events):
        await events.drain(grace)


@hookimpl
async def shutdown(host: Host) -> None:
    events = host.app.extensions.pop(EXTENSION_KEY, None)
    if isinstance(events, Events):
        await events.close()
    client = host.app.extensions.pop(EXTENSION_KEY + ".client", None)
    if isinstance(client, httpx.AsyncClient):
        await client.aclose()
