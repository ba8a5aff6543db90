"""Pusher protocol 7 messages, names and the publication format, sans-IO."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from realtime_broker import Member, PresenceEvent, PresenceMode, Publication
from realtime_pusher import wire
from realtime_pusher.apps import make_apps
from realtime_pusher.node import PRESENCE_MODE, PusherFormat, PusherNode


def test_socket_ids_are_digits_dot_digits_and_differ() -> None:
    ids = {wire.new_socket_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"\d+\.\d+", socket_id) for socket_id in ids)


def test_connection_established_data_is_json_text() -> None:
    message = json.loads(wire.connection_established("1.2", 120))
    assert message["event"] == "pusher:connection_established"
    assert json.loads(message["data"]) == {"socket_id": "1.2", "activity_timeout": 120}


def test_errors_carry_an_object_and_subscription_errors_their_channel() -> None:
    assert json.loads(wire.error("no", 4301, "c")) == {
        "event": "pusher:error",
        "data": {"code": 4301, "message": "no"},
        "channel": "c",
    }
    assert json.loads(wire.subscription_error("private-a", "AuthError", "bad", 401)) == {
        "event": "pusher:subscription_error",
        "channel": "private-a",
        "data": {"type": "AuthError", "error": "bad", "status": 401},
    }


def test_presence_messages() -> None:
    succeeded = json.loads(
        wire.subscription_succeeded("presence-a", {"ids": ["1"], "hash": {"1": None}, "count": 1})
    )
    assert json.loads(succeeded["data"]) == {
        "presence": {"ids": ["1"], "hash": {"1": None}, "count": 1}
    }
    added = json.loads(wire.member_added("presence-a", "1", {"n": "x"}))
    assert json.loads(added["data"]) == {"user_id": "1", "user_info": {"n": "x"}}
    removed = json.loads(wire.member_removed("presence-a", "1"))
    assert json.loads(removed["data"]) == {"user_id": "1"}


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("news", True),
        ("A-z_0=9@,.;", True),
        ("x" * 200, True),
        ("x" * 201, False),
        ("", False),
        ("bad name", False),
        ("bad/name", False),
        ("ünicode", False),
        ("#server-to-user-7", True),
        ("#server-to-user-", False),
        ("#other", False),
        (5, False),
        (None, False),
    ],
)
def test_channel_names(name: Any, valid: bool) -> None:
    assert wire.valid_channel(name) is valid


def test_channel_kinds() -> None:
    kinds = [
        wire.channel_kind(name)
        for name in ("a", "private-a", "private-encrypted-a", "presence-a", "#server-to-user-1")
    ]
    assert kinds == ["public", "private", "encrypted", "presence", "user"]


@pytest.mark.parametrize(
    ("value", "user_id"),
    [("a", "a"), (42, "42"), (42.0, "42"), (4.5, None), (True, None), ("", None), (None, None)],
)
def test_user_ids(value: Any, user_id: str | None) -> None:
    assert wire.user_id_of(value) == user_id


def test_the_format_strips_the_prefix_and_names_a_default_event() -> None:
    fmt = PusherFormat("2:", "message")
    assert json.loads(fmt.encode("2:news", Publication("hi")) or "") == {
        "event": "message",
        "channel": "news",
        "data": "hi",
    }
    encoded = fmt.encode("2:c", Publication('{"a": 1}', json=True, event="e"))
    assert json.loads(encoded or "") == {"event": "e", "channel": "c", "data": '{"a": 1}'}
    relayed = fmt.encode("2:p", Publication("x", event="client-x", attrs={"user_id": "u"}))
    assert json.loads(relayed or "")["user_id"] == "u"


def test_the_format_sends_no_binary_and_no_presence_events() -> None:
    fmt = PusherFormat("", "message")
    assert fmt.encode("c", Publication(b"\x00")) is None
    assert fmt.encode("c", PresenceEvent(True, Member("1.2", "u"), True)) is None


def _policy(channel: str) -> PresenceMode | None:
    return PresenceMode(True, False) if channel == "x" else None


class _Broker:
    def __init__(self) -> None:
        self.presence_policy = _policy
        self.presence_handlers: list[Any] = []


class _Host:
    def __init__(self) -> None:
        self.settings: dict[str, Any] = {}


def test_presence_channels_of_every_app_are_tracked_and_others_as_before() -> None:
    apps = make_apps(
        [{"id": "1", "key": "k1", "secret": "s"}, {"id": "2", "key": "k2", "secret": "s"}]
    )
    node = PusherNode(_Host(), apps, None, _Broker())  # type: ignore[arg-type]
    node._policy = _policy
    assert node.presence_mode("presence-a") == PRESENCE_MODE
    assert node.presence_mode("2:presence-a") == PRESENCE_MODE
    assert node.presence_mode("x") == PresenceMode(True, False)
    assert node.presence_mode("news") is None
    assert node.app_of_bus("2:news") == (apps.by_id["2"], "news")
    assert node.app_of_bus("news") == (apps.by_id["1"], "news")
    assert node.user_channel(apps.by_id["2"], "7") == "2:#server-to-user-7"


@pytest.mark.parametrize(
    "event",
    ["pusher_internal:member_added", "pusher_internal:subscription_succeeded", "pusher:error"],
)
def test_a_foreign_publication_cannot_speak_for_the_protocol(event: str) -> None:
    # A Mercure update's type (or a script's event) is a publication's event: it must
    # not fake a presence member or an error to pusher-js.
    fmt = PusherFormat("", "message")
    data = json.dumps({"user_id": "admin", "user_info": {}})
    assert fmt.encode("presence-room", Publication(data, event=event)) is None
    assert fmt.encode("presence-room", Publication(data, event="update")) is not None
