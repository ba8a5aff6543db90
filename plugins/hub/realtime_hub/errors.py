"""Why a channel decision or a command is refused: neutral reasons, and Centrifugo's numbers.

:class:`Refusal` is the hub's own vocabulary: a :class:`~realtime_hub.policy.ChannelPolicy`
answers with it, and each wire protocol says it its own way (the raw ``/ws`` answers
403, the Centrifuge protocol a numbered reply error).

:class:`Error` and the ``ERROR_*`` constants are the Centrifuge protocol's numbering
(centrifugal/centrifuge's ``errors.go``: codes, messages and ``temporary`` flags the
client SDKs decide whether to retry from, so they are not ours to change). Their home
is :mod:`realtime_centrifuge.codes`, which re-exports them and maps each
:class:`Refusal` to its number; they are defined here while callers still reach them
through the hub (``realtime_hub.Error``, :class:`~realtime_hub.channels.ChannelRules`'
numbered methods and the hooks' answers, which may carry an application's own code).
"""

from __future__ import annotations

import enum
from types import MappingProxyType


class Refusal(enum.Enum):
    """Why something is refused, in no protocol's numbering; the value is its message.

    The channel policy answers the first three; the others are what a command can
    end in, so that a protocol maps them all in one table.
    """

    #: The channel's namespace is not configured.
    UNKNOWN_CHANNEL = "unknown channel"
    #: The client may not do this here.
    PERMISSION_DENIED = "permission denied"
    #: The request (a channel name, say) is malformed.
    BAD_REQUEST = "bad request"
    INTERNAL = "internal server error"
    UNAUTHORIZED = "unauthorized"
    METHOD_NOT_FOUND = "method not found"
    ALREADY_SUBSCRIBED = "already subscribed"
    LIMIT_EXCEEDED = "limit exceeded"
    NOT_AVAILABLE = "not available"
    TOKEN_EXPIRED = "token expired"
    EXPIRED = "expired"
    TOO_MANY_REQUESTS = "too many requests"
    UNRECOVERABLE_POSITION = "unrecoverable position"

    @property
    def message(self) -> str:
        """What a client is shown."""
        message: str = self.value
        return message


#: code -> (message, temporary) of the reply errors the Centrifuge protocol defines.
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


class Error(Exception):
    """A Centrifuge reply error: the command failed, the connection stays open.

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

#: The Centrifuge protocol's reply error for each neutral reason.
ERROR_OF: MappingProxyType[Refusal, Error] = MappingProxyType(
    {
        Refusal.INTERNAL: ERROR_INTERNAL,
        Refusal.UNAUTHORIZED: ERROR_UNAUTHORIZED,
        Refusal.UNKNOWN_CHANNEL: ERROR_UNKNOWN_CHANNEL,
        Refusal.PERMISSION_DENIED: ERROR_PERMISSION_DENIED,
        Refusal.METHOD_NOT_FOUND: ERROR_METHOD_NOT_FOUND,
        Refusal.ALREADY_SUBSCRIBED: ERROR_ALREADY_SUBSCRIBED,
        Refusal.LIMIT_EXCEEDED: ERROR_LIMIT_EXCEEDED,
        Refusal.BAD_REQUEST: ERROR_BAD_REQUEST,
        Refusal.NOT_AVAILABLE: ERROR_NOT_AVAILABLE,
        Refusal.TOKEN_EXPIRED: ERROR_TOKEN_EXPIRED,
        Refusal.EXPIRED: ERROR_EXPIRED,
        Refusal.TOO_MANY_REQUESTS: ERROR_TOO_MANY_REQUESTS,
        Refusal.UNRECOVERABLE_POSITION: ERROR_UNRECOVERABLE_POSITION,
    }
)
