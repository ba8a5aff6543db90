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
