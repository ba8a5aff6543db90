"""Pusher's signatures against the examples of Pusher's own auth reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_pusher.apps import make_apps, parse_apps
from realtime_pusher.signing import api_signature, body_md5, channel_auth, check_auth, user_auth

KEY, SECRET = "278d425bdf160c739803", "7ad3773142a6692b25b8"


def test_private_and_presence_auth_strings_are_pushers_examples() -> None:
    # pusher.com/docs/channels/library_auth_reference/auth-signatures
    assert channel_auth(KEY, SECRET, "1234.1234", "private-foobar") == (
        f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    )
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    assert channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", data) == (
        f"{KEY}:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    )


def test_auth_checks_are_exact_and_take_only_strings() -> None:
    good = channel_auth(KEY, SECRET, "1.2", "private-a")
    assert check_auth(good, good)
    assert not check_auth(good, good[:-1] + "0")
    assert not check_auth(good, None)
    assert not check_auth(good, "é" + good[1:])
    assert user_auth(KEY, SECRET, "1.2", "{}") != channel_auth(KEY, SECRET, "1.2", "{}")


def test_the_api_signature_sorts_lowercased_keys_and_skips_itself() -> None:
    body = b'{"name":"foo","channels":["project-3"],"data":"{}"}'
    params = {"auth_key": KEY, "auth_timestamp": "1353088179", "auth_version": "1.0",
              "body_md5": body_md5(body)}  # fmt: skip
    signed = api_signature(SECRET, "post", "/apps/3/events", params)
    assert signed == api_signature(
        SECRET, "POST", "/apps/3/events", {**params, "auth_signature": "x"}
    )
    assert signed != api_signature(SECRET, "POST", "/apps/4/events", params)


def test_apps_are_checked_and_only_the_first_shares_the_bare_channel_names() -> None:
    apps = make_apps(parse_apps('[{"id": 1, "key": "k1", "secret": "s"}, '
                                '{"id": "2", "key": "k2", "secret": "t"}]'))  # fmt: skip
    first, second = apps.by_key["k1"], apps.by_key["k2"]
    assert (first.id, apps.prefix(first), apps.prefix(second)) == ("1", "", "2:")
    for bad in ('[{"id": "1", "key": "k"}]', '[{"id": "1/x", "key": "k", "secret": "s"}]',
                '[{"id": "1", "key": "k", "secret": "s", "colour": 1}]',
                '[{"id": "1", "key": "k", "secret": "s"}, {"id": "1", "key": "j", "secret": "s"}]',
                "{nope"):  # fmt: skip
        with pytest.raises(ValueError, match=r"pusher_apps|Pusher app"):
            make_apps(parse_apps(bad))


def test_settings_that_hold_an_app_secret_are_never_echoed() -> None:
    from realtime.options import resolve
    from realtime_pusher.plugin import PUSHER_APP_SECRET, PUSHER_APPS

    broken = '[{"id": "1", "key": "k", "secret": "hunter2"'  # cut short: not JSON
    with pytest.raises(ValueError, match="REALTIME_PUSHER_APPS") as error:
        resolve([PUSHER_APPS], {}, {"REALTIME_PUSHER_APPS": broken})
    assert "hunter2" not in str(error.value)
    assert PUSHER_APP_SECRET.secret


@pytest.mark.parametrize("event", ["", "x" * 201, "pusher:ping", "pusher_internal:member_added"])
def test_a_default_event_pusher_clients_could_never_get_is_refused(
    event: str, tmp_path: Path
) -> None:
    from realtime import PluginError, create_app

    with pytest.raises((PluginError, ValueError), match="pusher-default-event"):
        create_app(tmp_path, settings={"pusher_default_event": event})
