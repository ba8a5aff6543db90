"""Mercure topic selectors: an exact topic, ``*``, or an RFC 6570 URI template.

A selector matches a topic when it is the topic itself, when it is ``*``, or when
it is a URI template the topic is an expansion of (``https://example.com/books/{id}``
matches ``https://example.com/books/1``), as the Go hub's
``TopicSelectorStore.match`` decides. Templates are bounded in length and in
expressions, and compiled once (an LRU cache shared by every subscriber) to an
automaton matched in one pass over the topic: never a backtracking regular
expression, whose time grows as the topic's length to the power of the template's
adjacent expressions (``{a}{b}{c}{d}{e}`` took seconds on a 120-character topic), so
a selector costs the same, linear in the topic, whoever sends it.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Union

#: The longest selector accepted, characters (a topic is a channel: 255 bytes at most).
MAX_SELECTOR_LENGTH = 255
#: Expressions (``{...}``) in one template, and variables in one expression.
MAX_EXPRESSIONS = 10
MAX_VARIABLES = 10
#: Compiled templates kept.
CACHE_SIZE = 1024
#: Template-topic answers remembered (a few MB at most).
MATCH_CACHE_SIZE = 1 << 16
#: Steps of one template's automaton remembered (each a set of its states and a
#: character): what makes matching one dictionary look-up a character, bounded.
MAX_REMEMBERED = 512

_VARNAME = re.compile(r"(?:[A-Za-z0-9_.]|%[0-9A-Fa-f]{2})+(?::[1-9][0-9]{0,3}|\*)?\Z")
_OPERATORS = "+#./;?&"

#: RFC 6570's unreserved characters: what simple expansion gives (with
#: percent-encodings); reserved characters too for ``{+var}`` and ``{#var}``.
_UNRESERVED_CHARS = frozenset(string.ascii_letters + string.digits + "-._~")
_RESERVED_CHARS = _UNRESERVED_CHARS | frozenset(":/?#[]@!$&'()*+,;=")
_HEX = frozenset(string.hexdigits)


class InvalidSelector(ValueError):
    """A selector too long, or a malformed URI template."""


# A template as a small regular language: literal text, one character of a set,
# sequences, alternatives, repetition. ------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Chars:
    chars: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Seq:
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Alt:
    options: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _Repeat:
    """``item`` at least ``low`` times, at most ``high`` (None: no bound)."""

    item: _Node
    low: int
    high: int | None


_Node = Union[_Chars, _Seq, _Alt, _Repeat]  # noqa: UP007


def _text(text: str) -> _Node:
    return _Seq(tuple(_Chars(frozenset(char)) for char in text))


def _unit(chars: frozenset[str]) -> _Node:
    """One character of ``chars``, or a percent-encoding."""
    return _Alt((_Chars(chars), _Seq((_Chars(frozenset("%")), _Chars(_HEX), _Chars(_HEX)))))


_U = _unit(_UNRESERVED_CHARS)
_R = _unit(_RESERVED_CHARS)


def _star(node: _Node) -> _Node:
    return _Repeat(node, 0, None)


def _expression(body: str) -> _Node:
    """The language of one ``{...}`` expression's expansions."""
    op = body[0] if body and body[0] in _OPERATORS else ""
    names = body[len(op) :].split(",")
    if not names or len(names) > MAX_VARIABLES:
        raise InvalidSelector(f"expression {{{body}}}: 1 to {MAX_VARIABLES} variables")
    for name in names:
        if not _VARNAME.match(name):
            raise InvalidSelector(f"expression {{{body}}}: bad variable {name!r}")
    exploded = any(name.endswith("*") for name in names)
    count = len(names)
    comma = _text(",")
    if op in ("", "+", "#"):
        unit = _U if op == "" else _R
        values = _Seq(
            (_star(unit), _Repeat(_Seq((comma, _star(unit))), 0, None if exploded else count - 1))
        )
        return _Repeat(_Seq((_text("#"), values)), 0, 1) if op == "#" else values
    if op in (".", "/"):
        one = _Seq((_text(op), _star(_U), _star(_Seq((comma, _star(_U))))))
        return _Repeat(one, 0, None if exploded else count)
    # ; ? & : name=value pairs (a ``;name`` may stand alone when its value is empty)
    later = ";" if op == ";" else "&"
    value = _Seq((_text("="), _star(_U), _star(_Seq((comma, _star(_U))))))
    pair = _Seq((_Repeat(_U, 1, None), _Repeat(value, 0, 1)))
    return _Repeat(_Seq((_text(op), pair, _star(_Seq((_text(later), pair))))), 0, 1)


def _parse(template: str) -> tuple[str, list[_Node]]:
    """The template's leading literal text, and the language of the rest, in parts."""
    if len(template) > MAX_SELECTOR_LENGTH:
        raise InvalidSelector(f"a selector is at most {MAX_SELECTOR_LENGTH} characters")
    parts: list[_Node] = []
    prefix = ""
    position = 0
    expressions = 0
    while True:
        start = template.find("{", position)
        if start < 0:
            tail = template[position:]
            if "}" in tail:
                raise InvalidSelector("unbalanced '}' in a URI template")
            parts.append(_text(tail))
            break
        literal = template[position:start]
        if "}" in literal:
            raise InvalidSelector("unbalanced '}' in a URI template")
        if expressions == 0:
            prefix = literal
        else:
            parts.append(_text(literal))
        end = template.find("}", start)
        if end < 0 or "{" in template[start + 1 : end]:
            raise InvalidSelector("unbalanced '{' in a URI template")
        expressions += 1
        if expressions > MAX_EXPRESSIONS:
            raise InvalidSelector(f"a URI template has at most {MAX_EXPRESSIONS} expressions")
        parts.append(_expression(template[start + 1 : end]))
        position = end + 1
    return prefix, parts


