"""The admin page's login (realtime_admin.session): cookies, tampering, expiry, the limiter."""

from __future__ import annotations

import pytest

from realtime.rate import Rate
from realtime_admin.session import (
    MAX_COOKIE,
    MAX_REVOKED,
    SESSION_SECONDS,
    LoginLimiter,
    Sessions,
)

NOW = 1_800_000_000.0
SALT = b"s" * 32


def test_the_password_is_checked_exactly() -> None:
    sessions = Sessions("correct horse", salt=SALT)
    assert sessions.check_password("correct horse")
    for wrong in ("", "correct hors", "correct horse ", "Correct horse", "x" * 5000):
        assert not sessions.check_password(wrong)
    assert "correct" not in repr(sessions)


def test_no_password_no_sessions() -> None:
    with pytest.raises(ValueError, match="password"):
        Sessions("")


def test_an_issued_cookie_verifies_until_it_expires() -> None:
    sessions = Sessions("pw-12345678", salt=SALT)
    cookie = sessions.issue(now=NOW)
    nonce = sessions.verify(cookie, now=NOW + 1)
    assert nonce is not None and len(nonce) == 32
    assert sessions.verify(cookie, now=NOW + SESSION_SECONDS - 1) == nonce
    assert sessions.verify(cookie, now=NOW + SESSION_SECONDS + 1) is None


def _flip(text: str, index: int) -> str:
    char = text[index]
    return text[:index] + ("0" if char != "0" else "1") + text[index + 1 :]


def test_a_tampered_cookie_is_refused() -> None:
    sessions = Sessions("pw-12345678", salt=SALT)
    cookie = sessions.issue(now=NOW)
    version, expiry, nonce, mac = cookie.split(".")
    longer = str(int(expiry) + 10 * SESSION_SECONDS)
    forged = [
        f"{version}.{longer}.{nonce}.{mac}",  # a later expiry
        f"{version}.{expiry}.{_flip(nonce, 0)}.{mac}",  # another session
        f"{version}.{expiry}.{nonce}.{_flip(mac, 5)}",  # a changed MAC
        f"v2.{expiry}.{nonce}.{mac}",
        f"{version}.{expiry}.{nonce}",
        f"{version}.{expiry}.{nonce}.{mac}.x",
        f"{version}.{expiry}.{nonce}.",
        cookie + "0" * MAX_COOKIE,
        "",
    ]
    for value in forged:
        assert sessions.verify(value, now=NOW) is None, value
    assert sessions.verify(None) is None
    assert sessions.verify(cookie, now=NOW) is not None


def test_a_cookie_from_another_salt_or_password_is_refused() -> None:
    cookie = Sessions("pw-12345678", salt=SALT).issue(now=NOW)
    assert Sessions("pw-12345678", salt=b"t" * 32).verify(cookie, now=NOW) is None
    assert Sessions("pw-87654321", salt=SALT).verify(cookie, now=NOW) is None
    # Without a salt given, each start makes its own: a restart signs everyone out.
    assert Sessions("pw-12345678").verify(Sessions("pw-12345678").issue()) is None


def test_the_csrf_token_belongs_to_one_session() -> None:
    sessions = Sessions("pw-12345678", salt=SALT)
    first = sessions.verify(sessions.issue(now=NOW), now=NOW)
    second = sessions.verify(sessions.issue(now=NOW), now=NOW)
    assert first and second and first != second
    token = sessions.csrf_token(first)
    assert sessions.check_csrf(first, token)
    assert not sessions.check_csrf(second, token)
    assert not sessions.check_csrf(first, None)
    assert not sessions.check_csrf(first, "")


def test_a_revoked_session_stays_out_and_the_list_is_bounded() -> None:
    sessions = Sessions("pw-12345678", salt=SALT)
    cookie = sessions.issue(now=NOW)
    sessions.revoke(cookie, now=NOW)
    assert sessions.verify(cookie, now=NOW) is None
    for _ in range(MAX_REVOKED + 10):
        sessions.revoke(sessions.issue(now=NOW), now=NOW)
    assert len(sessions._revoked) == MAX_REVOKED
    # Logouts whose session has expired anyway are forgotten first.
    sessions.revoke(sessions.issue(now=NOW + SESSION_SECONDS * 2), now=NOW + SESSION_SECONDS * 2)
    assert len(sessions._revoked) == 1


def test_the_limiter_allows_a_burst_per_address_then_refills() -> None:
    limiter = LoginLimiter(per_address=Rate(2, burst=5), overall=Rate(100, burst=100))
    assert all(limiter.allow("10.0.0.1", now=10.0) for _ in range(5))
    assert not limiter.allow("10.0.0.1", now=10.0)
    assert limiter.allow("10.0.0.2", now=10.0)  # another address has its own
    assert limiter.allow("10.0.0.1", now=10.6)  # half a second on: one more
    assert not limiter.allow("10.0.0.1", now=10.6)


def test_the_limiter_has_a_ceiling_over_every_address() -> None:
    limiter = LoginLimiter(per_address=Rate(2, burst=5), overall=Rate(10, burst=10))
    allowed = sum(limiter.allow(f"10.0.{i // 250}.{i % 250}", now=5.0) for i in range(100))
    assert allowed == 10


def test_the_limiter_keeps_a_bounded_number_of_addresses() -> None:
    limiter = LoginLimiter(overall=Rate(0), max_addresses=100)
    for i in range(1000):
        limiter.allow(f"addr-{i}", now=1.0)
    assert len(limiter) == 100
