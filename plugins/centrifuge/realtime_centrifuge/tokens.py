"""Connection and subscription JWTs, verified as Centrifugo's ``jwtverify`` does.

The algorithm comes from the configured keys, never from the token: an HMAC secret
allows HS256/384/512, an RSA public key RS256/384/512, an ECDSA public key
ES256/384/512. A token whose header names anything else (``none``, or HS256 when
only an RSA key is configured: the HMAC-with-the-public-key confusion) is invalid.
Tokens are never logged nor put into an exception's message.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

_HMAC = ("HS256", "HS384", "HS512")
_RSA = ("RS256", "RS384", "RS512")
_ECDSA = ("ES256", "ES384", "ES512")
#: Longest token verified, in characters: a few claims and a signature take far less,
#: and a bigger one would be decoded and hashed in full before being refused.
MAX_TOKEN_LENGTH = 16 * 1024


class TokenInvalid(Exception):
    """Bad signature, algorithm, audience, issuer or claims: connect closes with 3500."""


class TokenMismatch(TokenInvalid):
    """A valid subscription token for another channel, user or client.

    Centrifugo closes the connection with 3500 for it, while a subscription token
    that is merely invalid gets error 103.
    """


class TokenExpired(Exception):
    """``exp`` passed (or ``nbf`` not reached): error 109, the client gets a new token."""


class ExpiredConnection(Exception):
    """A valid token whose ``expire_at`` already passed: error 110."""

    def __init__(self, claims: ConnectionClaims) -> None:
        super().__init__("connection expiration must be later than now")
        #: The claims anyway, so checks Centrifugo makes first still come first.
        self.claims = claims


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    """A ``subs`` entry of a connection token: ``chan_info`` and subscribe ``data``."""

    info: Any = None
    data: Any = None


def _no_grants() -> Mapping[str, ChannelGrant]:
    return MappingProxyType({})


_NO_GRANTS = _no_grants()
#: Claims of a connection token that grants no channel, info or meta.
_PLAIN_CONNECTION = frozenset({"sub", "exp", "iat", "nbf", "jti", "aud", "iss", "expire_at"})


@dataclass(frozen=True, slots=True)
class ConnectionClaims:
    """What a connection token grants."""

    #: ``sub``; ``""`` is an anonymous user.
    user: str
    #: Unix time the connection must be refreshed by; None: never.
    expire_at: int | None = None
    #: ``info`` (or decoded ``b64info``): the connection's ``conn_info``.
    info: Any = None
    #: ``channels``: server-side subscriptions.
    channels: tuple[str, ...] = ()
    #: ``subs``: server-side subscriptions with info and data; wins over ``channels``.
    subs: Mapping[str, ChannelGrant] = field(default_factory=_no_grants)
    #: ``meta``: for the server only, never sent to clients.
    meta: Any = None

    @property
    def subscriptions(self) -> Mapping[str, ChannelGrant]:
        """Server-side subscriptions: ``subs`` if given, else ``channels``."""
        if self.subs:
            return self.subs
        if not self.channels:
            return _NO_GRANTS  # most tokens: no server-side subscription
        return MappingProxyType(dict.fromkeys(self.channels, ChannelGrant()))


@dataclass(frozen=True, slots=True)
class SubscriptionClaims:
    """What a subscription token grants for one channel."""

    user: str
    channel: str
    #: Deprecated ``client`` claim: the only client id the token is good for; "" any.
    client: str = ""
    #: Unix time the subscription must be refreshed by; None: never.
    expire_at: int | None = None
    #: ``info`` (or ``b64info``): the subscription's ``chan_info``.
    info: Any = None
    #: ``data`` (or ``b64data``): sent to the client in the subscribe result.
    data: Any = None


class TokenVerifier:
    """Verifies tokens against the configured keys; aud and iss only if configured."""

    def __init__(
        self,
        hmac_secret: str | None = None,
        rsa_public_key: str | None = None,
        ecdsa_public_key: str | None = None,
        audience: str | None = None,
        issuer: str | None = None,
    ) -> None:
        keys: dict[str, Any] = {}
        if hmac_secret:
            try:
                HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(hmac_secret)
            except jwt.PyJWTError as exc:
                raise ValueError(f"HMAC secret refused: {exc}") from None
            keys.update(dict.fromkeys(_HMAC, hmac_secret))
        if rsa_public_key:
            keys.update(dict.fromkeys(_RSA, _public_key(rsa_public_key, rsa.RSAPublicKey)))
        if ecdsa_public_key:
            key = _public_key(ecdsa_public_key, ec.EllipticCurvePublicKey)
            keys.update(dict.fromkeys(_ECDSA, key))
        self._keys: Mapping[str, Any] = MappingProxyType(keys)
        self._audience = audience or None
        self._issuer = issuer or None

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The algorithms a token may use, from the keys configured."""
        return tuple(self._keys)

    def _payload(self, token: str, now: float) -> dict[str, Any]:
        """Signature, aud and iss checked, then exp and nbf against ``now``."""
        if not isinstance(token, str):
            raise TokenInvalid("a token is a string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise TokenInvalid(f"a token over {MAX_TOKEN_LENGTH} characters")
        # PyJWT alone judges every token: a one-pass HMAC check beside it accepted
        # signatures in non-canonical base64url that PyJWT refuses (issue 18).
        payload = self._pyjwt(token)
        exp, nbf = payload.get("exp"), payload.get("nbf")
        if not (exp is None or _is_number(exp)) or not (nbf is None or _is_number(nbf)):
            raise TokenInvalid("exp and nbf must be numbers")
        if (exp is not None and exp <= now) or (nbf is not None and nbf > now):
            raise TokenExpired("token expired")
        return payload

    def _pyjwt(self, token: str) -> dict[str, Any]:
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
            key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
            if key is None or not isinstance(algorithm, str):
                raise TokenInvalid(f"algorithm {str(algorithm)[:16]!r} is not allowed")
            payload: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_exp": False,  # checked below against the session's clock
                    "verify_nbf": False,
                    "verify_iat": False,  # Centrifugo does not check iat
                    "verify_aud": self._audience is not None,
                    "verify_iss": self._issuer is not None,
                },
            )
        except jwt.PyJWTError as exc:
            raise TokenInvalid(f"{type(exc).__name__}: {exc}") from None
        return payload

    def verify_connection(self, token: str, now: float) -> ConnectionClaims:
        """A connection token's claims, or TokenInvalid / TokenExpired / ExpiredConnection."""
        payload = self._payload(token, now)
        if payload.keys() <= _PLAIN_CONNECTION:  # most tokens: who, and until when
            claims = ConnectionClaims(_user(payload), _expire_at(payload))
            if claims.expire_at is not None and claims.expire_at <= now:
                raise ExpiredConnection(claims)
            return claims
        if payload.get("channel") not in (None, ""):
            raise TokenInvalid("a connection token cannot have a channel claim")
        channels = payload.get("channels")
        if channels is None:
            channels = []
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise TokenInvalid("channels must be a list of strings")
        subs = payload.get("subs")
        if subs is None:
            subs = {}
        if not isinstance(subs, dict):
            raise TokenInvalid("subs must be an object")
        grants = {}
        for channel, grant in subs.items():
            if not channel or not isinstance(grant, dict):
                raise TokenInvalid("subs must map channels to objects")
            grants[channel] = ChannelGrant(
                info=_json_claim(grant, "info"), data=_json_claim(grant, "data")
            )
        claims = ConnectionClaims(
            user=_user(payload),
            expire_at=_expire_at(payload),
            info=_json_claim(payload, "info"),
            channels=tuple(dict.fromkeys(c for c in channels if c)),
            subs=MappingProxyType(grants),
            meta=_strict_json(payload.get("meta"), "meta"),
        )
        if claims.expire_at is not None and claims.expire_at <= now:
            raise ExpiredConnection(claims)
        return claims

    def verify_subscription(
        self, token: str, user: str, channel: str, client_id: str, now: float
    ) -> SubscriptionClaims:
        """A subscription token's claims for ``channel``, checked against the connection.

        TokenInvalid, TokenExpired, then TokenMismatch when valid but not for this
        channel, user (anonymous included) or client. ``expire_at`` is returned as is:
        the session answers 110 when it already passed.
        """
        payload = self._payload(token, now)
        token_channel = payload.get("channel")
        if not isinstance(token_channel, str) or not token_channel:
            raise TokenInvalid("a subscription token needs a channel claim")
        client = payload.get("client")
        if client is None:
            client = ""
        if not isinstance(client, str):
            raise TokenInvalid("client must be a string")
        claims = SubscriptionClaims(
            user=_user(payload),
            channel=token_channel,
            client=client,
            expire_at=_expire_at(payload),
            info=_json_claim(payload, "info"),
            data=_json_claim(payload, "data"),
        )
        if claims.channel != channel:
            raise TokenMismatch("token channel mismatch")
        if claims.user != user:
            raise TokenMismatch("token user mismatch")
        if claims.client and claims.client != client_id:
            raise TokenMismatch("token client mismatch")
        return claims


