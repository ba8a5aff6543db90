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
    """A token bucket of commands (GCRA: one virtual clock) and a count of bad tokens.

    Two floats and two ints a connection; no timer. ``rate`` 0 turns the command
    limit off; ``max_invalid_tokens`` 0 closes at the first invalid token.
    """

    __slots__ = ("_interval", "_invalid", "_max_invalid", "_tat", "_window")

    def __init__(
        self,
        rate: float = COMMAND_RATE,
        burst: int = COMMAND_BURST,
        max_invalid_tokens: int = MAX_INVALID_TOKENS,
    ) -> None:
        if rate < 0 or burst < 1 or max_invalid_tokens < 0:
            raise ValueError("command rate >= 0, burst >= 1, invalid tokens >= 0")
        self._interval = 1.0 / rate if rate else 0.0
        # Half a command of slack absorbs float rounding at exactly ``burst``.
        self._window = (burst + 0.5) * self._interval
        self._tat = 0.0
        self._invalid = 0
        self._max_invalid = max_invalid_tokens

    def spend(self, count: int, now: float | None = None) -> None:
        """Take ``count`` commands from the budget; DisconnectError (3013) when over."""
        if not self._interval:
            return
        if now is None:
            now = time.monotonic()
        tat = max(self._tat, now) + count * self._interval
        if tat > now + self._window:
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
