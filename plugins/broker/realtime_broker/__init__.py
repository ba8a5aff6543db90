"""The broker plugin's public API: publish to every process's subscribers, or subscribe."""

from .base import (
    DEFAULT_CHANNEL,
    MAX_INFO_SIZE,
    Broker,
    BrokerUnavailable,
    ChannelCounter,
    Counter,
    Deliver,
    HistoryPolicy,
    HistoryResult,
    HistoryUnavailable,
    LossHandler,
    Publication,
    StreamPosition,
    UnrecoverablePosition,
)
from .memory import MemoryBroker
from .presence import (
    Member,
    PresenceEvent,
    PresenceHandler,
    PresenceMode,
    PresencePolicy,
    PresenceStats,
    PresenceUnavailable,
)
from .state import get_broker

__all__ = [
    "DEFAULT_CHANNEL",
    "MAX_INFO_SIZE",
    "Broker",
    "BrokerUnavailable",
    "ChannelCounter",
    "Counter",
    "Deliver",
    "HistoryPolicy",
    "HistoryResult",
    "HistoryUnavailable",
    "LossHandler",
    "Member",
    "MemoryBroker",
    "PresenceEvent",
    "PresenceHandler",
    "PresenceMode",
    "PresencePolicy",
    "PresenceStats",
    "PresenceUnavailable",
    "Publication",
    "StreamPosition",
    "UnrecoverablePosition",
    "get_broker",
]
