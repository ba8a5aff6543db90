"""Redis Cluster's slots, sans-IO (issue 23): the URL, CLUSTER SLOTS, shards, names."""

from __future__ import annotations

import pytest

from realtime_broker.redis.clustered import RedisClusterBroker, publisher_options
from realtime_broker.redis.names import ClusterNames, Names
from realtime_broker.redis.slots import (
    SlotRange,
    first_in,
    owner,
    parse_slots,
    parse_url,
    shards,
    slot_of,
)

NAMES = ClusterNames("realtime")


def test_the_url_names_nodes_credentials_and_options() -> None:
    url = parse_url("redis+cluster://user:p%40ss@h1:7000,h2:7001,[::1]:7002?ssl_cert_reqs=none")
    assert url.nodes == (("h1", 7000), ("h2", 7001), ("::1", 7002))
    assert (url.username, url.password, url.scheme) == ("user", "p@ss", "redis")
    assert url.node_url("10.0.0.5", 7005) == (
        "redis://user:p%40ss@10.0.0.5:7005/0?ssl_cert_reqs=none"
    )
    assert url.node_url("::1", 7002) == "redis://user:p%40ss@[::1]:7002/0?ssl_cert_reqs=none"
    tls = parse_url("rediss+cluster://:pw@h1:7000/")
    assert (tls.scheme, tls.username, tls.password, tls.nodes) == (
        "rediss", None, "pw", (("h1", 7000),),
    )  # fmt: skip
    plain = parse_url("redis+cluster://h1:7000")
    assert (plain.username, plain.password) == (None, None)
    bad_urls = {
        "redis://h:1": "not a redis",
        "redis+cluster://": "no cluster node",
        "redis+cluster://h1": "host:port",
        "redis+cluster://h:1/3": "database 0",
    }
    for bad, why in bad_urls.items():
        with pytest.raises(ValueError, match=why):
            parse_url(bad)


def test_cluster_slots_replies_become_ranges_shards_and_owners() -> None:
    reply = [
        [5461, 10922, [b"127.0.0.1", 7001, b"id1", {}], [b"127.0.0.1", 7004, b"id4", {}]],
        [0, 5460, [b"127.0.0.1", 7000, b"id0", {}]],
        [10923, 16383, [b"127.0.0.1", 7002, b"id2", {}]],
    ]
    ranges = parse_slots(reply)
    assert ranges[0] == SlotRange(0, 5460, "127.0.0.1", 7000)
    assert owner(ranges, 5461) == ("127.0.0.1", 7001)
    assert owner(ranges, 16383) == ("127.0.0.1", 7002)
    parts = shards(ranges)
    assert [(min(p), max(p), len(p)) for p in parts] == [
        (0, 5460, 5461), (5461, 10922, 5462), (10923, 16383, 5461),
    ]  # fmt: skip
    # One primary serving two ranges is one shard.
    split = parse_slots([[0, 99, [b"a", 1]], [100, 16283, [b"b", 2]], [16284, 16383, [b"a", 1]]])
    assert sorted(len(p) for p in shards(split)) == [200, 16184]
    with pytest.raises(ValueError, match="serves 5461 of its 16384"):
        shards(ranges[:1])
    assert owner(ranges[:1], 9000) is None


def test_slots_follow_hash_tags_as_redis_does() -> None:
    # Redis's documented example (CLUSTER KEYSLOT foo); a tag hashes alone.
    assert slot_of("foo") == 12182
    assert slot_of("{user1000}.following") == slot_of("{user1000}.followers")
    assert slot_of("{user1000}.following") == slot_of("user1000")
    assert slot_of("foo{}{bar}") == slot_of("foo{}{bar}")  # empty tag: the whole key
    assert slot_of("foo{}{bar}") != slot_of("bar")


@pytest.mark.parametrize("channel", ["feed:a", "{x}", "a}:meta", "with space", "é", "n" * 255])
def test_a_channels_shard_channel_shares_its_keys_slot(channel: str) -> None:
    slot = slot_of(NAMES.key(channel))
    keys = [NAMES.meta_key(channel), NAMES.history_key(channel), *NAMES.presence_keys(channel)]
    assert {slot_of(key) for key in keys} == {slot}
    assert NAMES.channel_of(NAMES.key(channel).encode()) == channel
    assert slot_of(NAMES.control) == slot_of(NAMES.control_key(b"ab12"))


def test_cluster_names_read_back_only_their_own() -> None:
    assert NAMES.channel_of(b"realtime:{ch:}:channel") == ""
    assert NAMES.channel_of(b"realtime:{ch:x}") is None
    assert NAMES.channel_of(b"realtime:channel:x") is None
    assert NAMES.channel_of(b"realtime:{ch:\xff}:channel") is None
    assert NAMES.channel_of("realtime:{ch:x}:channel") is None  # not bytes
    assert (NAMES.publish_command, Names("realtime").publish_command) == ("SPUBLISH", "PUBLISH")


def test_a_beacon_is_found_in_any_shard_even_a_small_one() -> None:
    small = frozenset(range(100, 110))
    beacon = first_in(small, (NAMES.beacon(i) for i in range(1_000_000)))
    assert beacon is not None and slot_of(beacon) in small
    assert first_in(frozenset({5}), (NAMES.beacon(i) for i in range(10)), limit=10) is None


def test_the_publisher_gets_the_urls_credentials_and_tls_options() -> None:
    url = parse_url("rediss+cluster://u:p%40ss@h:1,h:2?ssl_cert_reqs=none&ssl_ca_certs=/ca.pem")
    assert publisher_options(url) == {
        "username": "u", "password": "p@ss", "ssl": True,
        "ssl_cert_reqs": "none", "ssl_ca_certs": "/ca.pem",
    }  # fmt: skip
    assert publisher_options(parse_url("redis+cluster://h:1")) == {"ssl": False}
    with pytest.raises(ValueError, match="cannot set bogus"):
        RedisClusterBroker("redis+cluster://h:1?bogus=1", {})
