"""``broadcast()``, built only on the broker plugin's public API."""

from __future__ import annotations

from realtime import HTTPError, current_host
from realtime_broker import DEFAULT_CHANNEL, get_broker

SETTING = "max_message_size"


class MessageTooLarge(HTTPError, ValueError):
    """The message is over the configured limit; nothing was sent."""

    status = 413


class MessageNotText(HTTPError, ValueError):
    """A ``str`` that is not text (a lone surrogate, say from JSON's "\\ud800"); nothing was sent.

    The client's mistake, so a 400; a message of the wrong type stays a ``TypeError``,
    which is the script's.
    """

    status = 400


def broadcast(message: str | bytes) -> int:
    """Send ``message`` to every connected client: ``str`` as a text frame, ``bytes`` as binary.

    Returns the number of clients it was queued for (across every process, with a
    distributed broker); never waits on a client. Raises ``MessageTooLarge`` (413) over
    ``max_message_size``, ``MessageNotText`` (400) for a lone surrogate, ``TypeError``
    for anything but ``str`` or ``bytes``, and ``BrokerUnavailable`` (503) when the
    broker cannot take it: in every case, no client got it.
    """
    if isinstance(message, str):
        # ASCII is one byte a character (an O(1) check): no encoding just to measure.
        try:
            size = len(message) if message.isascii() else len(message.encode())
        except UnicodeEncodeError as exc:
            raise MessageNotText(
                f"message is not valid text (a lone surrogate at character {exc.start}); not sent"
            ) from None
    elif isinstance(message, bytes | bytearray | memoryview):
        message = bytes(message)
        size = len(message)
    else:
        raise TypeError(f"broadcast() takes str or bytes, got {type(message).__name__}")
    host = current_host()
    limit: int = host.settings[SETTING]
    if size > limit:
        raise MessageTooLarge(f"message is {size} bytes, over the {limit}-byte limit; not sent")
    return get_broker(host).publish_sync(DEFAULT_CHANNEL, message)
