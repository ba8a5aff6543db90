"""Reply errors and close codes of the Centrifuge client protocol v2.

Codes, messages and the reconnect ranges are those of centrifugal/centrifuge
(``errors.go``, ``disconnect.go``, ``unsubscribe.go``): the client SDKs decide whether to
retry from them, so they are not ours to change.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import MappingProxyType

#: code -> (message, temporary) of the reply errors the protocol defines.
_STANDARD: MappingProxyType[int, tuple[str, bool]] = MappingProxyType(
    {
        100: ("internal server error", True),
        101: ("unauthorized", False),
        102: ("unknown channel", False),
        103: ("permission denied", False),
        104: ("method not found", False),
        105: ("already subscribed", False),
        106: ("limit exceeded", False),
        107: ("bad request", False),
        108: ("not available", False),
        109: ("token expired", False),
        110: ("expired", False),
        111: ("too many requests", True),
        112: ("unrecoverable position", False),
    }
)
#: A close frame holds 125 bytes, two of them the code.
MAX_REASON_BYTES = 123


class Error(Exception):
    """A reply error: the command failed, the connection stays open.

    ``Error(103)`` takes the protocol's message and ``temporary`` flag; application
    codes (400-1999) need a message. The ``ERROR_*`` constants are for returning and
    comparing: raise a fresh ``Error(code)`` so no shared instance carries a traceback.
    """

    def __init__(
        self, code: int, message: str | None = None, temporary: bool | None = None
    ) -> None:
        if isinstance(code, bool) or not isinstance(code, int) or not 0 < code < 2**32:
            raise ValueError(f"error code must be a uint32 above 0, not {code!r}")
        standard = _STANDARD.get(code)
        if message is None:
            if standard is None:
                raise ValueError(f"error code {code} is not a protocol code: give a message")
            message = standard[0]
        if not message:
            raise ValueError("an error needs a message: clients show it")
        if temporary is None:
            temporary = standard[1] if standard else False
        super().__init__(code, message, temporary)

    @property
    def code(self) -> int:
        """The number clients branch on."""
        code: int = self.args[0]
        return code

    @property
    def message(self) -> str:
        """Always sent: clients display it."""
        message: str = self.args[1]
        return message

    @property
    def temporary(self) -> bool:
        """Clients retry a temporary error with backoff."""
        temporary: bool = self.args[2]
        return temporary

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Error) and self.args == other.args

    def __hash__(self) -> int:
        return hash(self.args)


ERROR_INTERNAL = Error(100)
ERROR_UNAUTHORIZED = Error(101)
ERROR_UNKNOWN_CHANNEL = Error(102)
ERROR_PERMISSION_DENIED = Error(103)
ERROR_METHOD_NOT_FOUND = Error(104)
ERROR_ALREADY_SUBSCRIBED = Error(105)
ERROR_LIMIT_EXCEEDED = Error(106)
ERROR_BAD_REQUEST = Error(107)
ERROR_NOT_AVAILABLE = Error(108)
ERROR_TOKEN_EXPIRED = Error(109)
ERROR_EXPIRED = Error(110)
ERROR_TOO_MANY_REQUESTS = Error(111)
ERROR_UNRECOVERABLE_POSITION = Error(112)


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

    def __init__(self, disconnect: Disconnect, replies: Sequence[str] = ()) -> None:
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
