"""``broadcast()``, ``history()``, ``presence()`` and ``presence_stats()``, built only on
the broker plugin's public API."""

from __future__ import annotations

import json
from typing import Any

from realtime import HTTPError, Instrument, current_host
from realtime_broker import (
    DEFAULT_CHANNEL,
    HistoryResult,
    Member,
    Publication,
    StreamPosition,
    get_broker,
)
from realtime_broker.plugin import MAX_MESSAGE_SIZE

#: Where the plugin's startup keeps the host's ``realtime_publications_total{source="script"}``.
PUBLICATIONS_KEY = "realtime_broadcast.publications"
#: The limit's name; the broker plugin declares it (``MAX_MESSAGE_SIZE``).
SETTING = MAX_MESSAGE_SIZE.name


class MessageTooLarge(HTTPError, ValueError):
    """The message is over the configured limit; nothing was sent."""

    status = 413


class MessageNotText(HTTPError, ValueError):
    """A ``str`` that is not text (a lone surrogate, say from JSON's "\\ud800"); nothing was sent.

    The client's mistake, so a 400; a message of the wrong type stays a ``TypeError``,
    which is the script's.
    """

    status = 400


#: What ``broadcast()`` takes besides ``str`` and ``bytes``: JSON values, sent as JSON text.
JSONValue = dict[str, Any] | list[Any] | int | float | bool
#: Longest channel name, in bytes, as in the Centrifuge protocol.
MAX_CHANNEL_LENGTH = 255
#: Longest event name, characters (Pusher's limit).
MAX_EVENT_NAME = 200


class InvalidChannel(HTTPError, ValueError):
    """The channel name is empty, too long or not text; nothing was sent."""

    status = 400


class Broadcast(int):
    """What ``broadcast()`` returns: the number of clients it was queued for (an int,
    as it always was), with where the publication stands in the channel's stream:
    ``offset`` and ``epoch`` where the channel keeps history, else 0 and ``""``."""

    offset: int
    epoch: str

    def __new__(cls, queued: int, offset: int = 0, epoch: str = "") -> Broadcast:
        result = super().__new__(cls, queued)
        result.offset, result.epoch = offset, epoch
        return result


