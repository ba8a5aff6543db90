"""Mercure JWTs: the configured key and algorithm only, claims bounded, where tokens come from."""

from __future__ import annotations

import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from realtime_mercure.auth import Unauthorized, Verifier, find_token

KEY = "mercure-unit-key-long-enough-for-hs256!"


def test_hs256_grant() -> None:
    token = jwt.encode(
        {"mercure": {"subscribe": ["*"], "publish": ["a"]}, "exp": time.time() + 60, "sub": "k"},
        KEY,
    )
    grant = Verifier(KEY, "HS256").verify(token)
    assert grant.subscribe == ("*",) and grant.publish == ("a",) and grant.subject == "k"
    assert grant.exp is not None and grant.exp > time.time()


def test_rs256_with_a_public_key_and_no_algorithm_from_the_token() -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    verifier = Verifier(public, "RS256")
    token = jwt.encode({"mercure": {"subscribe": ["x"]}}, private, algorithm="RS256")
    assert verifier.verify(token).subscribe == ("x",)
    # The public key as an HMAC secret: the classic confusion, refused.
    forged = jwt.api_jws.PyJWS().encode(b'{"mercure":{"subscribe":["*"]}}', b"k" * 40, "HS256")
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
    unsigned = jwt.encode({"mercure": {"subscribe": ["*"]}}, None, algorithm="none")
    with pytest.raises(Unauthorized):
        verifier.verify(unsigned + "x" * 41)


@pytest.mark.parametrize(
    "claims",
    [
        {"mercure": "all"},
        {"mercure": {"subscribe": "*"}},
        {"mercure": {"subscribe": [1]}},
        {"mercure": {"subscribe": ["x" * 256]}},
        {"mercure": {"publish": ["*"] * 257}},
        {"mercure": {}, "exp": 1},
    ],
)
def test_bad_claims_are_unauthorized(claims: dict[str, object]) -> None:
    with pytest.raises(Unauthorized):
        Verifier(KEY, "HS256").verify(jwt.encode(claims, KEY))


def test_a_role_without_a_key_takes_no_token() -> None:
    with pytest.raises(Unauthorized):
        Verifier("", "HS256").verify(jwt.encode({}, KEY))


def scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"headers": list(headers)}


def test_where_a_token_comes_from() -> None:
    token = "t" * 50
    bearer = (b"authorization", f"Bearer {token}".encode())
    cookie = (b"cookie", f"other=1; mercureAuthorization={token}".encode())
    assert find_token(scope(bearer), {}, post=True, origin_allowed=False) == token
    assert (
        find_token(scope(), {"authorization": [token]}, post=False, origin_allowed=False) == token
    )
    assert find_token(scope(cookie), {}, post=False, origin_allowed=False) == token
    assert find_token(scope(cookie), {}, post=True, origin_allowed=True) == token
    assert find_token(scope(), {}, post=False, origin_allowed=False) is None
    with pytest.raises(Unauthorized):
        find_token(scope(cookie), {}, post=True, origin_allowed=False)
    with pytest.raises(Unauthorized):
        find_token(scope((b"authorization", b"Basic abc")), {}, post=False, origin_allowed=True)
    with pytest.raises(Unauthorized):
        find_token(scope(), {"authorization": [token, token]}, post=False, origin_allowed=True)
