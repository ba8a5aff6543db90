"""What every distributed broker does the same way: background tasks that cannot end
unnoticed, and waiting for a subscription the bus has yet to confirm."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Mapping
from typing import Any

from .errors import BrokerUnavailable

log = logging.getLogger("realtime.broker")


def spawn(
    tasks: list[asyncio.Task[None]],
    coroutine: Coroutine[Any, Any, None],
    name: str,
    *,
    must_run: bool,
) -> asyncio.Task[None]:
    """Start a task, kept in ``tasks`` while it runs: an end by an exception is logged,
    and so, when it ``must_run`` (a loop meant to last), is an end without one."""
    task = asyncio.get_running_loop().create_task(coroutine, name=name)
    tasks.append(task)

    def ended(done: asyncio.Task[None]) -> None:
        if done in tasks:
            tasks.remove(done)
        if done.cancelled():
            return
        error = done.exception()
        if error is not None:
            log.critical("%s died", name, exc_info=error)
        elif must_run:
            log.critical("%s ended", name)

    task.add_done_callback(ended)
    return task


async def confirmed(
    ready: Mapping[str, asyncio.Event], channel: str, within: float, bus: str
) -> bool:
    """Wait until ``ready[channel]`` is set (the bus confirmed this process's
    subscription): :class:`BrokerUnavailable` past ``within`` seconds, ``ValueError`` when the
    channel is not subscribed here, or was unsubscribed meanwhile. True if it waited."""
    event = ready.get(channel)
    if event is None:
        raise ValueError(f"this process is not subscribed to channel {channel!r}")
    if not event.is_set():
        try:
            async with asyncio.timeout(within):
                await event.wait()
        except TimeoutError:
            raise BrokerUnavailable(
                f"{bus} did not confirm the subscription to {channel!r} in time"
            ) from None
        if ready.get(channel) is not event:
            raise ValueError(f"channel {channel!r} was unsubscribed meanwhile")
        return True
    return False
