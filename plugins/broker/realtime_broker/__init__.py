"""The broker plugin's public API: publish to every process's clients, or subscribe."""

from .base import DEFAULT_CHANNEL, Broker, BrokerUnavailable, Counter, Deliver
from .memory import MemoryBroker
from .state import get_broker

__all__ = [
    "DEFAULT_CHANNEL",
    "Broker",
    "BrokerUnavailable",
    "Counter",
    "Deliver",
    "MemoryBroker",
    "get_broker",
]
