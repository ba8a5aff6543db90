"""``broadcast()``, built only on the broker plugin's public API."""

from __future__ import annotations

from realtime import HTTPError, current_host
from realtime_broker import DEFAULT_CHANNEL, get_broker

SETTING = "max_message_size"


class MessageTooLarge(HTTPError, ValueError):
    """The message is over the configured limit; nothing was sent."""

    status = 413


def broadcast(message: str | bytes) -> int:
    """Send ``message`` to every connected client: ``str`` as a text frame, ``bytes`` as binary.

    Returns the number of clients it was queued for (across every process, with a
    distributed broker); never waits on a client. Raises ``BrokerUnavailable`` (503)
    when the broker cannot take it: then no client got it.
    """
    if isinstance(message, str):
        # ASCII is one byte a character (an O(1) check): no encoding just to measure.
        size = len(message) if message.isascii() else len(message.encode())
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
