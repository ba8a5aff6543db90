"""Reply errors and close codes of the Centrifuge client protocol v2.

Reply errors (:class:`Error`, ``ERROR_*``) are Centrifugo's numbering; :data:`ERROR_OF`
numbers the hub's neutral :class:`~realtime_hub.errors.Refusal` reasons with them.
Import them from here: they are still defined in :mod:`realtime_hub.errors`, where
the hub's numbered compatibility methods need them, and re-exported. Codes, messages
and the reconnect ranges are those of centrifugal/centrifuge (``errors.go``,
``disconnect.go``, ``unsubscribe.go``): the client SDKs decide whether to retry from
them, so they are not ours to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from realtime_hub.errors import (
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_BAD_REQUEST,
    ERROR_EXPIRED,
    ERROR_INTERNAL,
    ERROR_LIMIT_EXCEEDED,
    ERROR_METHOD_NOT_FOUND,
    ERROR_NOT_AVAILABLE,
    ERROR_OF,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ERROR_TOO_MANY_REQUESTS,
    ERROR_UNAUTHORIZED,
    ERROR_UNKNOWN_CHANNEL,
    ERROR_UNRECOVERABLE_POSITION,
    Error,
    Refusal,
)

#: A close frame holds 125 bytes, two of them the code.
MAX_REASON_BYTES = 123

__all__ = [
    "ERROR_ALREADY_SUBSCRIBED",
    "ERROR_BAD_REQUEST",
    "ERROR_EXPIRED",
    "ERROR_INTERNAL",
    "ERROR_LIMIT_EXCEEDED",
    "ERROR_METHOD_NOT_FOUND",
    "ERROR_NOT_AVAILABLE",
    "ERROR_OF",
    "ERROR_PERMISSION_DENIED",
    "ERROR_TOKEN_EXPIRED",
    "ERROR_TOO_MANY_REQUESTS",
    "ERROR_UNAUTHORIZED",
    "ERROR_UNKNOWN_CHANNEL",
    "ERROR_UNRECOVERABLE_POSITION",
    "Error",
    "Refusal",
]


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why a connection is closed: sent as the WebSocket close frame's code and reason."""

    code: int
    reason: str

    def __post_init__(self) -> None:
        if isinstance(self.code, bool) or not 3000 <= self.code <= 4999:
            raise ValueError(f"close code must be in 3000-4999, not {self.code!r}")
        if len(self.reason.encode()) > MAX_REASON_BYTES:
            raise ValueError(f"close reason must fit {MAX_REASON_BYTES} bytes")

    @property
    def reconnect(self) -> bool:
        """What clients do: 3000-3499 and 4000-4499 reconnect, 3500-3999 and 4500+ stop."""
        return self.code % 1000 < 500


DISCONNECT_SHUTDOWN = Disconnect(3001, "shutdown")
DISCONNECT_SERVER_ERROR = Disconnect(3004, "internal server error")
DISCONNECT_CONNECTION_EXPIRED = Disconnect(3005, "connection expired")
DISCONNECT_SUBSCRIPTION_EXPIRED = Disconnect(3006, "subscription expired")
DISCONNECT_SLOW = Disconnect(3008, "slow")
DISCONNECT_WRITE_ERROR = Disconnect(3009, "write error")
DISCONNECT_INSUFFICIENT_STATE = Disconnect(3010, "insufficient state")
DISCONNECT_FORCE_RECONNECT = Disconnect(3011, "force reconnect")
DISCONNECT_NO_PONG = Disconnect(3012, "no pong")
DISCONNECT_TOO_MANY_REQUESTS = Disconnect(3013, "too many requests")
DISCONNECT_STATE_INVALIDATED = Disconnect(3014, "state invalidated")
DISCONNECT_INVALID_TOKEN = Disconnect(3500, "invalid token")
DISCONNECT_BAD_REQUEST = Disconnect(3501, "bad request")
DISCONNECT_STALE = Disconnect(3502, "stale")
DISCONNECT_FORCE_NO_RECONNECT = Disconnect(3503, "force disconnect")
DISCONNECT_CONNECTION_LIMIT = Disconnect(3504, "connection limit")
DISCONNECT_CHANNEL_LIMIT = Disconnect(3505, "channel limit")
DISCONNECT_INAPPROPRIATE_PROTOCOL = Disconnect(3506, "inappropriate protocol")
DISCONNECT_PERMISSION_DENIED = Disconnect(3507, "permission denied")
DISCONNECT_NOT_AVAILABLE = Disconnect(3508, "not available")
DISCONNECT_TOO_MANY_ERRORS = Disconnect(3509, "too many errors")


class DisconnectError(Exception):
    """The connection must be closed with ``disconnect`` once ``replies`` are sent."""

    def __init__(self, disconnect: Disconnect, replies: Sequence[str | bytes] = ()) -> None:
        super().__init__(disconnect, tuple(replies))

    @property
    def disconnect(self) -> Disconnect:
        """The close frame's code and reason."""
        disconnect: Disconnect = self.args[0]
        return disconnect

    @property
    def replies(self) -> tuple[str, ...]:
        """Reply lines of commands processed before the fatal one, to send first."""
        replies: tuple[str, ...] = self.args[1]
        return replies

    def __str__(self) -> str:
        return f"{self.disconnect.code}: {self.disconnect.reason}"


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """Code and reason of an ``unsubscribe`` push: the server ended one subscription."""

    code: int
    reason: str

    @property
    def resubscribe(self) -> bool:
        """Clients subscribe again for codes from 2500 on; below, the end is final."""
        return self.code >= 2500


UNSUBSCRIBE_SERVER = Unsubscribe(2000, "server unsubscribe")
UNSUBSCRIBE_INSUFFICIENT_STATE = Unsubscribe(2500, "insufficient state")
UNSUBSCRIBE_EXPIRED = Unsubscribe(2501, "subscription expired")
UNSUBSCRIBE_STATE_INVALIDATED = Unsubscribe(2502, "state invalidated")
