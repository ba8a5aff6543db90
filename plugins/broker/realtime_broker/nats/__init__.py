"""The NATS broker (``nats://``, ``nats+tls://``): see :mod:`.broker`; the wire in :mod:`.wire`."""

from .broker import HEARTBEAT, NODE_TTL, NatsBroker, parse_url
from .wire import HEADER, MAX_CHANNEL_BYTES, Subjects, channel_of, channel_token

__all__ = [
    "HEADER",
    "HEARTBEAT",
    "MAX_CHANNEL_BYTES",
    "NODE_TTL",
    "NatsBroker",
    "Subjects",
    "channel_of",
    "channel_token",
    "parse_url",
]
