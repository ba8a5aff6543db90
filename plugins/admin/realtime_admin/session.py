"""The admin page's login: a password compared in constant time, a signed session cookie.

Sans-IO: nothing here reads a request. The cookie holds no secret and no state the
server must keep: ``v1.<expiry>.<nonce>.<mac>``, the MAC an HMAC-SHA256 over the
expiry and nonce with a key derived from the password and a random salt made once
per server start (before ``--workers`` fork, so every worker takes the same
cookie). A restart, or a new password, signs every session out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from realtime.rate import Bucket, Rate

COOKIE = "realtime_admin"
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
#: A password longer than this is refused without being compared (bounded work).
MAX_PASSWORD = 1024
#: A cookie longer than this is not parsed.
MAX_COOKIE = 256
#: Logouts remembered until their session would have expired anyway.
MAX_REVOKED = 1024
_VERSION = "v1"


class Sessions:
    """Signs and checks session cookies and the CSRF token that goes with each."""

    def __init__(self, password: str, salt: bytes | None = None) -> None:
        if not password:
            raise ValueError("the admin page needs a password")
        salt = secrets.token_bytes(32) if salt is None else salt
        self._password = hashlib.sha256(password.encode()).digest()
        secret = b"realtime-admin-session\0" + password.encode()
        self._key = hmac.new(salt, secret, "sha256").digest()
        self._revoked: OrderedDict[str, int] = OrderedDict()

    def __repr__(self) -> str:
        return "<Sessions>"  # never the key

    def check_password(self, candidate: str) -> bool:
        """Constant time in the candidate's content (both sides hashed to one length)."""
        if len(candidate) > MAX_PASSWORD:
            return False
        digest = hashlib.sha256(candidate.encode(errors="surrogatepass")).digest()
        return hmac.compare_digest(digest, self._password)

    def _mac(self, message: str) -> str:
        return hmac.new(self._key, message.encode(), "sha256").hexdigest()

    def issue(self, now: float | None = None) -> str:
        """A fresh session cookie value, valid for :data:`SESSION_SECONDS`."""
        expiry = int(time.time() if now is None else now) + SESSION_SECONDS
        body = f"{_VERSION}.{expiry}.{secrets.token_hex(16)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, cookie: str | None, now: float | None = None) -> str | None:
        """The session's nonce if ``cookie`` is one of ours, unexpired and not logged out."""
        if not cookie or len(cookie) > MAX_COOKIE:
            return None
        parts = cookie.split(".")
        if len(parts) != 4 or parts[0] != _VERSION:
            return None
        body, mac = cookie.rpartition(".")[0], parts[3]
        if not hmac.compare_digest(self._mac(body), mac):
            return None
        try:
            expiry = int(parts[1])
        except ValueError:
            return None
        if expiry < (time.time() if now is None else now):
            return None
        nonce = parts[2]
        return None if nonce in self._revoked else nonce

    def csrf_token(self, nonce: str) -> str:
        """What the page must send in ``X-Admin-Token``: another site's form cannot."""
        return self._mac(f"csrf.{nonce}")

    def check_csrf(self, nonce: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(self.csrf_token(nonce), token)

    def revoke(self, cookie: str | None, now: float | None = None) -> None:
        """Log a session out for good (bounded: the oldest logouts are forgotten first)."""
        nonce = self.verify(cookie, now)
        if nonce is None:
            return
        self._revoked[nonce] = int(cookie.split(".")[1]) if cookie else 0
        clock = time.time() if now is None else now
        while self._revoked and (
            len(self._revoked) > MAX_REVOKED or next(iter(self._revoked.values())) < clock
        ):
            self._revoked.popitem(last=False)


class LoginLimiter:
    """A few login tries a second per address, and a ceiling over all of them.

    At most ``max_addresses`` buckets are kept (least recently used go first), so a
    flood of addresses costs bounded memory; the overall bucket still holds.
    """

    def __init__(
        self,
        per_address: Rate | None = None,
        overall: Rate | None = None,
        max_addresses: int = 4096,
    ) -> None:
        self.per_address = per_address or Rate(2, burst=5)
        self.overall = Bucket(overall or Rate(20, burst=20))
        self.max_addresses = max_addresses
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()

    def allow(self, address: str, now: float | None = None) -> bool:
        """Spend one try for ``address``; False when it (or everyone) is over the budget."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(address)
        if bucket is None:
            bucket = self._buckets[address] = Bucket(self.per_address)
            while len(self._buckets) > self.max_addresses:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(address)
        return bucket.take(now=now) and self.overall.take(now=now)

    def __len__(self) -> int:
        return len(self._buckets)
