"""Mercure updates on the bus and on the wire.

An update is one :class:`~realtime_broker.Publication`: its data, ``event`` (the
``type``), ``id``, and ``attrs`` for the rest: :data:`MARK` (a Mercure update),
``private``, ``retry``, :data:`AT` (when it was published, nanoseconds, to merge a
replay read from several channels) and its topics ``t0``..``tN`` (``t0`` the
canonical one). It is published on the channel of each of its topics, where
exact-topic subscribers hear it, and once on :data:`TEMPLATES`, where subscribers
by URI template or ``*`` do; a private update on :data:`TEMPLATES` only, where every
subscriber with a grant listens (:func:`update_channels`). A publication from
another protocol has no mark: its one topic is its channel, it never reaches
:data:`TEMPLATES`, and it counts as private or public as ``mercure_foreign_updates``
says.

A subscriber's :class:`Subscription` is its format: shared by every subscriber
with the same selectors and grants (interned), it decides who gets an update, once
per format: an update reaches a subscriber exactly once, on the channel of the
first of its topics the subscriber has an exact selector for, else on
:data:`TEMPLATES` if a template matches one of its topics; a private update only
where the grant matches one of them. The event's text is built once per
publication for every format (:func:`event_text` keeps the last).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from realtime_broker import Publication

from .selectors import any_match

if TYPE_CHECKING:
    from realtime_hub import Client, Hub

#: The internal channel template subscribers hear every Mercure update on. A control
#: character first, as the hub's internal channels: no client or script can name it.
TEMPLATES = "\x01mercure"
#: Attribute names (short: they travel in every copy).
MARK = "m"
PRIVATE = "p"
RETRY = "r"
AT = "at"
#: Topics one update may have: the attributes a publication carries are bounded (16).
MAX_UPDATE_TOPICS = 12


def topics_of(channel: str, publication: Publication) -> tuple[str, ...]:
    """The update's topics, canonical first; a foreign publication's is its channel."""
    attrs = publication.attrs
    if not attrs or MARK not in attrs:
        return (channel,)
    topics = []
    for index in range(MAX_UPDATE_TOPICS):
        topic = attrs.get(f"t{index}")
        if topic is None:
            break
        topics.append(topic)
    return tuple(topics) or (channel,)


def is_mercure(publication: Publication) -> bool:
    attrs = publication.attrs
    return bool(attrs) and MARK in attrs  # type: ignore[operator]


def published_at(publication: Publication) -> int:
    attrs = publication.attrs
    try:
        return int(attrs.get(AT, "0")) if attrs else 0
    except ValueError:
        return 0


def update_channels(topics: tuple[str, ...], *, private: bool) -> tuple[str, ...]:
    """Where an update is published: each topic's channel (other protocols' clients of
    that channel hear it too) and :data:`TEMPLATES`; a private one on :data:`TEMPLATES`
    only, which no other protocol can name, since only a Mercure grant may read it
    (a raw ``/ws`` or public Pusher channel of the same name would let anyone)."""
    return (TEMPLATES,) if private else (*topics, TEMPLATES)


def update_attrs(
    topics: tuple[str, ...], *, private: bool, retry: int | None, at: int
) -> dict[str, str]:
    attrs = {MARK: "1", AT: str(at)}
    if private:
        attrs[PRIVATE] = "1"
    if retry is not None:
        attrs[RETRY] = str(retry)
    for index, topic in enumerate(topics):
        attrs[f"t{index}"] = topic
    return attrs


def _sse_field(value: str) -> str:
    """A one-line field value (a foreign event name could hold a newline)."""
    return value.replace("\r", " ").replace("\n", " ") if "\n" in value or "\r" in value else value


_last: tuple[Publication | None, str] = (None, "")


def event_text(publication: Publication) -> str:
    """The update as one Server-Sent Event, as the Go hub writes it; the same object
    for every format that asks about the same publication in a row."""
    global _last
    if _last[0] is publication:
        return _last[1]
    parts = []
    if publication.event:
        parts.append(f"event: {_sse_field(publication.event)}\n")
    attrs = publication.attrs
    retry = attrs.get(RETRY) if attrs else None
    if retry:
        parts.append(f"retry: {retry}\n")
    if publication.id is not None:
        parts.append(f"id: {_sse_field(publication.id)}\n")
    data = publication.data
    text = data if isinstance(data, str) else data.decode(errors="replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    parts.append("data: " + text.replace("\n", "\ndata: ") + "\n\n")
    result = "".join(parts)
    _last = (publication, result)
    return result


class Subscription:
    """What one kind of subscriber asked for and may read: a hub :class:`Format`.

    ``exact``: its exact-topic selectors (each a channel it joins); ``templates``:
    its ``*`` and URI templates (it joins :data:`TEMPLATES` for them); ``grant``: the
    selectors of its token's ``mercure.subscribe`` claim (None: public updates only).
    ``foreign_private``: another protocol's publications count as private updates.
    ``guarded``: which of its exact topics are channels another protocol guards with
    its own auth (``hub._guarded``: Centrifuge's ``$``, user-limited and closed
    channels, what Pusher reserves): another protocol's publications there never
    reach a Mercure subscriber, whatever its grant (a ``*`` grant is for Mercure's
    private updates, not for these).
    """

    __slots__ = (
        "__weakref__",
        "exact",
        "foreign_private",
        "grant",
        "guarded",
        "templates",
    )

    def __init__(
        self,
        exact: frozenset[str],
        templates: tuple[str, ...],
        grant: tuple[str, ...] | None,
        *,
        foreign_private: bool,
        guarded: frozenset[str] = frozenset(),
    ) -> None:
        self.exact = exact
        self.templates = templates
        self.grant = grant
        self.foreign_private = foreign_private
        self.guarded = guarded

    def channels(self) -> list[str]:
        """The channels it joins: its exact topics, then :data:`TEMPLATES` for its
        templates, or for the private updates its grant may read."""
        joined = sorted(self.exact)
        if self.templates or self.grant is not None:
            joined.append(TEMPLATES)
        return joined

    def wants(self, channel: str, publication: Any) -> bool:
        """Whether a subscriber of this kind gets ``publication`` as heard on ``channel``."""
        if not isinstance(publication, Publication):
            return False  # a presence event: nothing in Mercure
        topics = topics_of(channel, publication)
        exact = self.exact
        mercure = is_mercure(publication)
        attrs: Mapping[str, str] | None = publication.attrs
        if channel == TEMPLATES:
            if not mercure:
                return False
            if any(topic in exact for topic in topics):
                if not (attrs and PRIVATE in attrs):
                    return False  # it came on that topic's channel
            elif not any_match(self.templates, topics):
                return False
        elif mercure and attrs and PRIVATE in attrs:
            return False  # private updates come on TEMPLATES only
        elif not mercure and channel in self.guarded:
            return False
        else:
            for topic in topics:
                if topic in exact:
                    if topic != channel:
                        return False  # it comes on an earlier topic's channel
                    break
        private = bool(attrs and PRIVATE in attrs) if mercure else self.foreign_private
        if private:
            grant = self.grant
            return grant is not None and any_match(grant, topics)
        return True

    def encode(self, channel: str, publication: Any) -> str | None:
        if not self.wants(channel, publication):
            return None
        return event_text(publication)

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        """Updates were lost on the way: end the stream, so the client reconnects with
        its ``Last-Event-ID`` and replays them from history where they were kept."""
        hub.disconnect(client, 1000, "updates were lost")
