"""The WebSocket plugin's public API: other plugins reach the pool only through this."""

from .pool import (
    CLOSE_GOING_AWAY,
    CLOSE_MISSED,
    CLOSE_OVERFLOW,
    Message,
    Pool,
    PoolClosed,
    PoolStats,
)
from .state import get_pool

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MISSED",
    "CLOSE_OVERFLOW",
    "Message",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "get_pool",
]
