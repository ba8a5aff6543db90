"""Connection and subscription JWTs: what Centrifugo accepts, refuses, and why."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from realtime_centrifuge.tokens import (
    MAX_TOKEN_LENGTH,
    ChannelGrant,
    ExpiredConnection,
    TokenExpired,
    TokenInvalid,
    TokenMismatch,
    TokenVerifier,
)

NOW = 1_700_000_000.0
#: Long enough for HS512 (PyJWT warns about shorter keys, and warnings fail tests).
SECRET = "s3cret-" * 10


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return public.decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def hs(claims: dict[str, Any], secret: str = SECRET, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=algorithm)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A token PyJWT would refuse to make: any header, HMAC-SHA256 with any bytes."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{b64url(signature)}"


VERIFIER = TokenVerifier(hmac_secret=SECRET)


def test_connection_token_claims() -> None:
    token = hs(
        {
            "sub": "42",
            "exp": NOW + 600,
            "info": {"name": "Ann"},
            "channels": ["news", "", "news"],
            "meta": {"plan": "pro"},
        }
    )
    claims = VERIFIER.verify_connection(token, NOW)
    assert claims.user == "42"
    assert claims.expire_at == NOW + 600  # no expire_at: exp is the connection's expiry
    assert claims.info == {"name": "Ann"}
    assert claims.channels == ("news",)
    assert claims.meta == {"plan": "pro"}
    assert dict(claims.subscriptions) == {"news": ChannelGrant()}


def test_subs_claim_wins_over_channels_and_b64_decodes() -> None:
    info = base64.b64encode(json.dumps({"role": "admin"}).encode()).decode()
    token = hs(
        {
            "sub": "42",
            "channels": ["a"],
            "b64info": info,
            "subs": {"b": {"info": {"x": 1}, "data": [1]}, "c": {"b64data": info}},
        }
    )
    claims = VERIFIER.verify_connection(token, NOW)
    assert claims.info == {"role": "admin"}
    assert claims.expire_at is None
    assert dict(claims.subscriptions) == {
        "b": ChannelGrant(info={"x": 1}, data=[1]),
        "c": ChannelGrant(data={"role": "admin"}),
    }


def test_anonymous_token_and_every_hmac_algorithm() -> None:
    for algorithm in ("HS256", "HS384", "HS512"):
        assert VERIFIER.verify_connection(hs({}, algorithm=algorithm), NOW).user == ""


def test_expire_at_semantics() -> None:
    # expire_at > 0 is the connection's expiry, whatever exp says.
    token = hs({"sub": "1", "exp": NOW + 60, "expire_at": int(NOW) + 3600})
    assert VERIFIER.verify_connection(token, NOW).expire_at == int(NOW) + 3600
    # expire_at 0: the connection never expires, though the token does.
    token = hs({"sub": "1", "exp": NOW + 60, "expire_at": 0})
    assert VERIFIER.verify_connection(token, NOW).expire_at is None
    # expire_at in the past with a valid exp: error 110, claims still available.
    token = hs({"sub": "1", "exp": NOW + 60, "expire_at": int(NOW) - 1})
    with pytest.raises(ExpiredConnection) as caught:
        VERIFIER.verify_connection(token, NOW)
    assert caught.value.claims.user == "1"


def test_expired_token() -> None:
    with pytest.raises(TokenExpired):
        VERIFIER.verify_connection(hs({"sub": "1", "exp": NOW - 1}), NOW)
    with pytest.raises(TokenExpired):
        VERIFIER.verify_connection(hs({"sub": "1", "exp": NOW}), NOW)
    with pytest.raises(TokenExpired):
        VERIFIER.verify_connection(hs({"sub": "1", "nbf": NOW + 10}), NOW)
    # exp is checked against the clock given, not the machine's.
    assert VERIFIER.verify_connection(hs({"sub": "1", "exp": 100}), 99).user == "1"


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": 42},
        {"sub": "1", "exp": "soon"},
        {"sub": "1", "exp": True},
        {"sub": "1", "expire_at": 1.5},
        {"sub": "1", "channels": "news"},
        {"sub": "1", "channels": [1]},
        {"sub": "1", "subs": ["news"]},
        {"sub": "1", "subs": {"news": True}},
        {"sub": "1", "b64info": "%%%"},
        {"sub": "1", "b64info": base64.b64encode(b"not json").decode()},
        {"sub": "1", "channel": "news"},  # a subscription token used to connect
    ],
)
def test_invalid_connection_claims(claims: dict[str, Any]) -> None:
    with pytest.raises(TokenInvalid):
        VERIFIER.verify_connection(hs(claims), NOW)


def test_non_finite_numbers_are_invalid() -> None:
    # PyJWT's parser takes NaN/Infinity; Go's does not, and NaN would never expire.
    for claims in (
        {"sub": "1", "exp": float("nan")},
        {"sub": "1", "exp": float("inf")},
        {"sub": "1", "info": float("nan")},
    ):
        with pytest.raises(TokenInvalid):
            VERIFIER.verify_connection(hs(claims), NOW)


def test_wrong_signature_and_garbage() -> None:
    for token in (
        hs({"sub": "1"}, secret="other-" * 11),
        "abc",
        "",
        "a.b.c",
        hs({"sub": "1"})[:-3] + "AAA",
    ):
        with pytest.raises(TokenInvalid):
            VERIFIER.verify_connection(token, NOW)


def test_alg_none_is_refused() -> None:
    token = forge({"alg": "none", "typ": "JWT"}, {"sub": "admin"}, None)
    with pytest.raises(TokenInvalid):
        VERIFIER.verify_connection(token, NOW)
    with pytest.raises(TokenInvalid):
        VERIFIER.verify_connection(jwt.encode({"sub": "admin"}, "", algorithm="none"), NOW)


def test_rsa_and_key_confusion(rsa_key: rsa.RSAPrivateKey) -> None:
    public_pem = pem(rsa_key)
    verifier = TokenVerifier(rsa_public_key=public_pem)
    assert verifier.algorithms == ("RS256", "RS384", "RS512")
    for algorithm in verifier.algorithms:
        token = jwt.encode({"sub": "42"}, rsa_key, algorithm=algorithm)
        assert verifier.verify_connection(token, NOW).user == "42"
    # The classic attack: HS256 signed with the public key as the HMAC secret.
    forged = forge({"alg": "HS256", "typ": "JWT"}, {"sub": "admin"}, public_pem.encode())
    with pytest.raises(TokenInvalid):
        verifier.verify_connection(forged, NOW)
    # Nor does an HMAC secret help when only RSA is configured.
    with pytest.raises(TokenInvalid):
        verifier.verify_connection(hs({"sub": "admin"}), NOW)
    # PS256 is not among the algorithms, though the key could verify it.
    with pytest.raises(TokenInvalid):
        verifier.verify_connection(jwt.encode({"sub": "1"}, rsa_key, algorithm="PS256"), NOW)


def test_ecdsa(ec_key: ec.EllipticCurvePrivateKey, rsa_key: rsa.RSAPrivateKey) -> None:
    verifier = TokenVerifier(ecdsa_public_key=pem(ec_key))
    token = jwt.encode({"sub": "7"}, ec_key, algorithm="ES256")
    assert verifier.verify_connection(token, NOW).user == "7"
    with pytest.raises(TokenInvalid):
        verifier.verify_connection(jwt.encode({"sub": "7"}, rsa_key, algorithm="RS256"), NOW)


def test_keys_are_checked_when_configured(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    with pytest.raises(ValueError, match="RSAPublicKey"):
        TokenVerifier(rsa_public_key=pem(ec_key))
    with pytest.raises(ValueError, match="EllipticCurvePublicKey"):
        TokenVerifier(ecdsa_public_key=pem(rsa_key))
    with pytest.raises(ValueError, match="cannot load"):
        TokenVerifier(rsa_public_key="not a pem")
    with pytest.raises(ValueError, match="HMAC"):
        TokenVerifier(hmac_secret=pem(rsa_key))  # a PEM is no HMAC secret
    assert TokenVerifier().algorithms == ()
    with pytest.raises(TokenInvalid):
        TokenVerifier().verify_connection(hs({"sub": "1"}), NOW)


def test_audience_and_issuer_only_when_configured() -> None:
    # Not configured: not checked, whatever the token says.
    assert VERIFIER.verify_connection(hs({"sub": "1", "aud": "x", "iss": "y"}), NOW).user == "1"
    verifier = TokenVerifier(hmac_secret=SECRET, audience="realtime", issuer="https://app")
    good = {"sub": "1", "aud": "realtime", "iss": "https://app"}
    assert verifier.verify_connection(hs(good), NOW).user == "1"
    assert verifier.verify_connection(hs({**good, "aud": ["other", "realtime"]}), NOW).user == "1"
    for bad in (
        {**good, "aud": "other"},
        {**good, "iss": "https://evil"},
        {"sub": "1", "iss": "https://app"},
        {"sub": "1", "aud": "realtime"},
    ):
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(hs(bad), NOW)


def test_token_never_appears_in_errors() -> None:
    token = hs({"sub": "1", "exp": "x"})
    for candidate in (token, token[:-4] + "AAAA", forge({"alg": "none"}, {}, None)):
        with pytest.raises(TokenInvalid) as caught:
            VERIFIER.verify_connection(candidate, NOW)
        assert candidate not in str(caught.value)
        assert candidate.split(".")[1] not in str(caught.value)


def test_subscription_token() -> None:
    token = hs(
        {
            "sub": "42",
            "channel": "$chat:1",
            "exp": NOW + 60,
            "info": {"r": "op"},
            "data": {"welcome": True},
            "client": "c1",
        }
    )
    claims = VERIFIER.verify_subscription(token, "42", "$chat:1", "c1", NOW)
    assert (claims.user, claims.channel, claims.client) == ("42", "$chat:1", "c1")
    assert (claims.expire_at, claims.info, claims.data) == (
        NOW + 60,
        {"r": "op"},
        {"welcome": True},
    )
    # expire_at 0: no expiry; in the past: returned as is (the session answers 110).
    token = hs({"sub": "42", "channel": "a", "expire_at": 0})
    assert VERIFIER.verify_subscription(token, "42", "a", "c1", NOW).expire_at is None
    token = hs({"sub": "42", "channel": "a", "expire_at": 5})
    assert VERIFIER.verify_subscription(token, "42", "a", "c1", NOW).expire_at == 5


@pytest.mark.parametrize(
    ("claims", "user", "channel"),
    [
        ({"sub": "42", "channel": "other"}, "42", "a"),  # another channel
        ({"sub": "43", "channel": "a"}, "42", "a"),  # another user
        ({"sub": "42", "channel": "a"}, "", "a"),  # anonymous connection, user's token
        ({"channel": "a"}, "42", "a"),  # anonymous token, user's connection
        ({"sub": "42", "channel": "a", "client": "c2"}, "42", "a"),  # another client
    ],
)
def test_subscription_token_mismatch(claims: dict[str, Any], user: str, channel: str) -> None:
    with pytest.raises(TokenMismatch):
        VERIFIER.verify_subscription(hs(claims), user, channel, "c1", NOW)


def test_subscription_token_invalid_or_expired() -> None:
    with pytest.raises(TokenExpired):
        VERIFIER.verify_subscription(hs({"sub": "", "channel": "a", "exp": NOW}), "", "a", "c", NOW)
    for claims in (
        {"sub": ""},
        {"sub": "", "channel": ""},
        {"sub": "", "channel": 1},
        {"sub": "", "channel": "a", "client": 5},
    ):
        with pytest.raises(TokenInvalid) as caught:
            VERIFIER.verify_subscription(hs(claims), "", "a", "c", NOW)
        assert not isinstance(caught.value, TokenMismatch)


def _tokens_for_the_fast_path() -> list[str]:
    """Valid and subtly broken HMAC tokens: the one-pass check must agree with PyJWT."""
    secret = "s" * 64  # long enough for HS512 without PyJWT's warning
    base = {"sub": "1", "aud": "app", "iss": "me"}
    good = jwt.encode(base, secret, algorithm="HS256")
    head, body, signature = good.split(".")
    tokens = [
        good,
        jwt.encode(base, secret, algorithm="HS384"),
        jwt.encode(base, secret, algorithm="HS512"),
        jwt.encode({**base, "aud": ["x", "app"]}, secret, algorithm="HS256"),
        jwt.encode({**base, "aud": "other"}, secret, algorithm="HS256"),
        jwt.encode({**base, "aud": ["other"]}, secret, algorithm="HS256"),
        jwt.encode({"sub": "1", "aud": "app"}, secret, algorithm="HS256"),  # no iss
        jwt.encode({**base, "iss": "you"}, secret, algorithm="HS256"),
        jwt.encode(base, "t" * 64, algorithm="HS256"),  # another secret
        jwt.encode(base, secret, algorithm="HS256", headers={"kid": "k1"}),
        jwt.encode(base, secret, algorithm="HS256", headers={"crit": ["exp"]}),
        jwt.encode(base, None, algorithm="none"),
        f"{head}.{body}.{signature[:-2]}",
        f"{head}.{body}.{signature}==",
        f"{head}.{body}=.{signature}",
        f"{head}.{body}.{signature}.",
        f"{head}.{body}",
        f"{head}..{signature}",
        f" {good}",
        good.replace(".", "..", 1),
        f"{head}.{body}.{signature}é",
        "",
        "...",
    ]
    # Fields PyJWT refuses unless they are strings.
    plain = {"alg": "HS256", "typ": "JWT"}
    for header, claims in (
        ({**plain, "kid": 5}, base),
        ({**plain, "kid": None}, base),
        (plain, {**base, "jti": 5}),
        (plain, {**base, "jti": None}),
        (plain, {**base, "sub": None}),
        (plain, {**base, "sub": 1}),
        (plain, {**base, "aud": ["app", 1]}),
    ):
        tokens.append(forge(header, claims, secret.encode()))
    # JSON with whitespace around or inside it, signed: json.loads takes both.
    for text in (
        b' {"sub": "1", "aud": "app", "iss": "me"}\n',
        b'{"sub":"1","aud":"app","iss":"me"}x',
    ):
        signing_input = f"{head}.{b64url(text)}"
        mac = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
        tokens.append(f"{signing_input}.{b64url(mac)}")
    return tokens


@pytest.mark.parametrize("token", _tokens_for_the_fast_path())
def test_every_token_gets_pyjwts_verdict(token: str) -> None:
    """Odd tokens (bad base64, extra fields, whitespace, other keys) are judged by PyJWT."""
    secret = "s" * 64
    verifier = TokenVerifier(hmac_secret=secret, audience="app", issuer="me")
    try:
        jwt.decode(
            token,
            secret,
            algorithms=["HS256", "HS384", "HS512"],
            audience="app",
            issuer="me",
            options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
        )
        expected = True
    except jwt.PyJWTError:
        expected = False
    try:
        verifier.verify_connection(token, 1000.0)
        accepted = True
    except TokenInvalid:
        accepted = False
    assert accepted == expected


def test_a_signature_in_non_canonical_base64url_is_refused() -> None:
    """An HS256 signature is 43 characters whose last carries 2 spare bits: the three
    other spellings of the same bytes used to pass the one-pass check (issue 18)."""
    verifier = TokenVerifier(hmac_secret=SECRET)
    token = jwt.encode({"sub": "1"}, SECRET, algorithm="HS256")
    signing_input, _, signature = token.rpartition(".")
    assert len(signature) == 43
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    assert last & 3 == 0  # canonical: the spare bits clear
    spellings = [signature[:-1] + alphabet[last | spare] for spare in (1, 2, 3)]
    assert verifier.verify_connection(token, NOW).user == "1"
    for spelling in spellings:
        assert base64.urlsafe_b64decode(spelling + "=") == base64.urlsafe_b64decode(
            signature + "="
        )  # the same bytes
        with pytest.raises(TokenInvalid):
            verifier.verify_connection(f"{signing_input}.{spelling}", NOW)


def test_a_token_over_the_size_bound_is_refused_unverified() -> None:
    verifier = TokenVerifier(hmac_secret=SECRET)
    big = jwt.encode({"sub": "1", "pad": "x" * MAX_TOKEN_LENGTH}, SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid, match="over"):
        verifier.verify_connection(big, NOW)
    fits = jwt.encode({"sub": "1", "pad": "x" * 1000}, SECRET, algorithm="HS256")
    assert verifier.verify_connection(fits, NOW).user == "1"
