"""Reply errors and close codes of the Centrifuge protocol: values clients branch on."""

from __future__ import annotations

import pickle

import pytest

from realtime_centrifuge import codes
from realtime_centrifuge.codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_NO_PONG,
    ERROR_INTERNAL,
    ERROR_OF,
    ERROR_PERMISSION_DENIED,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_SERVER,
    Disconnect,
    DisconnectError,
    Error,
    Refusal,
)

#: Exactly as centrifugal/centrifuge errors.go has them.
ERRORS = {
    "INTERNAL": (100, "internal server error", True),
    "UNAUTHORIZED": (101, "unauthorized", False),
    "UNKNOWN_CHANNEL": (102, "unknown channel", False),
    "PERMISSION_DENIED": (103, "permission denied", False),
    "METHOD_NOT_FOUND": (104, "method not found", False),
    "ALREADY_SUBSCRIBED": (105, "already subscribed", False),
    "LIMIT_EXCEEDED": (106, "limit exceeded", False),
    "BAD_REQUEST": (107, "bad request", False),
    "NOT_AVAILABLE": (108, "not available", False),
    "TOKEN_EXPIRED": (109, "token expired", False),
    "EXPIRED": (110, "expired", False),
    "TOO_MANY_REQUESTS": (111, "too many requests", True),
    "UNRECOVERABLE_POSITION": (112, "unrecoverable position", False),
}
#: Exactly as disconnect.go has them, with whether clients reconnect.
DISCONNECTS = {
    "SHUTDOWN": (3001, "shutdown", True),
    "SERVER_ERROR": (3004, "internal server error", True),
    "CONNECTION_EXPIRED": (3005, "connection expired", True),
    "SUBSCRIPTION_EXPIRED": (3006, "subscription expired", True),
    "SLOW": (3008, "slow", True),
    "WRITE_ERROR": (3009, "write error", True),
    "INSUFFICIENT_STATE": (3010, "insufficient state", True),
    "FORCE_RECONNECT": (3011, "force reconnect", True),
    "NO_PONG": (3012, "no pong", True),
    "TOO_MANY_REQUESTS": (3013, "too many requests", True),
    "STATE_INVALIDATED": (3014, "state invalidated", True),
    "INVALID_TOKEN": (3500, "invalid token", False),
    "BAD_REQUEST": (3501, "bad request", False),
    "STALE": (3502, "stale", False),
    "FORCE_NO_RECONNECT": (3503, "force disconnect", False),
    "CONNECTION_LIMIT": (3504, "connection limit", False),
    "CHANNEL_LIMIT": (3505, "channel limit", False),
    "INAPPROPRIATE_PROTOCOL": (3506, "inappropriate protocol", False),
    "PERMISSION_DENIED": (3507, "permission denied", False),
    "NOT_AVAILABLE": (3508, "not available", False),
    "TOO_MANY_ERRORS": (3509, "too many errors", False),
}


@pytest.mark.parametrize(("name", "expected"), ERRORS.items())
def test_error_constants(name: str, expected: tuple[int, str, bool]) -> None:
    error = getattr(codes, f"ERROR_{name}")
    assert (error.code, error.message, error.temporary) == expected
    assert Error(expected[0]) == error


@pytest.mark.parametrize(("name", "expected"), DISCONNECTS.items())
def test_disconnect_constants(name: str, expected: tuple[int, str, bool]) -> None:
    disconnect = getattr(codes, f"DISCONNECT_{name}")
    assert (disconnect.code, disconnect.reason, disconnect.reconnect) == expected


def test_every_neutral_refusal_has_its_number() -> None:
    """The hub says why; the protocol numbers it, with the same message."""
    assert set(ERROR_OF) == set(Refusal)
    for reason, error in ERROR_OF.items():
        assert error == getattr(codes, f"ERROR_{reason.name}")
        assert error.message == reason.message


def test_error_is_raisable_and_comparable() -> None:
    with pytest.raises(Error) as caught:
        raise Error(103)
    assert caught.value == ERROR_PERMISSION_DENIED
    assert caught.value is not ERROR_PERMISSION_DENIED
    assert str(caught.value) == "103: permission denied"
    assert hash(Error(100)) == hash(ERROR_INTERNAL)
    assert pickle.loads(pickle.dumps(ERROR_INTERNAL)) == ERROR_INTERNAL


def test_application_error_needs_a_message() -> None:
    custom = Error(4001, "quota reached", temporary=True)
    assert (custom.code, custom.message, custom.temporary) == (4001, "quota reached", True)
    assert Error(103, "no way").message == "no way"
    for bad in ((4001,), (0, "x"), (True, "x"), (2**32, "x"), (103, "")):
        with pytest.raises(ValueError, match=r"code|message"):
            Error(*bad)


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (3000, True),
        (3499, True),
        (3500, False),
        (3999, False),
        (4000, True),
        (4499, True),
        (4500, False),
        (4999, False),
    ],
)
def test_disconnect_reconnect_ranges(code: int, reconnect: bool) -> None:
    assert Disconnect(code, "x").reconnect is reconnect


def test_disconnect_must_fit_a_close_frame() -> None:
    Disconnect(4000, "é" * 61)  # 122 bytes
    with pytest.raises(ValueError, match="123 bytes"):
        Disconnect(4000, "x" * 124)
    with pytest.raises(ValueError, match="3000-4999"):
        Disconnect(1000, "normal")
    with pytest.raises(ValueError, match="3000-4999"):
        Disconnect(5000, "reserved")


def test_disconnect_error_carries_replies() -> None:
    exc = DisconnectError(DISCONNECT_NO_PONG, ["a", "b"])
    assert exc.disconnect == DISCONNECT_NO_PONG
    assert exc.replies == ("a", "b")
    assert DisconnectError(DISCONNECT_BAD_REQUEST).replies == ()
    assert str(exc) == "3012: no pong"


def test_unsubscribe_codes() -> None:
    assert (UNSUBSCRIBE_EXPIRED.code, UNSUBSCRIBE_EXPIRED.reason) == (2501, "subscription expired")
    assert UNSUBSCRIBE_EXPIRED.resubscribe
    assert not UNSUBSCRIBE_SERVER.resubscribe
