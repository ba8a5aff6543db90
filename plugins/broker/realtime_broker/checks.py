"""Messages heard on a distributed broker, told only once its store vouches for them.

Anyone allowed to PUBLISH on the broker's channels can send what looks like a
presence announcement or a control message; only a writer of keys can leave the
trace a genuine one leaves in the store. :class:`StoreCheck` is the queue both
checks share: what arrives waits (at most :data:`MAX_PENDING`, more are dropped,
counted: a flood), one task reads the store for up to :data:`CHECK_BATCH` of them in
one pipelined call, and the subclass judges each against what the store holds, in
the order they came. No check, no telling: the store out of reach drops the batch.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

#: Messages one read of the store checks at most...
CHECK_BATCH = 256
#: ...and most waiting for a check (more are dropped, counted: a flood).
MAX_PENDING = 16 * CHECK_BATCH

#: Told of each message dropped: (kind, why).
Dropped = Callable[[str, str], None]

Item = TypeVar("Item")
Key = TypeVar("Key")


class StoreCheck(Generic[Item, Key]):
    """One per broker and kind: a queue of ``Item``s heard and one task checking them.

    ``lookup`` reads the store for a batch of keys (:meth:`key` of each item), one
    value each, None where absent; :meth:`judge` tells or drops each item.
    """

    #: Names the kind in the dropped counts ("presence", "control").
    kind = "message"

    def __init__(
        self, lookup: Callable[[Sequence[Key]], Awaitable[Sequence[object]]], dropped: Dropped
    ) -> None:
        self._lookup = lookup
        self._dropped = dropped
        self._pending: deque[Item] = deque()
        self._task: asyncio.Task[None] | None = None

    def key(self, item: Item) -> Key:
        """What the store is asked about ``item``."""
        raise NotImplementedError

    def judge(self, batch: list[Item], values: Sequence[object]) -> None:
        """Tell or drop each item of ``batch``, given the store's ``values`` for them."""
        raise NotImplementedError

    def add(self, item: Item) -> None:
        if len(self._pending) >= MAX_PENDING:
            self._dropped(f"{self.kind} flood", "over the messages waiting for a check")
            return
        self._pending.append(item)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"{self.kind} check"
            )

    async def _run(self) -> None:
        while self._pending:
            count = min(CHECK_BATCH, len(self._pending))
            batch = [self._pending.popleft() for _ in range(count)]
            try:
                values = await self._lookup([self.key(item) for item in batch])
            except Exception as exc:  # the store out of reach: nothing unproven is told
                self._dropped(f"{self.kind} unchecked", f"not checked ({type(exc).__name__})")
                continue
            self.judge(batch, values)

    async def close(self) -> None:
        task, self._task = self._task, None
        self._pending.clear()
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
