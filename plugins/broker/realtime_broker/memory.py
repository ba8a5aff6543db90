"""The default broker: this process only, no extra hop."""

from __future__ import annotations

import concurrent.futures

from .base import HANDOFF_TIMEOUT, Broker, BrokerUnavailable


class MemoryBroker(Broker):
    """Delivers on the loop, synchronously: no task and no extra hop per broadcast."""

    distributed = False

    async def publish(self, channel: str, data: str | bytes) -> int:
        return self.deliver_locally(channel, data)

    def publish_sync(self, channel: str, data: str | bytes) -> int:
        """From a worker thread: hand over to the loop in FIFO order, wait for the count."""
        loop = self.loop
        if loop is None:
            raise BrokerUnavailable("the broker is not running")
        if self.on_loop_thread():
            return self.deliver_locally(channel, data)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()

        def handoff() -> None:
            try:
                future.set_result(self.deliver_locally(channel, data))
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(handoff)
        except RuntimeError:
            raise BrokerUnavailable("the broker is not running") from None
        return future.result(timeout=HANDOFF_TIMEOUT)
