"""The broker plugin's public API: publish to every process's clients, or subscribe."""

from .base import DEFAULT_CHANNEL, Broker, BrokerUnavailable, Counter, Deliver, LossHandler
from .memory import MemoryBroker
from .state import get_broker

__all__ = [
    "DEFAULT_CHANNEL",
    "Broker",
    "BrokerUnavailable",
    "Counter",
    "Deliver",
    "LossHandler",
    "MemoryBroker",
    "get_broker",
]