def _public_key(pem: str, kind: type) -> Any:
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot load the public key: {exc}") from None
    if not isinstance(key, kind):
        raise ValueError(f"the public key is not a {kind.__name__}")
    return key


def _is_number(value: Any) -> bool:
    """A JSON number: PyJWT's parser also takes NaN and Infinity, Go's does not."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _user(payload: Mapping[str, Any]) -> str:
    user = payload.get("sub")
    if user is None:
        return ""
    if not isinstance(user, str):
        raise TokenInvalid("sub must be a string")
    return user


def _expire_at(payload: Mapping[str, Any]) -> int | None:
    """``expire_at`` if present (0: never), else ``exp``, as Centrifugo reads them."""
    expire_at = payload.get("expire_at")
    if expire_at is None:
        exp = payload.get("exp")
        return None if exp is None else int(exp)
    if isinstance(expire_at, bool) or not isinstance(expire_at, int):
        raise TokenInvalid("expire_at must be an integer")
    return expire_at if expire_at > 0 else None


def _json_claim(claims: Mapping[str, Any], name: str) -> Any:
    """``name`` (any JSON value) or ``b64<name>`` (base64 of JSON text), which wins."""
    encoded = claims.get("b64" + name)
    if encoded is None or encoded == "":
        return _strict_json(claims.get(name), name)
    if not isinstance(encoded, str):
        raise TokenInvalid(f"b64{name} must be a string")
    try:
        text = base64.b64decode(encoded, validate=True).decode()
        return _strict_json(json.loads(text), name)
    except (binascii.Error, ValueError):
        raise TokenInvalid(f"b64{name} must be base64 of JSON") from None


def _strict_json(value: Any, name: str) -> Any:
    """``value`` if it is JSON a client can parse: no NaN or Infinity in it."""
    if value is None or isinstance(value, str):
        return value  # most claims: nothing to walk
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise TokenInvalid(f"{name} must be plain JSON") from None
    return value


class TokenSigner:
    """Mints HS256 tokens for drop-in scripts (a login page), with the HMAC secret.

    Only HMAC: with RSA or ECDSA the server holds public keys only, and tokens are
    minted wherever the private key lives.
    """

    def __init__(self, hmac_secret: str) -> None:
        if not hmac_secret:
            raise ValueError("minting tokens needs an HMAC secret")
        self._secret = hmac_secret

    def __repr__(self) -> str:
        return "TokenSigner(<secret>)"

    def connection_token(
        self,
        user: str,
        *,
        now: float,
        expire_in: float | None = 3600,
        info: Any = None,
        channels: Sequence[str] = (),
    ) -> str:
        claims: dict[str, Any] = {"sub": _checked_user(user), "iat": int(now)}
        if expire_in is not None:
            claims["exp"] = _expiry(now, expire_in)
        if info is not None:
            claims["info"] = _plain_json(info, "info")
        if channels:
            if isinstance(channels, str) or not all(isinstance(c, str) and c for c in channels):
                raise TypeError("channels is a list of channel names")
            claims["channels"] = list(channels)
        return jwt.encode(claims, self._secret, algorithm="HS256")

    def subscription_token(
        self,
        user: str,
        channel: str,
        *,
        now: float,
        expire_in: float | None = 3600,
        info: Any = None,
        data: Any = None,
    ) -> str:
        if not isinstance(channel, str) or not channel:
            raise TypeError("channel is a non-empty str")
        claims: dict[str, Any] = {"sub": _checked_user(user), "channel": channel, "iat": int(now)}
        if expire_in is not None:
            claims["exp"] = _expiry(now, expire_in)
        if info is not None:
            claims["info"] = _plain_json(info, "info")
        if data is not None:
            claims["data"] = _plain_json(data, "data")
        return jwt.encode(claims, self._secret, algorithm="HS256")


def _checked_user(user: Any) -> str:
    if not isinstance(user, str):
        raise TypeError(f'user is a str ("" for anonymous), got {type(user).__name__}')
    return user


def _expiry(now: float, expire_in: float) -> int:
    if isinstance(expire_in, bool) or not _is_number(expire_in) or expire_in <= 0:
        raise ValueError("expire_in is a positive number of seconds, or None for no expiry")
    return int(now + expire_in)


def _plain_json(value: Any, name: str) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a JSON value: {exc}") from None
    return value