# The automaton: Thompson's construction, run on sets of states ------------------------

_ACCEPT = 0


@dataclass(slots=True)
class Template:
    """A compiled template: its literal prefix, then an automaton for the rest, run
    on the set of states the topic so far can be in (time linear in the topic)."""

    prefix: str
    #: Each state's characters (empty: a state that only moves on, or accepts).
    chars: list[frozenset[str]] = field(default_factory=list)
    #: Where each state goes: after its character, or at once when it has none.
    outs: list[list[int]] = field(default_factory=list)
    start: frozenset[int] = frozenset()
    _closures: dict[int, frozenset[int]] = field(default_factory=dict)
    _steps: dict[tuple[frozenset[int], str], frozenset[int]] = field(default_factory=dict)

    def _state(self, chars: frozenset[str], outs: list[int]) -> int:
        self.chars.append(chars)
        self.outs.append(outs)
        return len(self.chars) - 1

    def _build(self, node: _Node, after: int) -> int:
        """The state that matches ``node`` then goes on to ``after``."""
        if isinstance(node, _Chars):
            return self._state(node.chars, [after])
        if isinstance(node, _Seq):
            for item in reversed(node.items):
                after = self._build(item, after)
            return after
        if isinstance(node, _Alt):
            starts = [self._build(option, after) for option in node.options]
            return self._state(frozenset(), starts)
        # A repeat: the optional copies first (innermost last), then the required ones.
        if node.high is None:
            loop = self._state(frozenset(), [])
            self.outs[loop] += [self._build(node.item, loop), after]
            tail = loop
        else:
            tail = after
            for _ in range(node.high - node.low):
                tail = self._state(frozenset(), [self._build(node.item, tail), after])
        for _ in range(node.low):
            tail = self._build(node.item, tail)
        return tail

    def _closure(self, state: int) -> frozenset[int]:
        """The states with a character (or accepting) reachable from ``state`` at once."""
        found = self._closures.get(state)
        if found is not None:
            return found
        reached: set[int] = set()
        seen = {state}
        todo = [state]
        while todo:
            current = todo.pop()
            if self.chars[current] or current == _ACCEPT:
                reached.add(current)
                continue
            for out in self.outs[current]:
                if out not in seen:
                    seen.add(out)
                    todo.append(out)
        found = self._closures[state] = frozenset(reached)
        return found

    def _step(self, states: frozenset[int], char: str) -> frozenset[int]:
        key = (states, char)
        found = self._steps.get(key)
        if found is None:
            reached: set[int] = set()
            for state in states:
                if char in self.chars[state]:
                    for out in self.outs[state]:
                        reached |= self._closure(out)
            found = frozenset(reached)
            if len(self._steps) < MAX_REMEMBERED:
                self._steps[key] = found
        return found

    def fullmatch(self, topic: str) -> bool:
        """Whether ``topic`` is an expansion of the template."""
        if not topic.startswith(self.prefix):
            return False
        states = self.start
        for char in topic[len(self.prefix) :]:
            states = self._step(states, char)
            if not states:
                return False
        return _ACCEPT in states


@lru_cache(maxsize=CACHE_SIZE)
def compile_template(template: str) -> Template:
    """``template`` compiled (:class:`InvalidSelector` for a malformed one)."""
    prefix, parts = _parse(template)
    compiled = Template(prefix)
    compiled._state(frozenset(), [])  # _ACCEPT
    start = compiled._build(_Seq(tuple(parts)), _ACCEPT)
    compiled.start = compiled._closure(start)
    return compiled


@lru_cache(maxsize=CACHE_SIZE)
def _compiled(template: str) -> Template | None:
    """``template`` compiled, or None for a malformed one (remembered as such too)."""
    try:
        return compile_template(template)
    except InvalidSelector:
        return None


def is_template(selector: str) -> bool:
    """Whether ``selector`` needs matching beyond equality (``*`` or a URI template)."""
    return selector == "*" or "{" in selector


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
    return _template_matches(selector, topic)


@lru_cache(maxsize=MATCH_CACHE_SIZE)
def _template_matches(template: str, topic: str) -> bool:
    """One template against one topic, remembered: every subscriber kind holding that
    template asks about the same update's topics, so an update costs one match per
    distinct (template, topic), not one per subscriber kind (a pure function: the
    cache gives every app the same answers)."""
    pattern = _compiled(template)
    return pattern is not None and pattern.fullmatch(topic)


def any_match(selectors: tuple[str, ...], topics: tuple[str, ...]) -> bool:
    """Whether any of ``selectors`` matches any of ``topics``."""
    return any(matches(selector, topic) for selector in selectors for topic in topics)
