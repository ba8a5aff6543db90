"""A session's personal channel, session id and cache-mode options, without sockets
(issue 21, items 4 and 5); over real WebSockets: tests/integration/."""

from __future__ import annotations

import pytest

from realtime_centrifuge import ChannelRules, Session, SessionOptions, TokenVerifier
from realtime_hub.channels import NamespaceOptions

from .test_centrifuge_session import CLIENT, RULES, SECRET, Clock, FakeBackend, send, token


def session(**options: object) -> tuple[Session, FakeBackend]:
    backend = FakeBackend()
    made = Session(
        RULES,
        TokenVerifier(hmac_secret=SECRET),
        backend,
        options=SessionOptions(**options),  # type: ignore[arg-type]
        client_id=CLIENT,
        clock=Clock(),
        session_id="9d1e",
    )
    return made, backend


async def test_the_connect_result_carries_the_session_id_and_the_personal_channel() -> None:
    s, backend = session(personal_channel_namespace="")
    (reply,) = await send(s, {"id": 1, "connect": {"token": token(sub="42")}})
    assert reply["connect"]["session"] == "9d1e"
    assert reply["connect"]["subs"] == {"#42": {}}
    assert s.channels == {"#42"} and backend.joined() == ["#42"]


async def test_anonymous_users_and_an_unknown_namespace() -> None:
    anonymous, _ = session(
        personal_channel_namespace="", allow_anonymous_connect_without_token=True
    )
    (reply,) = await send(anonymous, {"id": 1, "connect": {}})
    assert "subs" not in reply["connect"] and anonymous.channels == frozenset()
    unknown, _ = session(personal_channel_namespace="nope")
    (reply,) = await send(unknown, {"id": 1, "connect": {"token": token(sub="42")}})
    assert reply["error"]["code"] == 102  # Go: the personal channel's namespace is unknown


def test_personal_channel_names_follow_the_boundaries() -> None:
    assert RULES.personal_channel("42") == "#42"
    assert RULES.personal_channel("42", "personal") == "personal:#42"
    custom = ChannelRules.from_config({"namespace_boundary": "/", "user_boundary": "@"})
    assert custom.personal_channel("42", "me") == "me/@42"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"force_recovery_mode": "latest"}, "'stream' or 'cache'"),
        ({"force_recovery_mode": True}, "'stream' or 'cache'"),
        ({"auto_cache_recover": True, "force_recovery": True}, "auto_cache_recover"),
        ({"auto_cache_recover": True, "force_recovery_mode": "cache"}, "auto_cache_recover"),
    ],
)
def test_recovery_mode_options_are_checked(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NamespaceOptions.from_config(table, "channel.without_namespace")


def test_cache_mode_is_read_from_the_configuration() -> None:
    options = NamespaceOptions.from_config(
        {"force_recovery": True, "force_recovery_mode": "cache", "auto_cache_recover": True},
        "here",
    )
    assert options.cache_recovery and options.auto_cache_recover
    assert not NamespaceOptions().cache_recovery
