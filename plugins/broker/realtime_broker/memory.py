"""The default broker: this process only, no extra hop."""

from __future__ import annotations

import concurrent.futures

from .base import Broker, BrokerUnavailable, Publication, as_publication


class MemoryBroker(Broker):
    """Delivers on the loop, synchronously: no task and no extra hop per broadcast.

    Subscribing takes effect at once (:meth:`ready` returns at once); publications
    carry no numbering (``epoch`` ``""``, ``offset`` 0) and nothing can be missed.
    """

    distributed = False

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        return self.deliver_locally(channel, as_publication(data))

    def publish_sync(self, channel: str, data: str | bytes | Publication) -> int:
        """From a worker thread: hand over to the loop in FIFO order, wait for the count.

        A loop too busy to take it within ``handoff_timeout`` is the broker being
        unavailable (503, like the other brokers), not the script being slow; the
        hand-off is then withdrawn, so nothing is delivered after the caller was told so.
        """
        loop = self.loop
        if loop is None:
            raise BrokerUnavailable("the broker is not running")
        publication = as_publication(data)
        if self.on_loop_thread():
            return self.deliver_locally(channel, publication)
        future: concurrent.futures.Future[int] = concurrent.futures.Future()

        def handoff() -> None:
            if not future.set_running_or_notify_cancel():
                return  # the script gave up waiting and was told nothing was sent
            try:
                future.set_result(self.deliver_locally(channel, publication))
            except BaseException as exc:
                future.set_exception(exc)

        try:
            loop.call_soon_threadsafe(handoff)
        except RuntimeError:
            raise BrokerUnavailable("the broker is not running") from None
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():
                raise BrokerUnavailable(
                    "the server did not take the message in time; message not sent"
                ) from None
        # The loop took it just now: delivery runs without awaiting anything.
        try:
            return future.result(timeout=self.handoff_timeout)
        except concurrent.futures.TimeoutError:
            raise BrokerUnavailable("the server did not finish delivering in time") from None
