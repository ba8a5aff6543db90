"""Channel namespaces and Centrifugo's permission decision order, table by table.

Each order is checked twice: through the rules' numbered methods, and as the protocol
derives it from the hub's neutral decisions (realtime_centrifuge.policy).
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from realtime_centrifuge.codes import Error
from realtime_centrifuge.policy import asks_hook, publish_verdict, subscribe_verdict, verdict
from realtime_hub.channels import (
    ChannelRules,
    HookAnswer,
    NamespaceOptions,
    parse_duration,
)

RULES = ChannelRules.from_config(
    {
        "without_namespace": {"allow_subscribe_for_client": True},
        "namespaces": [
            {
                "name": "open",
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            {"name": "users", "allow_subscribe_for_client": True},
            {"name": "closed"},
            {"name": "dialog", "allow_user_limited_channels": True},
            {
                "name": "dialog_open",
                "allow_user_limited_channels": True,
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            {"name": "pub_client", "allow_publish_for_client": True},
            {
                "name": "pub_anon",
                "allow_publish_for_client": True,
                "allow_publish_for_anonymous": True,
            },
            {"name": "pub_sub", "allow_publish_for_subscriber": True},
            {
                "name": "pub_sub_anon",
                "allow_publish_for_subscriber": True,
                "allow_publish_for_anonymous": True,
            },
        ],
    }
)
CUSTOM = Error(4003, "custom refusal")


def code(error: Error | None) -> int | None:
    return None if error is None else error.code


def test_defaults_open_nothing() -> None:
    rules = ChannelRules()
    assert rules.namespace_of("plain") == NamespaceOptions()
    assert rules.can_subscribe("42", "plain", False) is not None
    assert rules.can_publish("42", "plain", True) is not None
    assert rules.namespace_of("chat:x") is None
    assert (
        rules.max_channel_length,
        rules.namespace_boundary,
        rules.user_boundary,
        rules.user_separator,
        rules.private_prefix,
    ) == (255, ":", "#", ",", "$")


def test_namespace_of_splits_at_the_first_boundary_after_the_private_prefix() -> None:
    assert RULES.namespace_name("users:a:b") == "users"
    assert RULES.namespace_name("$users:a") == "users"
    assert RULES.namespace_name("plain") == ""
    assert RULES.namespace_name(":plain") == ""  # as Go: an empty namespace is the top one
    assert RULES.namespace_of("users:x") == RULES.namespaces["users"]
    assert RULES.namespace_of("$plain") == RULES.without_namespace
    assert RULES.namespace_of("nope:x") is None


def test_user_limited_channels() -> None:
    assert RULES.allowed_users("dialog:#42,43") == ("42", "43")
    assert RULES.allowed_users("dialog:a#b#42") == ("42",)
    assert RULES.allowed_users("dialog:x") == ()
    assert RULES.is_user_limited("dialog:#42")
    assert not RULES.is_user_limited("users:#42")  # the namespace does not allow them
    assert not RULES.is_user_limited("dialog:x")
    assert RULES.is_private("$x") and not RULES.is_private("x$")


def test_names() -> None:
    assert RULES.validate_name("a" * 255) is None
    assert code(RULES.validate_name("a" * 256)) == 107  # Go: ErrorBadRequest, not 106
    assert code(RULES.validate_name("")) == 107
    assert code(RULES.validate_name("é" * 128)) == 107  # bytes count, as in Go
    assert code(RULES.check_channel("users:é")) == 107  # ASCII only without channel_regex
    assert code(RULES.check_channel("nope:é")) == 102  # the namespace comes first
    assert RULES.check_channel("users:x") is None


@pytest.mark.parametrize(
    ("user", "channel", "token", "hook", "expected"),
    [
        # 1. Unknown namespace, bad names: before anything, a token included.
        ("42", "nope:x", False, None, 102),
        ("42", "nope:x", True, True, 102),
        ("42", "users:" + "x" * 250, True, None, 107),
        ("42", "users:é", True, None, 107),
        # 2. A valid subscription token is enough, even for closed and private channels.
        ("42", "closed:x", True, None, None),
        ("42", "$closed:x", True, False, None),
        ("", "$closed:x", True, None, None),
        # 3. A private channel needs a token: options and hooks cannot open it.
        ("42", "$users:x", False, None, 103),
        ("42", "$users:x", False, True, 103),
        # 4. User-limited channels: listed users only; the hook is not asked.
        ("42", "dialog:#42,43", False, None, None),
        ("43", "dialog:#42,43", False, False, None),
        ("44", "dialog:#42,43", False, None, 103),
        ("44", "dialog:#42,43", False, True, 103),
        ("", "dialog:#,42", False, None, 103),  # anonymous is never listed
        ("44", "dialog_open:#42", False, None, 103),  # not opened by allow_subscribe_*
        ("44", "users:#42", False, None, None),  # '#' is plain where not allowed
        # 5. The hook's answer, when it has one, over the namespace's options.
        ("42", "closed:x", False, True, None),
        ("42", "users:x", False, False, 103),
        ("42", "users:x", False, CUSTOM, 4003),
        ("", "closed:x", False, True, None),
        # 6. allow_subscribe_for_client (and _for_anonymous for "").
        ("42", "users:x", False, None, None),
        ("", "users:x", False, None, 103),
        ("", "open:x", False, None, None),
        ("42", "plain", False, None, None),
        # 7. Otherwise refused.
        ("42", "closed:x", False, None, 103),
    ],
)
def test_subscribe_decision_order(
    user: str, channel: str, token: bool, hook: HookAnswer, expected: int | None
) -> None:
    assert code(RULES.can_subscribe(user, channel, token, hook)) == expected
    assert code(subscribe_verdict(RULES, user, channel, token, hook)) == expected


@pytest.mark.parametrize(
    ("user", "channel", "token", "asks"),
    [
        ("42", "users:x", False, True),
        ("42", "closed:x", False, True),
        ("42", "users:x", True, False),
        ("42", "$users:x", False, False),
        ("42", "dialog:#42", False, False),
        ("42", "dialog:#43", False, False),
        ("42", "nope:x", False, False),
    ],
)
def test_hook_is_asked_only_where_it_decides(
    user: str, channel: str, token: bool, asks: bool
) -> None:
    assert RULES.subscribe_asks_hook(user, channel, token) is asks
    assert asks_hook(RULES.may_subscribe(user, channel, granted=token)) is asks


@pytest.mark.parametrize(
    ("user", "channel", "subscribed", "hook", "expected"),
    [
        ("42", "nope:x", True, True, 102),
        ("42", "pub_client:é", True, True, 107),
        # The hook decides first.
        ("42", "closed:x", False, True, None),
        ("42", "pub_client:x", True, False, 103),
        ("42", "pub_client:x", True, CUSTOM, 4003),
        # allow_publish_for_client, subscribed or not.
        ("42", "pub_client:x", False, None, None),
        ("", "pub_client:x", False, None, 103),
        ("", "pub_anon:x", False, None, None),
        # allow_publish_for_subscriber: only when subscribed.
        ("42", "pub_sub:x", False, None, 103),
        ("42", "pub_sub:x", True, None, None),
        ("", "pub_sub:x", True, None, 103),
        ("", "pub_sub_anon:x", True, None, None),
        # Subscribing rights do not give publishing rights.
        ("42", "users:x", True, None, 103),
        ("42", "closed:x", True, None, 103),
    ],
)
def test_publish_decision_order(
    user: str, channel: str, subscribed: bool, hook: HookAnswer, expected: int | None
) -> None:
    assert code(RULES.can_publish(user, channel, subscribed, hook)) == expected
    assert code(publish_verdict(RULES, user, channel, subscribed, hook)) == expected
    # The hook is asked exactly where the name and namespace are fine.
    assert asks_hook(RULES.may_publish(user, channel, subscribed=subscribed)) is (
        expected not in (102, 107)
    )


def test_hook_answer_must_be_one_of_the_four() -> None:
    with pytest.raises(TypeError):
        RULES.can_publish("42", "users:x", False, "yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        verdict(RULES.may_publish("42", "users:x"), "yes")  # type: ignore[arg-type]


def test_config_as_in_realtime_toml() -> None:
    rules = ChannelRules.from_config(
        {
            "without_namespace": {"allow_subscribe_for_client": True},
            "namespaces": [
                {
                    "name": "chat",
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    "history_size": 10,
                    "history_ttl": "5m30s",
                    "presence": True,
                }
            ],
            "max_length": 64,
            "private_prefix": "!",
        }
    )
    chat = rules.namespaces["chat"]
    assert chat.allow_publish_for_subscriber and chat.presence
    assert (chat.history_size, chat.history_ttl) == (10, 330.0)
    assert rules.max_channel_length == 64 and rules.private_prefix == "!"
    assert rules.without_namespace.allow_subscribe_for_client


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"namespaces": [{"name": "chat", "allow_subscribe": True}]},
            "channel.namespaces[0] (chat): unknown option 'allow_subscribe'",
        ),
        (
            {"namespaces": [{"name": "chat", "presence": "yes"}]},
            "channel.namespaces[0] (chat): presence must be true or false",
        ),
        ({"namespaces": [{"name": "chat", "history_size": -1}]}, "history_size"),
        ({"namespaces": [{"name": "chat", "history_size": True}]}, "history_size"),
        ({"namespaces": [{"name": "chat", "history_ttl": 300}]}, "history_ttl"),
        ({"namespaces": [{"name": "chat", "history_ttl": "5 minutes"}]}, "history_ttl"),
        ({"namespaces": [{"name": "chat"}, {"name": "chat"}]}, "'chat' is repeated"),
        ({"namespaces": [{"name": "c"}]}, "channel.namespaces[0]: name 'c'"),
        ({"namespaces": [{"name": "a:b"}]}, "name 'a:b'"),
        ({"namespaces": [{"presence": True}]}, "name None"),
        ({"namespaces": ["chat"]}, "channel.namespaces[0] must be a table"),
        ({"namespaces": {"chat": {}}}, "channel.namespaces must be an array"),
        (
            {"without_namespace": {"allow_publish": True}},
            "channel.without_namespace: unknown option 'allow_publish'",
        ),
        ({"without_namespace": True}, "channel.without_namespace must be a table"),
        ({"channel_regex": "x"}, "channel: unknown option 'channel_regex'"),
        ({"max_length": 0}, "max_length"),
        ({"user_boundary": ""}, "user_boundary"),
    ],
)
def test_config_errors_name_the_key_and_namespace(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ChannelRules.from_config(config)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("300s", 300.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("2m0.5s", 120.5),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "300", "-1s", "1d", "s", "1s ", "1.2.3s"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)
