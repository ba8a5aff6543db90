"""Mercure topic selectors: exact, ``*``, RFC 6570 templates, and their bounds."""

from __future__ import annotations

import pytest

from realtime_mercure.selectors import (
    MAX_EXPRESSIONS,
    InvalidSelector,
    check_selector,
    is_template,
    matches,
)

BOOKS = "https://example.com/books/{id}"


@pytest.mark.parametrize(
    ("selector", "topic", "expected"),
    [
        ("https://example.com/books/1", "https://example.com/books/1", True),
        ("https://example.com/books/1", "https://example.com/books/2", False),
        ("*", "anything at all", True),
        (BOOKS, "https://example.com/books/1", True),
        (BOOKS, "https://example.com/books/war%20and%20peace", True),
        (BOOKS, "https://example.com/books/1/reviews", False),  # no / in a simple value
        (BOOKS, "https://example.com/authors/1", False),
        ("https://example.com/{+path}", "https://example.com/books/1/reviews", True),
        (
            "https://example.com/users/{user}/books/{id}",
            "https://example.com/users/k/books/3",
            True,
        ),
        ("https://example.com/a.b", "https://example.com/aXb", False),  # a literal dot
        ("https://example.com/books{/id}", "https://example.com/books/7", True),
        ("https://example.com/search{?q,page}", "https://example.com/search?q=x&page=2", True),
        ("https://example.com/search{?q}", "https://example.com/search?q=x#frag", False),
        ("https://example.com/x{#section}", "https://example.com/x#a/b", True),
        ("https://example.com/{id", "https://example.com/{id", True),  # equal: matched as is
        ("https://example.com/{id", "https://example.com/1", False),  # malformed: nothing else
    ],
)
def test_matches(selector: str, topic: str, expected: bool) -> None:
    assert matches(selector, topic) is expected


def test_templates_and_exact_selectors_are_told_apart() -> None:
    assert is_template("*") and is_template(BOOKS)
    assert not is_template("https://example.com/books/1")


@pytest.mark.parametrize(
    "selector",
    [
        "",
        "x" * 256,
        "https://example.com/{id",
        "https://example.com/id}",
        "https://example.com/{}",
        "https://example.com/{a b}",
        "https://example.com/{{id}}",
        "/".join(f"{{v{n}}}" for n in range(MAX_EXPRESSIONS + 1)),
        "{" + ",".join(f"v{n}" for n in range(11)) + "}",
    ],
)
def test_bad_selectors_are_refused(selector: str) -> None:
    with pytest.raises(InvalidSelector):
        check_selector(selector)


def test_good_selectors_pass() -> None:
    for selector in ("*", BOOKS, "plain", "https://example.com/{+path}{?q*}"):
        assert check_selector(selector) == selector


@pytest.mark.parametrize(
    ("selector", "topic"),
    [
        # Adjacent expressions: a backtracking regex tries every way to split the topic.
        ("".join(f"{{v{n}}}" for n in range(MAX_EXPRESSIONS)), "a" * 200 + "!"),
        ("{a}-{b}-{c}-{d}-{e}", "-" * 250 + "!"),
        ("{.a,b,c,d,e,f,g,h,i,j}", "." * 250 + "!"),
        ("{+a,b,c,d,e,f,g,h,i,j}" * 10, "," * 250 + '"'),
    ],
)
def test_a_hostile_template_costs_one_pass_over_the_topic(selector: str, topic: str) -> None:
    import time

    check_selector(selector)
    started = time.perf_counter()
    for _ in range(10):
        assert matches(selector, topic) is False
        assert matches(selector, topic[:-1]) is True
    # Linear: well under a millisecond a match; the backtracking regex took seconds.
    assert time.perf_counter() - started < 0.5


@pytest.mark.parametrize(
    ("selector", "topic", "expected"),
    [
        ("https://example.com/{id}.json", "https://example.com/1.2.json", True),
        ("https://example.com/{id}.json", "https://example.com/1.2.jso", False),
        ("https://example.com/{a}-{b}", "https://example.com/x-y-z", True),
        ("https://example.com/{a}{b}", "https://example.com/x%2Fy", True),
        ("https://example.com/{a}", "https://example.com/x%2", False),
        ("https://example.com/{a}", "https://example.com/x%2G", False),
        ("https://example.com/x{.fmt}", "https://example.com/x.a.b", True),
        ("https://example.com/x{.fmt}", "https://example.com/x", True),
        ("https://example.com/x{/a,b}", "https://example.com/x/1/2", True),
        ("https://example.com/x{/a,b}", "https://example.com/x/1/2/3", False),
        ("https://example.com/x{/a*}", "https://example.com/x/1/2/3", True),
        ("https://example.com/x{;a,b}", "https://example.com/x;a=1;b", True),
        ("https://example.com/x{?a}", "https://example.com/x?", False),
        ("https://example.com/{a,b}", "https://example.com/1,2", True),
        ("https://example.com/{a,b}", "https://example.com/1,2,3", False),
        ("https://example.com/{a*}", "https://example.com/1,2,3", True),
        ("{a}", "", True),
    ],
)
def test_template_languages(selector: str, topic: str, expected: bool) -> None:
    assert matches(selector, topic) is expected


def test_an_update_costs_one_match_per_distinct_template_and_topic(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A thousand subscriber kinds holding the same 32 templates, one update of 12
    topics: each template is matched against each topic once, not once per kind."""
    from realtime_mercure import selectors

    calls = 0
    real = selectors.Template.fullmatch

    def counted(self: selectors.Template, topic: str) -> bool:
        nonlocal calls
        calls += 1
        return real(self, topic)

    monkeypatch.setattr(selectors.Template, "fullmatch", counted)
    selectors._template_matches.cache_clear()
    templates = tuple(f"https://example.com/t{n}/{{id}}" for n in range(32))
    topics = tuple(f"https://example.com/other/{n}" for n in range(12))  # none matches
    for _ in range(1000):
        assert not selectors.any_match(templates, topics)
    assert calls == 32 * 12
