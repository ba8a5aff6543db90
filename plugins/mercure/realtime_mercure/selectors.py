"""Mercure topic selectors: an exact topic, ``*``, or an RFC 6570 URI template.

A selector matches a topic when it is the topic itself, when it is ``*``, or when
it is a URI template the topic is an expansion of (``https://example.com/books/{id}``
matches ``https://example.com/books/1``), as the Go hub's
``TopicSelectorStore.match`` decides. Templates are compiled to regular expressions
once (an LRU cache shared by every subscriber) and bounded in length and in
expressions, so a selector costs the same whoever sends it.
"""

from __future__ import annotations

import re
from functools import lru_cache

#: The longest selector accepted, characters (a topic is a channel: 255 bytes at most).
MAX_SELECTOR_LENGTH = 255
#: Expressions (``{...}``) in one template, and variables in one expression.
MAX_EXPRESSIONS = 10
MAX_VARIABLES = 10
#: Compiled templates kept.
CACHE_SIZE = 4096

#: RFC 6570's unreserved characters (and percent-encodings): what simple expansion gives.
_UNRESERVED = r"(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})"
#: Reserved characters too: what ``{+var}`` and ``{#var}`` give.
_RESERVED = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})"
_VARNAME = re.compile(r"(?:[A-Za-z0-9_.]|%[0-9A-Fa-f]{2})+(?::[1-9][0-9]{0,3}|\*)?\Z")
_OPERATORS = "+#./;?&"


class InvalidSelector(ValueError):
    """A selector too long, or a malformed URI template."""


def is_template(selector: str) -> bool:
    """Whether ``selector`` needs matching beyond equality (``*`` or a URI template)."""
    return selector == "*" or "{" in selector


def _expression(body: str) -> str:
    """The regular expression of one ``{...}`` expression's expansions."""
    op = body[0] if body and body[0] in _OPERATORS else ""
    names = body[len(op) :].split(",")
    if not names or len(names) > MAX_VARIABLES:
        raise InvalidSelector(f"expression {{{body}}}: 1 to {MAX_VARIABLES} variables")
    for name in names:
        if not _VARNAME.match(name):
            raise InvalidSelector(f"expression {{{body}}}: bad variable {name!r}")
    exploded = any(name.endswith("*") for name in names)
    count = len(names)
    if op in ("", "+", "#"):
        chars = _UNRESERVED if op == "" else _RESERVED
        repeat = "*" if exploded else f"{{0,{count - 1}}}"
        values = f"{chars}*(?:,{chars}*){repeat}"
        return f"(?:#{values})?" if op == "#" else values
    if op in (".", "/"):
        sep = re.escape(op)
        repeat = "*" if exploded else f"{{0,{count}}}"
        return f"(?:{sep}{_UNRESERVED}*(?:,{_UNRESERVED}*)*){repeat}"
    # ; ? & : name=value pairs (a ``;name`` may stand alone when its value is empty)
    first = {";": ";", "?": r"\?", "&": "&"}[op]
    later = ";" if op == ";" else "&"
    pair = rf"{_UNRESERVED}+(?:={_UNRESERVED}*(?:,{_UNRESERVED}*)*)?"
    return f"(?:{first}{pair}(?:{later}{pair})*)?"


@lru_cache(maxsize=CACHE_SIZE)
def compile_template(template: str) -> re.Pattern[str]:
    """The regular expression ``template``'s expansions match (whole topics only)."""
    if len(template) > MAX_SELECTOR_LENGTH:
        raise InvalidSelector(f"a selector is at most {MAX_SELECTOR_LENGTH} characters")
    parts: list[str] = []
    position = 0
    expressions = 0
    while True:
        start = template.find("{", position)
        if start < 0:
            tail = template[position:]
            if "}" in tail:
                raise InvalidSelector("unbalanced '}' in a URI template")
            parts.append(re.escape(tail))
            break
        literal = template[position:start]
        if "}" in literal:
            raise InvalidSelector("unbalanced '}' in a URI template")
        parts.append(re.escape(literal))
        end = template.find("}", start)
        if end < 0 or "{" in template[start + 1 : end]:
            raise InvalidSelector("unbalanced '{' in a URI template")
        expressions += 1
        if expressions > MAX_EXPRESSIONS:
            raise InvalidSelector(f"a URI template has at most {MAX_EXPRESSIONS} expressions")
        parts.append(_expression(template[start + 1 : end]))
        position = end + 1
    return re.compile("".join(parts))


def check_selector(selector: str) -> str:
    """``selector`` if it is one (compiling a template), else :class:`InvalidSelector`."""
    if not selector or len(selector) > MAX_SELECTOR_LENGTH:
        raise InvalidSelector(f"a selector is 1 to {MAX_SELECTOR_LENGTH} characters")
    if selector != "*" and "{" in selector:
        compile_template(selector)
    elif "}" in selector:
        raise InvalidSelector("unbalanced '}' in a URI template")
    return selector


def matches(selector: str, topic: str) -> bool:
    """Whether ``selector`` matches ``topic`` (a malformed template matches nothing)."""
    if selector == topic or selector == "*":
        return True
    if "{" not in selector:
        return False
    try:
        pattern = compile_template(selector)
    except InvalidSelector:
        return False
    return pattern.fullmatch(topic) is not None


def any_match(selectors: tuple[str, ...], topics: tuple[str, ...]) -> bool:
    """Whether any of ``selectors`` matches any of ``topics``."""
    return any(matches(selector, topic) for selector in selectors for topic in topics)
