"""The broker's channel history and presence, as the Centrifuge protocol and its server
API ask for them: the broker's failures as the protocol's errors."""

from __future__ import annotations

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


async def read_history(
    broker: Broker,
    channel: str,
    *,
    limit: int,
    since: tuple[int, str] | None = None,
    reverse: bool = False,
) -> HistoryResult:
    """``broker.history`` with its failures as the protocol's errors (108, 112, 100)."""
    try:
        return await broker.history(
            channel,
            limit=limit,
            since=None if since is None else StreamPosition(*since),
            reverse=reverse,
        )
    except HistoryUnavailable:
        raise Error(ERROR_NOT_AVAILABLE.code) from None
    except UnrecoverablePosition:
        raise Error(ERROR_UNRECOVERABLE_POSITION.code) from None
    except BrokerUnavailable:
        raise Error(ERROR_INTERNAL.code) from None  # temporary: clients retry


async def remove_history(broker: Broker, channel: str) -> None:
    try:
        await broker.remove_history(channel)
    except HistoryUnavailable:
        raise Error(ERROR_NOT_AVAILABLE.code) from None
    except BrokerUnavailable:
        raise Error(ERROR_INTERNAL.code) from None


async def read_presence(broker: Broker, channel: str) -> dict[str, Member]:
    try:
        return await broker.presence(channel)
    except PresenceUnavailable:
        raise Error(ERROR_NOT_AVAILABLE.code) from None
    except BrokerUnavailable:
        raise Error(ERROR_INTERNAL.code) from None


async def read_presence_stats(broker: Broker, channel: str) -> PresenceStats:
    try:
        return await broker.presence_stats(channel)
    except PresenceUnavailable:
        raise Error(ERROR_NOT_AVAILABLE.code) from None
    except BrokerUnavailable:
        raise Error(ERROR_INTERNAL.code) from None
