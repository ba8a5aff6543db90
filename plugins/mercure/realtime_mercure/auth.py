"""Mercure's JWTs: where a request carries one, and what its ``mercure`` claim grants.

As draft-dunglas-mercure-07 and the 0.x Go hub: the ``Authorization: Bearer``
header first, then the ``authorization`` query parameter, then the
``mercureAuthorization`` cookie (which a POST may use only from an allowed origin,
against cross-site request forgery). The key and algorithm come from configuration,
never from the token; ``exp`` is checked when present and closes a subscription
when it comes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import urlsplit

import jwt

from .selectors import MAX_SELECTOR_LENGTH

COOKIE_NAME = "mercureAuthorization"
QUERY_NAME = "authorization"
#: The largest token accepted, bytes (a claim of many selectors stays well below).
MAX_TOKEN_SIZE = 16 * 1024
#: Selectors one claim may list (Go: 1000).
MAX_CLAIM_SELECTORS = 256
#: Shorter than a compact JWS can be (Go refuses these before verifying).
MIN_TOKEN_SIZE = 41
ALGORITHMS = (
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512",
    "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA",
)  # fmt: skip


class Unauthorized(Exception):
    """A token was given and is not valid (or is not allowed where it came from)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A valid token's ``mercure`` claim: the selectors it lists, and when it expires."""

    subscribe: tuple[str, ...] | None
    publish: tuple[str, ...] | None
    exp: float | None
    subject: str = ""


@dataclass(frozen=True, slots=True)
class Verifier:
    """One role's key and algorithm (``key`` empty: that role takes no tokens)."""

    key: str
    algorithm: str

    def verify(self, token: str) -> Grant:
        if not self.key:
            raise Unauthorized("no key is configured for this role")
        if not MIN_TOKEN_SIZE <= len(token) <= MAX_TOKEN_SIZE:
            raise Unauthorized("malformed token")
        try:
            claims = jwt.decode(
                token,
                self.key,
                algorithms=[self.algorithm],
                options={"verify_aud": False, "verify_iss": False},
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        if not isinstance(claims, Mapping):
            raise Unauthorized("invalid token claims")
        mercure = claims.get("mercure")
        if mercure is None:
            mercure = {}
        if not isinstance(mercure, Mapping):
            raise Unauthorized("the mercure claim is not an object")
        exp = claims.get("exp")
        sub = claims.get("sub")
        return Grant(
            _selectors(mercure.get("subscribe"), "subscribe"),
            _selectors(mercure.get("publish"), "publish"),
            float(exp) if isinstance(exp, int | float) else None,
            sub if isinstance(sub, str) else "",
        )


def _selectors(value: Any, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_CLAIM_SELECTORS:
        raise Unauthorized(f"mercure.{name} is a list of at most {MAX_CLAIM_SELECTORS} selectors")
    for selector in value:
        if not isinstance(selector, str) or len(selector) > MAX_SELECTOR_LENGTH:
            raise Unauthorized(f"mercure.{name} holds selectors of at most {MAX_SELECTOR_LENGTH}")
    return tuple(value)


def header(scope: Any, name: bytes) -> list[bytes]:
    """Every value of the request header ``name`` (lower case)."""
    return [value for key, value in scope.get("headers", ()) if key.lower() == name]


def request_origin(scope: Any) -> str | None:
    """The request's ``Origin``, else its ``Referer``'s scheme and host, else None."""
    origin = header(scope, b"origin")
    if origin:
        return origin[0].decode("latin-1")
    referer = header(scope, b"referer")
    if referer:
        parts = urlsplit(referer[0].decode("latin-1"))
        if parts.scheme and parts.netloc:
            return f"{parts.scheme}://{parts.netloc}"
    return None


def _cookie(scope: Any) -> str | None:
    for raw in header(scope, b"cookie"):
        if len(raw) > MAX_TOKEN_SIZE * 2:
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(raw.decode("latin-1"))
        except CookieError:
            continue
        morsel = jar.get(COOKIE_NAME)
        if morsel is not None:
            return morsel.value
    return None


def find_token(
    scope: Any, query: Mapping[str, list[str]], *, post: bool, origin_allowed: bool
) -> str | None:
    """The request's token, None for none; :class:`Unauthorized` for a malformed header
    or query parameter, or a cookie on a POST from an origin not allowed."""
    authorization = header(scope, b"authorization")
    if authorization:
        if len(authorization) != 1:
            raise Unauthorized('invalid "Authorization" header')
        value = authorization[0].decode("latin-1")
        if len(value) < 7 + MIN_TOKEN_SIZE or value[:7].lower() != "bearer ":
            raise Unauthorized('invalid "Authorization" header')
        return value[7:].strip()
    if QUERY_NAME in query:
        values = query[QUERY_NAME]
        if len(values) != 1 or len(values[0]) < MIN_TOKEN_SIZE:
            raise Unauthorized('invalid "authorization" query parameter')
        return values[0]
    token = _cookie(scope)
    if token is None:
        return None
    if post and not origin_allowed:
        raise Unauthorized("a cookie authorizes a POST from an allowed origin only")
    return token
