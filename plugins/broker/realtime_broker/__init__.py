"""The broker plugin's public API: publish to every process's subscribers, or subscribe."""

from .base import (
    DEFAULT_CHANNEL,
    EMPTY_EPOCH,
    MAX_CONTROL_SIZE,
    MAX_INFO_SIZE,
    Broker,
    ChannelCounter,
    ControlHandler,
    Counter,
    Deliver,
    HistoryPolicy,
    HistoryResult,
    LossHandler,
    Publication,
    StreamPosition,
)
from .errors import (
    BrokerError,
    BrokerUnavailable,
    HistoryUnavailable,
    PresenceUnavailable,
    UnrecoverablePosition,
)
from .memory import MemoryBroker
from .presence import (
    Member,
    PresenceEvent,
    PresenceHandler,
    PresenceManager,
    PresenceMode,
    PresencePolicy,
    PresenceStats,
)
from .results import IDEMPOTENCY_TTL, MAX_IDEMPOTENCY_KEY, PublishResult
from .state import get_broker

__all__ = [
    "DEFAULT_CHANNEL",
    "EMPTY_EPOCH",
    "IDEMPOTENCY_TTL",
    "MAX_CONTROL_SIZE",
    "MAX_IDEMPOTENCY_KEY",
    "MAX_INFO_SIZE",
    "Broker",
    "BrokerError",
    "BrokerUnavailable",
    "ChannelCounter",
    "ControlHandler",
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
    "PresenceManager",
    "PresenceMode",
    "PresencePolicy",
    "PresenceStats",
    "PresenceUnavailable",
    "Publication",
    "PublishResult",
    "StreamPosition",
    "UnrecoverablePosition",
    "get_broker",
]