def broadcast(
    message: str | bytes | JSONValue, channel: str = DEFAULT_CHANNEL, *, event: str | None = None
) -> Broadcast:
    """Send ``message`` to every client in ``channel`` (``default``: what ``/ws`` listens to).

    ``str`` goes as text and ``bytes`` as binary, exactly as given; a JSON value (dict,
    list, number, bool) as its JSON text, which JSON protocols embed as a value.
    Returns the number of clients it was queued for (across every process, with a
    distributed broker), a :class:`Broadcast` whose ``offset`` and ``epoch`` say where
    it stands in a channel that keeps history; never waits on a client. ``event`` names
    the message for protocols that name theirs (Pusher's event name, Mercure's
    ``type``); others ignore it. Raises
    ``MessageTooLarge`` (413) over
    ``max_message_size``, ``MessageNotText`` (400) for a lone surrogate,
    ``InvalidChannel`` (400) for a bad channel name, ``TypeError`` for anything else,
    and ``BrokerUnavailable`` (503) when the broker cannot take it: in every case, no
    client got it.
    """
    is_json = False
    if isinstance(message, bytes | bytearray | memoryview):
        message = bytes(message)
    elif not isinstance(message, str):
        if not isinstance(message, dict | list | int | float | bool):
            raise TypeError(
                "broadcast() takes str, bytes or a JSON value (dict, list, number, bool), "
                f"got {type(message).__name__}"
            )
        try:
            message = json.dumps(
                message, ensure_ascii=False, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise TypeError(f"broadcast() could not encode the value as JSON: {exc}") from None
        is_json = True
    if isinstance(message, str):
        # ASCII is one byte a character (an O(1) check): no encoding just to measure.
        try:
            size = len(message) if message.isascii() else len(message.encode())
        except UnicodeEncodeError as exc:
            raise MessageNotText(
                f"message is not valid text (a lone surrogate at character {exc.start}); not sent"
            ) from None
    else:
        size = len(message)
    _check_channel(channel)
    if event is not None:
        _check_event(event)
    host = current_host()
    limit = host.setting(MAX_MESSAGE_SIZE)
    if size > limit:
        raise MessageTooLarge(f"message is {size} bytes, over the {limit}-byte limit; not sent")
    publication: str | bytes | Publication = message
    if is_json or event is not None:
        publication = Publication(message, json=is_json, event=event)
    result = get_broker(host).publish_result_sync(channel, publication)
    counted: Instrument | None = host.app.extensions.get(PUBLICATIONS_KEY)
    if counted is not None:
        counted.inc()
    position = result.position
    if position is None:
        return Broadcast(result.receivers)
    return Broadcast(result.receivers, position.offset, position.epoch)


def _check_channel(channel: str) -> None:
    if not isinstance(channel, str):
        raise TypeError(f"broadcast()'s channel is a str, got {type(channel).__name__}")
    try:
        length = len(channel.encode())
    except UnicodeEncodeError:
        raise InvalidChannel("channel name is not valid text; not sent") from None
    if not channel or length > MAX_CHANNEL_LENGTH or not channel.isprintable():
        raise InvalidChannel(
            f"channel name must be 1 to {MAX_CHANNEL_LENGTH} printable bytes; not sent"
        )


class InvalidEvent(HTTPError, ValueError):
    """The event name is empty, too long or not printable text; nothing was sent."""

    status = 400


def _check_event(event: str) -> None:
    if not isinstance(event, str):
        raise TypeError(f"broadcast()'s event is a str or None, got {type(event).__name__}")
    if not 1 <= len(event) <= MAX_EVENT_NAME or not event.isprintable():
        raise InvalidEvent(
            f"event name must be 1 to {MAX_EVENT_NAME} printable characters; not sent"
        )


def history(
    channel: str = DEFAULT_CHANNEL,
    limit: int = -1,
    since: StreamPosition | tuple[int, str] | None = None,
    reverse: bool = False,
) -> HistoryResult:
    """The publications kept in ``channel`` (one whose namespace has history on).

    ``limit``: at most this many (-1: all kept, 0: none, only the position). With
    ``since`` (a position, or ``(offset, epoch)``): those after it, or before it with
    ``reverse`` (newest first). Returns ``.publications`` (each with ``.data``,
    ``.json`` and ``.offset``) and ``.position`` (``.offset``, ``.epoch``: where the
    stream stands). Raises ``HistoryUnavailable`` (404) where the channel keeps none,
    ``UnrecoverablePosition`` (409) for a ``since`` from another epoch,
    ``InvalidChannel`` (400), ``BrokerUnavailable`` (503).
    """
    _check_channel(channel)
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise TypeError(f"history()'s limit is an int, got {type(limit).__name__}")
    if since is not None and not isinstance(since, StreamPosition):
        offset, epoch = since
        if isinstance(offset, bool) or not isinstance(offset, int) or not isinstance(epoch, str):
            raise TypeError("history()'s since is a StreamPosition or (offset: int, epoch: str)")
        since = StreamPosition(offset, epoch)
    broker = get_broker(current_host())
    return broker.history_sync(channel, limit=limit, since=since, reverse=reverse)


def _client_info(member: Member) -> dict[str, Any]:
    if member.info:
        try:
            info = json.loads(member.info)
        except ValueError:
            info = None
        if isinstance(info, dict):
            return info
    return {"user": member.user, "client": member.client}


def presence(channel: str) -> dict[str, dict[str, Any]]:
    """Who is in ``channel`` (one whose namespace keeps presence), on every host.

    By client id, each as the protocol shows it to others (``user``, ``client``, and
    ``conn_info`` and ``chan_info`` where set). Raises ``PresenceUnavailable`` (404)
    where the channel keeps none, ``InvalidChannel`` (400), ``BrokerUnavailable`` (503).
    """
    _check_channel(channel)
    members = get_broker(current_host()).presence_sync(channel)
    return {client: _client_info(member) for client, member in members.items()}


def presence_stats(channel: str) -> dict[str, int]:
    """``{"num_clients": ..., "num_users": ...}`` in ``channel``, on every host."""
    _check_channel(channel)
    stats = get_broker(current_host()).presence_stats_sync(channel)
    return {"num_clients": stats.clients, "num_users": stats.users}
