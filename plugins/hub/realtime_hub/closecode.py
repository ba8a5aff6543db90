"""WebSocket close codes (RFC 6455 §7.4.1 and the IANA registry), one enum for all.

Every module that sends or checks an RFC close code names it here instead of keeping
its own constants, as the websockets library does: a member compares and packs as the
plain integer it is, so ``struct.pack("!H", CloseCode.NORMAL)`` and ``code == 1000``
keep working. Protocol plugins' own codes (Centrifuge's 3xxx/4xxx disconnects) stay
with those plugins.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """The registered close codes: 1000-1014 (1004 is reserved and has no name)."""

    #: The purpose of the connection is fulfilled.
    NORMAL = 1000
    #: The server is going down or the browser navigated away.
    GOING_AWAY = 1001
    #: The peer broke the protocol.
    PROTOCOL_ERROR = 1002
    #: A data type the endpoint does not accept (text vs binary).
    UNSUPPORTED_DATA = 1003
    #: A close frame without a code: reported, never sent.
    NO_STATUS = 1005
    #: The connection dropped without a close frame: reported, never sent.
    ABNORMAL = 1006
    #: A text message that is not UTF-8, or a close reason that is not.
    INVALID_DATA = 1007
    #: A message that breaks the endpoint's policy (e.g. too many frames a second).
    POLICY_VIOLATION = 1008
    #: A message over the endpoint's size limit.
    MESSAGE_TOO_BIG = 1009
    #: The client expected an extension the server did not negotiate.
    MANDATORY_EXTENSION = 1010
    #: The server hit an unexpected condition.
    INTERNAL_ERROR = 1011
    #: The server is restarting.
    SERVICE_RESTART = 1012
    #: The server is overloaded: try again later.
    TRY_AGAIN_LATER = 1013
    #: A gateway got an invalid response upstream.
    BAD_GATEWAY = 1014
