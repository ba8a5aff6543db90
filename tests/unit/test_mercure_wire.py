"""Who gets a Mercure update, on which channel, and how it looks on the wire."""

from __future__ import annotations

from realtime_broker import PresenceEvent, Publication
from realtime_mercure.wire import (
    PRIVATE,
    TEMPLATES,
    Subscription,
    event_text,
    topics_of,
    update_attrs,
    update_channels,
)

BOOK = "https://example.com/books/1"
ALT = "https://example.com/users/1/books/1"
BOOKS = "https://example.com/books/{id}"


def update(*topics: str, private: bool = False, **fields: str | None) -> Publication:
    attrs = update_attrs(topics, private=private, retry=None, at=1)
    return Publication(fields.pop("data", None) or "d", attrs=attrs, **fields)  # type: ignore[arg-type]


def sub(
    exact: tuple[str, ...] = (),
    templates: tuple[str, ...] = (),
    grant: tuple[str, ...] | None = None,
    *,
    foreign_private: bool = True,
) -> Subscription:
    return Subscription(frozenset(exact), templates, grant, foreign_private=foreign_private)


def heard(subscription: Subscription, publication: Publication) -> list[str]:
    """The channels a subscriber of this kind gets ``publication`` on (of those it
    was published to: each topic's, then the template channel)."""
    private = bool(publication.attrs and PRIVATE in publication.attrs)
    channels = update_channels(topics_of("", publication), private=private)
    return [
        channel
        for channel in channels
        if channel in subscription.channels() and subscription.encode(channel, publication)
    ]


def test_an_update_reaches_each_kind_of_subscriber_once() -> None:
    two = update(BOOK, ALT)
    assert heard(sub((BOOK,)), two) == [BOOK]
    assert heard(sub((ALT,)), two) == [ALT]
    assert heard(sub((BOOK, ALT)), two) == [BOOK]  # the first of its topics
    assert heard(sub((), (BOOKS,)), two) == [TEMPLATES]
    assert heard(sub((ALT,), (BOOKS, "*")), two) == [ALT]  # exact wins over the template
    assert heard(sub((), ("https://example.com/authors/{id}",)), two) == []


def test_private_updates_need_a_grant_matching_one_of_the_topics() -> None:
    secret = update(BOOK, ALT, private=True)
    assert heard(sub((BOOK,)), secret) == []
    grant = ("https://example.com/users/{u}/books/{b}",)
    assert heard(sub((BOOK,), grant=grant), secret) == [TEMPLATES]  # never on BOOK's channel
    assert sub((BOOK,), grant=grant).channels() == [BOOK, TEMPLATES]
    assert heard(sub((ALT,), (BOOKS,), grant=grant), secret) == [TEMPLATES]  # once
    assert heard(sub((), (BOOKS,), grant=("*",)), secret) == [TEMPLATES]
    assert heard(sub((BOOK,), grant=("https://example.com/authors/1",)), secret) == []


def test_foreign_publications_are_exact_only_and_private_unless_told() -> None:
    plain = Publication("from a script")
    assert sub((BOOK,)).encode(BOOK, plain) is None
    assert sub((BOOK,), grant=(BOOKS,)).encode(BOOK, plain) == "data: from a script\n\n"
    assert sub((BOOK,), foreign_private=False).encode(BOOK, plain) == "data: from a script\n\n"
    assert sub((), ("*",), grant=("*",)).encode(TEMPLATES, plain) is None
    assert sub((BOOK,), grant=("*",)).encode(BOOK, PresenceEvent.__new__(PresenceEvent)) is None


def test_event_text_is_gos() -> None:
    attrs = update_attrs((BOOK,), private=False, retry=5000, at=1)
    publication = Publication("a\r\nb\nc", event="t", id="urn:1", attrs=attrs)
    assert (
        event_text(publication) == "event: t\nretry: 5000\nid: urn:1\ndata: a\ndata: b\ndata: c\n\n"
    )
    assert event_text(publication) is event_text(publication)  # built once
    assert event_text(Publication(b"bytes", event="x\ny")) == "event: x y\ndata: bytes\n\n"
