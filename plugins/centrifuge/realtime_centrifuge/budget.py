"""What Centrifuge clients may cost: commands a second, invalid tokens, join storms.

The hub's incoming rate limit counts WebSocket frames, and a frame carries up to
``max_commands`` commands, so one connection published 91,904 messages in 10 s
within it (issue 18). :class:`CommandBudget` counts commands instead, with a token
bucket per connection (3013 "too many requests" past it, as Centrifugo's
``client.command_rate_limit`` does), and closes a connection whose tokens keep
failing (3500 "invalid token"): a signature check costs far more than the bytes
that ask for it.
"""

from __future__ import annotations

import time

from realtime.rate import Rate

from .codes import DISCONNECT_INVALID_TOKEN, DISCONNECT_TOO_MANY_REQUESTS, DisconnectError

#: Commands a second a connection may send, on average.
COMMAND_RATE = 100.0
#: Commands at once: above ``max_commands`` so that a frame of subscribes a client
#: batched at connect (centrifuge-js sends them together) always passes.
COMMAND_BURST = 300
#: Invalid subscription tokens a connection may present before it is closed with 3500
#: (an invalid connect or refresh token closes it at once).
MAX_INVALID_TOKENS = 3
#: Subscribers (getting joins and leaves) of one channel in one process above which
#: its joins and leaves are no longer pushed: a storm of joins costs at most this
#: squared over two pushes, about 125,000 small ones.
MAX_JOIN_LEAVE_SUBSCRIBERS = 500


class CommandBudget:
    """The project's one rate limiter (:class:`realtime.rate.Rate`) over commands, and
    a count of bad tokens.

    ``rate`` is best a :class:`Rate` the sessions share (``SessionOptions.command_limit``):
    a connection then keeps one float of clock and two ints, no timer. A number makes
    a Rate of its own with ``burst``. Rate 0 turns the command limit off;
    ``max_invalid_tokens`` 0 closes at the first invalid token.
    """

    __slots__ = ("_invalid", "_max_invalid", "_rate", "_tat")

    def __init__(
        self,
        rate: Rate | float = COMMAND_RATE,
        burst: int = COMMAND_BURST,
        max_invalid_tokens: int = MAX_INVALID_TOKENS,
    ) -> None:
        if max_invalid_tokens < 0:
            raise ValueError("invalid tokens >= 0")
        self._rate = rate if isinstance(rate, Rate) else Rate(rate, burst)
        self._tat = 0.0
        self._invalid = 0
        self._max_invalid = max_invalid_tokens

    def spend(self, count: int, now: float | None = None) -> None:
        """Take ``count`` commands from the budget; DisconnectError (3013) when over."""
        rate = self._rate
        if not rate.interval:
            return
        tat = rate.take(self._tat, time.monotonic() if now is None else now, count)
        if tat < 0:
            raise DisconnectError(DISCONNECT_TOO_MANY_REQUESTS)
        self._tat = tat

    def invalid_token(self) -> None:
        """One more invalid token; DisconnectError (3500) once past the allowance."""
        self._invalid += 1
        if self._invalid > self._max_invalid:
            raise DisconnectError(DISCONNECT_INVALID_TOKEN)


def join_leave_pushed(subscribers: int, limit: int) -> bool:
    """Whether a join or leave goes to a channel's ``subscribers`` that asked for them.

    Each join is pushed to every subscriber, so N clients joining at once cost N²/2
    pushes: 1,800 joining one room in a second stalled broadcasts for 3.2 s (issue 18).
    Above ``limit`` subscribers (0: no bound) the channel's joins and leaves are not
    pushed; presence calls still answer who is there, as Centrifugo advises for big
    channels.
    """
    return not limit or subscribers <= limit
