"""The broker's errors: failures of the broker itself, and answers about a channel.

A :class:`BrokerError` is the broker failing (out of reach, too slow): it derives from
the host's :class:`realtime.Unavailable`, so the host answers 503 without knowing the
broker, and a script's caller learns to retry. What a broker answers about a channel
it can reach (no history there, a position not in its stream, no presence there) is
not a failure: those stay plain :class:`realtime.HTTPError` with their own status.
"""

from __future__ import annotations

from realtime import HTTPError, Unavailable


class BrokerError(Unavailable):
    """The broker could not do what was asked (503): the base of the broker's failures."""


class BrokerUnavailable(BrokerError):
    """The broker could not take the message, or answer, in time: nothing was done."""


class HistoryUnavailable(HTTPError):
    """The channel keeps no history (or this broker keeps none)."""

    status = 404


class UnrecoverablePosition(HTTPError):
    """``since`` is not in the stream: another epoch, past its top, or trimmed away."""

    status = 409


class PresenceUnavailable(HTTPError):
    """The channel keeps no presence (or this broker keeps none)."""

    status = 404
