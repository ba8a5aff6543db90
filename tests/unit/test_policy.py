"""The hub's neutral channel policy: decisions, the default rules, and a protocol over them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from realtime_broker import PresenceMode
from realtime_hub.channels import ChannelRules, NamespaceOptions
from realtime_hub.errors import Refusal
from realtime_hub.policy import (
    ALLOW,
    ALLOW_UNLESS_EXTENDED,
    DENY,
    DENY_UNLESS_EXTENDED,
    ChannelPolicy,
    Decision,
    refuse,
)
from realtime_websocket.plugin import channel_of

APP_CONFIG = Path(__file__).parents[2] / "app" / "realtime.toml"


def test_a_decision_allows_unless_it_says_why_not() -> None:
    assert ALLOW.allowed and ALLOW.final
    assert not DENY.allowed and DENY.refusal is Refusal.PERMISSION_DENIED
    assert ALLOW_UNLESS_EXTENDED.allowed and not ALLOW_UNLESS_EXTENDED.final
    assert not DENY_UNLESS_EXTENDED.allowed and not DENY_UNLESS_EXTENDED.final
    assert refuse(Refusal.UNKNOWN_CHANNEL) is refuse(Refusal.UNKNOWN_CHANNEL)  # shared
    assert refuse(Refusal.UNKNOWN_CHANNEL) == Decision(Refusal.UNKNOWN_CHANNEL)


@pytest.mark.parametrize("open_decision", [ALLOW_UNLESS_EXTENDED, DENY_UNLESS_EXTENDED])
def test_an_extension_decides_only_where_the_decision_is_open(open_decision: Decision) -> None:
    assert open_decision.extended(None) is open_decision
    assert open_decision.extended(True) is ALLOW
    assert open_decision.extended(False) is DENY
    assert open_decision.extended(Refusal.LIMIT_EXCEEDED) == refuse(Refusal.LIMIT_EXCEEDED)
    for final in (ALLOW, DENY, refuse(Refusal.BAD_REQUEST)):
        for opinion in (True, False, Refusal.LIMIT_EXCEEDED, None):
            assert final.extended(opinion) is final
    with pytest.raises(TypeError, match="opinion"):
        open_decision.extended("yes")  # type: ignore[arg-type]


def test_the_neutral_rules_are_safe_and_name_no_application() -> None:
    rules = ChannelRules.neutral()
    assert isinstance(rules, ChannelPolicy)
    # Top-level channels: anyone reads, nobody but the server writes.
    assert rules.may_subscribe("", "default").allowed
    assert rules.may_subscribe("42", "news").allowed
    assert not rules.may_publish("42", "news", subscribed=True).allowed
    # No namespace, the demo's included; $ needs a grant.
    assert rules.namespaces == {}
    assert rules.may_subscribe("42", "chat:room").refusal is Refusal.UNKNOWN_CHANNEL
    assert rules.may_subscribe("", "$news") == DENY
    assert rules.may_subscribe("", "$news", granted=True) == ALLOW
    assert rules.history_of("news") is None and rules.presence_of("news") is None


def test_the_demo_rules_add_the_chat_rooms() -> None:
    demo = ChannelRules.demo()
    assert demo.without_namespace == ChannelRules.neutral().without_namespace
    assert set(demo.namespaces) == {"chat"}
    assert demo.namespaces["chat"] == NamespaceOptions(
        allow_subscribe_for_client=True,
        allow_publish_for_subscriber=True,
        history_size=100,
        history_ttl=600.0,
        force_recovery=True,
        allow_history_for_subscriber=True,
        presence=True,
        join_leave=True,
        force_push_join_leave=True,
        allow_presence_for_subscriber=True,
    )
    assert demo.may_subscribe("", "chat:room") == DENY_UNLESS_EXTENDED  # signed-in only
    assert demo.may_subscribe("42", "chat:room") == ALLOW_UNLESS_EXTENDED
    assert demo.may_publish("42", "chat:room", subscribed=True).allowed
    assert not demo.may_publish("42", "chat:room", subscribed=False).allowed
    assert demo.history_of("chat:room") == (100, 600.0)
    assert demo.presence_of("chat:room") == PresenceMode(True, True)


@pytest.mark.skipif(not APP_CONFIG.exists(), reason="the app ships no realtime.toml")
def test_the_demo_rules_are_what_the_app_configures() -> None:
    table = tomllib.loads(APP_CONFIG.read_text())["channel"]
    assert ChannelRules.from_config(table) == ChannelRules.demo()


@pytest.mark.parametrize(
    ("channel", "refusal"),
    [
        ("", Refusal.BAD_REQUEST),
        ("x" * 256, Refusal.BAD_REQUEST),
        ("\x01internal", Refusal.BAD_REQUEST),
        ("nowhere:x", Refusal.UNKNOWN_CHANNEL),
        ("é", Refusal.BAD_REQUEST),
        ("a\tb", Refusal.BAD_REQUEST),
    ],
)
def test_bad_names_are_refused_finally_before_anything_else(channel: str, refusal: Refusal) -> None:
    rules = ChannelRules.demo()
    assert rules.may_subscribe("42", channel, granted=True) == refuse(refusal)
    assert rules.may_publish("42", channel, subscribed=True) == refuse(refusal)


def test_user_limited_channels_are_decided_by_the_rules_alone() -> None:
    rules = ChannelRules.from_config(
        {"namespaces": [{"name": "dm", "allow_user_limited_channels": True}]}
    )
    assert rules.may_subscribe("42", "dm:#42,43") == ALLOW
    assert rules.may_subscribe("44", "dm:#42,43") == DENY
    assert rules.may_subscribe("", "dm:#42,43") == DENY


@dataclass(frozen=True)
class OnlyRooms:
    """A protocol's own policy over the hub's: it lets clients into ``room:*`` only."""

    inner: ChannelPolicy

    def may_subscribe(self, user: str, channel: str, *, granted: bool = False) -> Decision:
        if not channel.startswith("room:"):
            return DENY
        return self.inner.may_subscribe(user, channel, granted=granted)

    def may_publish(self, user: str, channel: str, *, subscribed: bool = False) -> Decision:
        return self.inner.may_publish(user, channel, subscribed=subscribed)

    def history_of(self, channel: str) -> tuple[int, float] | None:
        return self.inner.history_of(channel)

    def presence_of(self, channel: str) -> PresenceMode | None:
        return self.inner.presence_of(channel)


def scope(query: bytes = b"") -> dict[str, Any]:
    return {"type": "websocket", "query_string": query}


def test_the_raw_endpoint_asks_any_policy_through_the_interface() -> None:
    rules = ChannelRules.from_config(
        {
            "without_namespace": {
                "allow_subscribe_for_client": True,
                "allow_subscribe_for_anonymous": True,
            },
            "namespaces": [
                {
                    "name": "room",
                    "allow_subscribe_for_client": True,
                    "allow_subscribe_for_anonymous": True,
                }
            ],
        }
    )
    assert channel_of(scope(), rules) == "default"
    assert channel_of(scope(b"channel=room:a"), rules) == "room:a"
    wrapped = OnlyRooms(rules)
    assert isinstance(wrapped, ChannelPolicy)
    assert channel_of(scope(), wrapped) is None
    assert channel_of(scope(b"channel=room:a"), wrapped) == "room:a"
    assert channel_of(scope(b"channel=room:%01x"), wrapped) is None  # the inner one refuses


def test_the_raw_endpoint_takes_an_open_decision_as_it_is() -> None:
    """No hooks on the raw protocol: the policy's default answer is final for it."""
    rules = ChannelRules.demo()
    assert rules.may_subscribe("", "default") == ALLOW_UNLESS_EXTENDED
    assert channel_of(scope(b"channel=default"), rules) == "default"
    assert channel_of(scope(b"channel=chat:room"), rules) is None  # signed-in users only
    assert channel_of(scope(b"channel=%24secret"), rules) is None
    assert channel_of(scope(b"channel=nowhere:x"), rules) is None


def test_namespace_tables_may_be_read_only_mappings() -> None:
    """The demo's table is read-only: from_config takes any Mapping and sequence."""
    table = MappingProxyType({"namespaces": (MappingProxyType({"name": "ro"}),)})
    assert set(ChannelRules.from_config(table).namespaces) == {"ro"}
