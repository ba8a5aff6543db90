"""The protocol-neutral core: connections, channels, and the fan-out engine over the broker.

Wire protocols (the raw ``/ws``, the Centrifuge protocol) are plugins over this API:
they accept a connection with :meth:`Hub.connect`, put it in channels with
:meth:`Hub.join` in their own :class:`Format`, reply with :meth:`Hub.send`, and
publish through the broker (``realtime_broker``). They never know each other.
"""

from .channels import ChannelRules, HookAnswer, NamespaceOptions, parse_duration
from .connection import ASGIConnection, ConnectionGone, Handler, Receive, Send
from .engine import (
    CLOSE_GOING_AWAY,
    CLOSE_MISSED,
    CLOSE_OVERFLOW,
    Client,
    Format,
    Held,
    Hub,
    HubClosed,
    HubStats,
)
from .errors import Error
from .state import get_hub

__all__ = [
    "CLOSE_GOING_AWAY",
    "CLOSE_MISSED",
    "CLOSE_OVERFLOW",
    "ASGIConnection",
    "ChannelRules",
    "Client",
    "ConnectionGone",
    "Error",
    "Format",
    "Handler",
    "Held",
    "HookAnswer",
    "Hub",
    "HubClosed",
    "HubStats",
    "NamespaceOptions",
    "Receive",
    "Send",
    "get_hub",
    "parse_duration",
]
