"""Refusals a channel decision or a command can end in, numbered as Centrifugo's.

Protocol-neutral: the Centrifuge client protocol and its server API share these
codes, and any wire protocol can map them to its own (the raw ``/ws`` answers 403).
Codes, messages and ``temporary`` flags are centrifugal/centrifuge's ``errors.go``:
client SDKs decide whether to retry from them, so they are not ours to change.
"""

from __future__ import annotations

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
