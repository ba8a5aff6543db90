"""The queue both store checks share: bounded, told only what the store vouches for."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from realtime_broker.checks import CHECK_BATCH, MAX_PENDING
from realtime_broker.redis.control import ControlCheck
from realtime_broker.redis.envelope import proof


async def test_past_the_bound_control_messages_are_dropped_and_counted() -> None:
    gate = asyncio.Event()
    told: list[bytes] = []
    dropped: list[str] = []

    async def lookup(idents: Sequence[bytes]) -> Sequence[object]:
        await gate.wait()  # the store is slow: everything after the first batch waits
        return [proof(b"body %s" % ident) for ident in idents]

    check = ControlCheck(lookup, told.append, lambda kind, why: dropped.append(kind))
    sent = MAX_PENDING + CHECK_BATCH + 10
    for n in range(sent):
        check.add((b"%d" % n, b"body %d" % n))
        if n == 0:
            await asyncio.sleep(0)  # the task takes its first batch of one
    assert dropped.count("control flood") == sent - 1 - MAX_PENDING
    gate.set()
    for _ in range(100):
        if len(told) == 1 + MAX_PENDING:
            break
        await asyncio.sleep(0.01)
    assert len(told) == 1 + MAX_PENDING
    assert told[:2] == [b"body 0", b"body 1"]  # in the order they came
    await check.close()


async def test_a_message_without_its_proof_is_not_told() -> None:
    told: list[bytes] = []
    dropped: list[str] = []

    async def lookup(idents: Sequence[bytes]) -> Sequence[object]:
        return [None for _ in idents]

    check = ControlCheck(lookup, told.append, lambda kind, why: dropped.append(kind))
    check.add((b"1", b"forged"))
    for _ in range(100):
        if dropped:
            break
        await asyncio.sleep(0.01)
    assert told == [] and dropped == ["control forged"]
    await check.close()
