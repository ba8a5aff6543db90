"""The protocol-neutral core: connections, channels, and the fan-out engine over the broker.

Wire protocols (the raw ``/ws``, the Centrifuge protocol) are plugins over this API:
they accept a connection with :meth:`Hub.connect`, put it in channels with
:meth:`Hub.join` in their own :class:`Format`, reply with :meth:`Hub.send`, and
publish through the broker (``realtime_broker``). They never know each other.
"""

from .connection import ASGIConnection, ConnectionGone, Receive, Send
from .engine import (
    CLOSE_GOING_AWAY,
    CLOSE_MISSED,
    CLOSE_OVERFLOW,
    Client,
    Format,
    Hub,
    HubClosed,
    HubStats,
)
from .state import get_hub

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MISSED",
    "CLOSE_OVERFLOW",
    "ASGIConnection",
    "Client",
    "ConnectionGone",
    "Format",
    "Hub",
    "HubClosed",
    "HubStats",
    "Receive",
    "Send",
    "get_hub",
]
