"""Webhooks: events POSTed in signed JSON batches, one sender per URL, all bounded.

A sender holds at most ``queue_size`` events. While its backend is slow or down, new
events wait there; past the bound the oldest are dropped and counted, so a dead
backend costs memory up to the bound and nothing else: :meth:`WebhookSender.offer`
never blocks and never fails, and one request at a time is in flight per URL.

A batch that fails (a connection error, a timeout, 408, 429 or 5xx) is retried with
exponential backoff (honouring a short ``Retry-After``) until ``retry_for`` seconds
have passed since its first try; then it is dropped, counted and logged. Any other
4xx is the backend refusing the batch: dropped at once, not retried. Retried events
keep their ids, so a backend that answered too slowly the first time can deduplicate.

The body is Pusher's webhook shape, ``{"time_ms": ..., "events": [...]}``; the header
``X-Realtime-Signature: sha256=<hex>`` is the HMAC-SHA256 of the body under the
webhook secret (docs/events.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from realtime import LogThrottle

from .model import Event

log = logging.getLogger("realtime.webhooks")

SIGNATURE_HEADER = "X-Realtime-Signature"
#: Statuses worth trying again: the backend may answer later.
RETRIED_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
#: Backoff between tries of one batch: FIRST_BACKOFF doubling, at most MAX_BACKOFF.
FIRST_BACKOFF = 0.5
MAX_BACKOFF = 10.0
#: How long a sender waits for more events before posting a batch that is not full.
LINGER = 0.05


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """How every sender behaves (the plugin's ``webhook_*`` settings)."""

    secret: bytes
    timeout: float = 5.0
    queue_size: int = 10_000
    batch_size: int = 100
    retry_for: float = 60.0


#: Told of each event's fate: ``"sent"``, ``"failed"`` (given up) or ``"dropped"``
#: (the queue was full), with how many events.
Outcome = Callable[[str, int], None]
#: Told how long each request took, and whether it succeeded.
Timing = Callable[[float, bool], None]


class WebhookSender:
    """Delivers events to one URL, in order, in batches, one request at a time."""

    def __init__(
        self,
        url: str,
        options: WebhookOptions,
        client: httpx.AsyncClient,
        *,
        outcome: Outcome = lambda result, count: None,
        timing: Timing = lambda seconds, ok: None,
    ) -> None:
        self.url = url
        self.options = options
        self._client = client
        self._outcome = outcome
        self._timing = timing
        self._queue: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._throttle = LogThrottle()
        self._task: asyncio.Task[None] | None = None
        #: Events in the batch being sent (for :attr:`queued`).
        self._sending = 0

    def __repr__(self) -> str:
        return f"<WebhookSender {self.url}>"  # the secret never shows

    @property
    def queued(self) -> int:
        """Events waiting or being sent."""
        return len(self._queue) + self._sending

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=repr(self))

    def offer(self, event: Event) -> None:
        """Queue ``event``; past the bound the oldest waiting one is dropped (counted)."""
        if len(self._queue) >= self.options.queue_size:
            self._queue.popleft()
            self._outcome("dropped", 1)
            self._warn("full", "webhook %s: queue full (%d events), dropping the oldest",
                       self.url, self.options.queue_size)  # fmt: skip
        self._queue.append(event)
        self._idle.clear()
        self._wake.set()

    async def flush(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for what is queued to be sent (stopping)."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
        except TimeoutError:
            if self.queued:
                log.warning("webhook %s: %d event(s) not sent before stopping",
                            self.url, self.queued)  # fmt: skip

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _run(self) -> None:
        while True:
            if not self._queue:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            if len(self._queue) < self.options.batch_size:
                await asyncio.sleep(LINGER)  # let a burst fill the batch
            count = min(len(self._queue), self.options.batch_size)
            batch = [self._queue.popleft() for _ in range(count)]
            self._sending = count
            try:
                await self._deliver(batch)
            finally:
                self._sending = 0

    async def _deliver(self, batch: list[Event]) -> None:
        """Post ``batch`` until it is taken, refused, or ``retry_for`` has passed."""
        body = json.dumps(
            {"time_ms": time.time_ns() // 1_000_000, "events": [e.as_json() for e in batch]},
            separators=(",", ":"),
        ).encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.options.secret, body),
            "User-Agent": "realtime-webhooks",
        }
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.options.retry_for
        backoff = FIRST_BACKOFF
        while True:
            why, wait = await self._post(body, headers)
            if why is None:
                self._outcome("sent", len(batch))
                return
            if wait is None or loop.time() + backoff > give_up:
                self._outcome("failed", len(batch))
                self._warn("gave-up", "webhook %s: %d event(s) not delivered: %s",
                           self.url, len(batch), why)  # fmt: skip
                return
            self._warn("retry", "webhook %s: %s; trying again", self.url, why)
            pause = min(max(wait, backoff), MAX_BACKOFF, max(0.0, give_up - loop.time()))
            await asyncio.sleep(pause * random.uniform(0.8, 1.0))
            backoff = min(backoff * 2, MAX_BACKOFF)

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[str | None, float | None]:
        """One try: ``(None, None)`` on success, else why, and how soon to retry
        (``None``: never)."""
        started = time.perf_counter()
        try:
            # Streamed and closed unread: the backend's answer body, of any size, is
            # never read into memory; only its status and headers count.
            async with self._client.stream(
                "POST", self.url, content=body, headers=headers, timeout=self.options.timeout
            ) as response:
                pass
        except httpx.HTTPError as exc:
            self._timing(time.perf_counter() - started, False)
            return f"{type(exc).__name__}: {exc}"[:200], 0.0
        ok = 200 <= response.status_code < 300
        self._timing(time.perf_counter() - started, ok)
        if ok:
            return None, None
        why = f"the backend answered {response.status_code}"
        if response.status_code not in RETRIED_STATUSES:
            return why, None
        return why, _retry_after(response.headers.get("Retry-After"))

    def _warn(self, key: str, message: str, *args: object) -> None:
        self._throttle.warn(log, key, message, *args)


def _retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` asks for (its number form), capped at MAX_BACKOFF."""
    try:
        seconds = float(value or 0)
    except ValueError:
        return 0.0
    return min(max(seconds, 0.0), MAX_BACKOFF) if math.isfinite(seconds) else 0.0
