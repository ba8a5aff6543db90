"""The protocol-neutral core: connections, channels, and the fan-out engine over the broker.

Wire protocols (the raw ``/ws``, the Centrifuge protocol) are plugins over this API:
they accept a connection with :meth:`Hub.connect` (a WebSocket) or hand the hub a
:class:`Stream` of their own with :meth:`Hub.attach` (an SSE response, an HTTP stream,
in its :class:`Framing`), put it in channels with :meth:`Hub.join` in their own
:class:`Format`, reply with :meth:`Hub.send`, and publish through the broker
(``realtime_broker``). They never know each other.
"""

from . import httpstream as httpstream  # long HTTP responses on the fast path
from .census import Disconnect
from .channels import ChannelRules, HookAnswer, NamespaceOptions, parse_duration
from .closecode import CloseCode
from .connection import ASGIConnection, ConnectionGone, Handler, Receive, Send
from .engine import Client, Format, Held, Hub, HubClosed, HubStats
from .errors import Error
from .state import get_hub
from .stream import CHUNKED, EVENT_STREAM, WEBSOCKET, Framing, Stream, StreamTransport

#: The former names of these close codes, kept for importers (:class:`CloseCode` now).
CLOSE_GOING_AWAY = CloseCode.GOING_AWAY
CLOSE_MISSED = CloseCode.SERVICE_RESTART
CLOSE_OVERFLOW = CloseCode.POLICY_VIOLATION

__all__ = [
    "CHUNKED",
    "CLOSE_GOING_AWAY",
    "CLOSE_MISSED",
    "CLOSE_OVERFLOW",
    "EVENT_STREAM",
    "WEBSOCKET",
    "ASGIConnection",
    "ChannelRules",
    "Client",
    "CloseCode",
    "ConnectionGone",
    "Disconnect",
    "Error",
    "Format",
    "Framing",
    "Handler",
    "Held",
    "HookAnswer",
    "Hub",
    "HubClosed",
    "HubStats",
    "NamespaceOptions",
    "Receive",
    "Send",
    "Stream",
    "StreamTransport",
    "get_hub",
    "parse_duration",
]
