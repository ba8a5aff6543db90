"""The HTTP API's request signature, checked as Pusher defines it, sans-IO.

Every request carries ``auth_key`` (the app's key), ``auth_timestamp`` (Unix seconds),
``auth_version`` (``1.0``), ``body_md5`` (hex MD5 of the body, wherever there is one)
and ``auth_signature``: HMAC-SHA256 with the app's secret of ``METHOD\\npath\\nquery``,
the query being the other parameters sorted by key (see :func:`.signing.api_signature`).
The timestamp must be within the ``pusher_timestamp_window`` of this server's clock,
so a captured request cannot be replayed later (Reverb and Soketi skip this check).

Nothing here depends on how a client orders or encodes its query: the parameters are
decoded, then sorted, as the server SDKs do when they sign.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import parse_qsl

from .apps import Apps, PusherApp
from .signing import api_signature, body_md5, check_auth

#: The longest query string read, bytes (a signed query is about 200; ``info`` and
#: ``filter_by_prefix`` add little).
MAX_QUERY = 4096
#: At most this many query parameters.
MAX_PARAMS = 16
_HEX32 = re.compile(r"[0-9a-f]{32}")
_DIGITS = re.compile(r"[0-9]{1,12}")


class APIError(Exception):
    """A refused request: its HTTP status and the text answered."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_query(raw: bytes) -> dict[str, str]:
    """The query's parameters; 400 for one too long, malformed or repeated."""
    if len(raw) > MAX_QUERY:
        raise APIError(400, f"query string over {MAX_QUERY} bytes")
    try:
        text = raw.decode("ascii")
        pairs = parse_qsl(
            text,
            keep_blank_values=True,
            strict_parsing=bool(text),
            encoding="utf-8",
            errors="strict",
            max_num_fields=MAX_PARAMS,
        )
    except (UnicodeDecodeError, ValueError):
        raise APIError(400, "malformed query string") from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise APIError(400, f"query parameter {name!r} given twice")
        params[name] = value
    return params


def authenticate(
    apps: Apps,
    app: PusherApp | None,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    window: float,
    raw_path: str | None = None,
) -> PusherApp:
    """The app a request is signed for (``app``, or the one ``auth_key`` names where
    the path names none); :class:`APIError` 401 saying what is wrong otherwise.

    The path signed is the decoded one (``raw_path``, as sent, is accepted too)."""
    key = params.get("auth_key")
    if not key:
        raise APIError(401, "missing auth_key")
    if app is None:
        app = apps.by_key.get(key)
        if app is None:
            raise APIError(401, "unknown auth_key")
    elif not check_auth(app.key, key):
        raise APIError(401, "unknown auth_key for this app")
    if params.get("auth_version") != "1.0":
        raise APIError(401, "auth_version must be 1.0")
    timestamp = params.get("auth_timestamp", "")
    if not _DIGITS.fullmatch(timestamp):
        raise APIError(401, "missing or malformed auth_timestamp (Unix seconds)")
    if abs(now - int(timestamp)) > window:
        raise APIError(
            401,
            f"Timestamp expired: given timestamp ({timestamp}) is not within "
            f"{window:g} s of server time ({int(now)})",
        )
    given_md5 = params.get("body_md5")
    if body or given_md5 is not None:
        if given_md5 is None:
            raise APIError(401, "missing body_md5 for a request with a body")
        if not _HEX32.fullmatch(given_md5) or not check_auth(body_md5(body), given_md5):
            raise APIError(401, "body_md5 does not match the body")
    given = params.get("auth_signature")
    signed = check_auth(api_signature(app.secret, method, path, params), given)
    if raw_path is not None and raw_path != path:
        # A client that signed the path as it sent it, percent-escapes and all.
        signed = check_auth(api_signature(app.secret, method, raw_path, params), given) or signed
    if not signed:
        raise APIError(
            401,
            "Invalid signature: expected the HMAC-SHA256 hex digest, with the app's "
            f"secret, of {string_to_sign(method, path, params)!r}",
        )
    return app


def string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """What :func:`.signing.api_signature` signs (told to a client whose signature is off)."""
    query = "&".join(
        f"{name}={value}"
        for name, value in sorted((k.lower(), v) for k, v in params.items())
        if name != "auth_signature"
    )
    return f"{method.upper()}\n{path}\n{query}"
