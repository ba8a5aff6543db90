"""What a broker is: the bus between ``broadcast()`` and every process's clients.

``broadcast()`` publishes to the broker; every process subscribed to it hands the
message to its own clients. All deliveries come back through the broker, the
publishing process's included, so every client sees the broker's one order.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from realtime import HTTPError

#: Called with a message on the subscribing process's loop; returns how many
#: clients it was queued for there.
Deliver = Callable[[str | bytes], int]
#: How many clients a subscriber holds in this process, for counts across processes.
Counter = Callable[[], int]
#: Told that this process missed ``missed`` messages on ``channel`` (a distributed
#: broker's subscription was down while others published).
LossHandler = Callable[[str, int], None]
#: The channel ``broadcast()`` publishes on and ``/ws`` clients listen to.
DEFAULT_CHANNEL = "default"
#: How long a script's thread waits for the loop to take its broadcast, seconds.
HANDOFF_TIMEOUT = 10.0


class BrokerUnavailable(HTTPError):
    """The broker could not take the message: nothing was delivered anywhere."""

    status = 503


class Broker(ABC):
    """One per process. Subclasses are found by URL scheme under ``realtime.brokers``."""

    #: False for brokers that only reach their own process (refused with --workers > 1).
    distributed: ClassVar[bool] = True

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        self.url = url
        self.settings = settings
        self.subscribers: dict[str, list[Deliver]] = {}
        self.counters: list[Counter] = []
        self.loss_handlers: list[LossHandler] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        #: Seconds a script's thread waits for the loop to take its broadcast.
        self.handoff_timeout = HANDOFF_TIMEOUT

    def subscribe(self, channel: str, deliver: Deliver, count: Counter | None = None) -> None:
        """Register ``deliver`` for ``channel``.

        Plugins subscribe in their ``startup`` hook; the broker plugin's own ``startup``
        runs after every other plugin's (``trylast``), so they are all known by then.
        """
        self.subscribers.setdefault(channel, []).append(deliver)
        if count is not None:
            self.counters.append(count)

    def on_loss(self, handler: LossHandler) -> None:
        """Be told when this process missed messages, so its clients can be told too."""
        self.loss_handlers.append(handler)

    def report_loss(self, channel: str, missed: int) -> None:
        for handler in self.loss_handlers:
            handler(channel, missed)

    def deliver_locally(self, channel: str, data: str | bytes) -> int:
        return sum(deliver(data) for deliver in self.subscribers.get(channel, ()))

    async def start(self) -> None:
        """Connect and subscribe, on the serving loop. Subclasses call this first."""
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()

    async def close(self) -> None:
        """Disconnect; must work even if :meth:`start` failed."""
        self.loop = None

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def publish_sync(self, channel: str, data: str | bytes) -> int:
        """:meth:`publish` for a script's worker thread: waits for the result."""
        loop = self.loop
        if loop is None:
            raise BrokerUnavailable("the broker is not running")
        if self.on_loop_thread():
            raise RuntimeError("on the event loop, use 'await broker.publish(...)'")
        future = asyncio.run_coroutine_threadsafe(self.publish(channel, data), loop)
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrokerUnavailable("the server did not take the message in time") from None

    @abstractmethod
    async def publish(self, channel: str, data: str | bytes) -> int:
        """Send ``data`` to every subscriber of ``channel``.

        Returns how many clients it was queued for (for distributed brokers, as last
        reported by each process). Raises :class:`BrokerUnavailable` within the
        broker's timeout when the message could not be handed over.
        """

    def problem(self) -> str | None:
        """Why this process should get no new clients (for ``/-/health``); ``None`` if none.

        A broker that reaches only its own process has nothing that can fail apart from it.
        """
        return None

    def describe(self) -> str:
        """The URL without credentials, for logs and errors."""
        scheme, _, rest = self.url.partition("://")
        return f"{scheme}://{rest.rpartition('@')[2]}"
