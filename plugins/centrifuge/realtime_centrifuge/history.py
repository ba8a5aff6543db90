"""The broker's channel history and presence, as the Centrifuge protocol and its server
API ask for them: the broker's failures as the protocol's errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from realtime_broker import (
    Broker,
    BrokerUnavailable,
    HistoryResult,
    HistoryUnavailable,
    Member,
    PresenceStats,
    PresenceUnavailable,
    StreamPosition,
    UnrecoverablePosition,
)

from .codes import ERROR_INTERNAL, ERROR_NOT_AVAILABLE, ERROR_UNRECOVERABLE_POSITION, Error


@contextmanager
def _as_protocol_errors() -> Iterator[None]:
    """108 where the channel keeps none, 112 for a position not in the stream, 100
    (temporary: clients retry) when the broker cannot be reached."""
    try:
        yield
    except (HistoryUnavailable, PresenceUnavailable):
        raise Error(ERROR_NOT_AVAILABLE.code) from None
    except UnrecoverablePosition:
        raise Error(ERROR_UNRECOVERABLE_POSITION.code) from None
    except BrokerUnavailable:
        raise Error(ERROR_INTERNAL.code) from None


async def read_history(
    broker: Broker,
    channel: str,
    *,
    limit: int,
    since: tuple[int, str] | None = None,
    reverse: bool = False,
) -> HistoryResult:
    with _as_protocol_errors():
        return await broker.history(
            channel,
            limit=limit,
            since=None if since is None else StreamPosition(*since),
            reverse=reverse,
        )


async def remove_history(broker: Broker, channel: str) -> None:
    with _as_protocol_errors():
        await broker.remove_history(channel)


async def read_presence(broker: Broker, channel: str) -> dict[str, Member]:
    with _as_protocol_errors():
        return await broker.presence(channel)


async def read_presence_stats(broker: Broker, channel: str) -> PresenceStats:
    with _as_protocol_errors():
        return await broker.presence_stats(channel)
