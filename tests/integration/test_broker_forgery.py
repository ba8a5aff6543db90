"""What someone allowed to PUBLISH on Redis can no longer do (issue 18, item 7).

No foreign bytes reach clients' frames as JSON (a JSON publication's body must be one
JSON document, a member's info is parsed and encoded again); a control message is applied only when
Redis holds the proof its sender left, once, and only for channels the server API
itself could name; internal channels are unreachable by name.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from realtime import get_host
from realtime_broker import Member, PresenceEvent, PresenceMode, Publication, get_broker
from realtime_broker.redis import CONTROL_MAGIC, MAGIC, Drop, RedisBroker, decode, member_of
from realtime_centrifuge.codec import encode_reply
from realtime_centrifuge.plugin import get_node
from realtime_centrifuge.transport import info_json, publication_object
from realtime_hub import ChannelRules

from ..conftest import RedisServer
from .test_broker_channels import SETTINGS
from .test_centrifuge_endpoint import connected, served_app
from .test_fanout import hypercorn

#: The data channel the server API's commands rode before the broker had a control
#: channel: refused to clients like every internal name.
CONTROL_CHANNEL = "\x01centrifuge-control"


async def read_all(ws: ClientConnection, frames: list[str]) -> None:
    """Every frame until the connection closes (raises ConnectionClosed then)."""
    async with asyncio.timeout(5):
        while True:
            frames.append(str(await ws.recv()))


@pytest.mark.parametrize(
    "body",
    [
        b"jnot json",  # a JSON publication whose data is not JSON
        b'j{"a":1}\n{"id":1}',  # two documents: a second frame in a client's message
        b"J3 \xff\xfe\xfd{}",  # publisher info that is not UTF-8
    ],
)
def test_a_publication_carrying_what_is_not_json_is_dropped(body: bytes) -> None:
    assert decode(MAGIC + b"ab12 7 " + body) is Drop.FOREIGN


def test_json_publications_and_infos_still_decode() -> None:
    got = decode(MAGIC + b'ab12 7 J12 {"user":"u"}{"a": [1, 2]}')
    assert got == Publication('{"a": [1, 2]}', True, '{"user":"u"}', "ab12", 7)
    assert decode(MAGIC + b"ab12 8 tnot json is fine as text") == Publication(
        "not json is fine as text", False, None, "ab12", 8
    )


def test_a_member_info_is_parsed_and_encoded_again() -> None:
    member = member_of(b"c1", b'1:u{ "name" :\n "Ann" }')
    assert member is not None and member.info == '{"name":"Ann"}'
    assert member_of(b"c1", b"1:u{not json") is None
    assert member_of(b"c1", b'1:u{"a":1}\n{"b":2}') is None
    assert member_of(b"c1", b"1:u") is not None  # no info at all


@pytest.mark.parametrize("name", [CONTROL_CHANNEL, "\x01other", "\x01"])
def test_internal_channels_are_refused_by_name_and_keep_no_presence_or_history(name: str) -> None:
    rules = ChannelRules.from_config(
        {"without_namespace": {"presence": True, "allow_subscribe_for_client": True}}
    )
    assert rules.validate_name(name) is not None
    assert rules.check_channel(name) is not None
    assert rules.presence_of(name) is None
    assert rules.history_of(name) is None


async def test_a_forged_control_message_is_not_applied_and_a_real_one_is(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    app = await served_app(tmp_path, broker=redis_server.url)
    async with hypercorn(app) as port:
        node = get_node(get_host(app))
        broker: Any = get_broker(get_host(app))
        victim = await connected(port, "victim")
        heard: list[bytes] = []
        broker.on_control(heard.append)
        await node.disconnect("nobody")  # a genuine one, and its proof
        async with asyncio.timeout(5):
            while not heard:
                await asyncio.sleep(0.01)
        (proof_key,) = redis_server.cli("KEYS", "realtime:control:*").split()
        ident = proof_key.rpartition(":")[2]
        forged = json.dumps(
            {"op": "disconnect", "user": "victim", "code": 3503, "reason": "forged"}
        )
        magic = CONTROL_MAGIC.decode()
        for raw in (
            f"{magic}{ident} {forged}",  # a real id, another body
            f"{magic}{'0' * 16} {forged}",  # an id with no proof
            f"{magic}{ident} {heard[0].decode()}",  # a replay of the real one
            f"{magic}short {forged}",  # malformed
        ):
            redis_server.cli("PUBLISH", "realtime:control", raw)
        # A subscribe to an internal channel, sent as the server API's would be:
        # refused by the channel checks when applied.
        await node._send_control(
            {"op": "subscribe", "user": "victim", "client": "", "channel": CONTROL_CHANNEL}
        )
        await node.disconnect("victim", reason="real")
        frames: list[str] = []
        with pytest.raises(ConnectionClosed) as closed:
            await read_all(victim.ws, frames)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (3503, "real")
        assert not any(CONTROL_CHANNEL in frame for frame in frames)  # never subscribed
        assert len(heard) == 3  # the three genuine ones, once each
        counts = broker.tally.counts
        assert counts["control forged"] == 2 and counts["control replayed"] == 1
        assert counts["foreign"] == 1


async def test_a_forged_join_or_leave_is_not_told_and_real_ones_are(
    redis_server: RedisServer,
) -> None:
    broker = RedisBroker(redis_server.url, SETTINGS)
    broker.presence_policy = lambda channel: PresenceMode(True, True)
    told: list[tuple[bool, str]] = []
    arrived = asyncio.Event()

    def seen(channel: str, event: PresenceEvent) -> None:
        told.append((event.joined, event.member.client))
        arrived.set()

    broker.on_presence(seen)
    await broker.start()
    try:
        broker.subscribe("room", lambda publication: 1)
        await broker.ready("room")
        await broker.join_presence("room", Member("c1", "u1", '{"a":1}'))
        async with asyncio.timeout(5):
            await arrived.wait()
        name = broker.key("room")
        redis_server.cli("PUBLISH", name, 'realtime/2p J2:c92:u9{"fake":true}')  # nobody
        redis_server.cli("PUBLISH", name, 'realtime/2p L2:c12:u1{"a":1}')  # still there
        await broker.join_presence("room", Member("c2", "u2"))
        async with asyncio.timeout(5):
            while len(told) < 2:
                arrived.clear()
                await arrived.wait()
        await broker.leave_presence("room", "c1")
        async with asyncio.timeout(5):
            while len(told) < 3:
                arrived.clear()
                await arrived.wait()
        assert told == [(True, "c1"), (True, "c2"), (False, "c1")]
        assert broker.tally.counts["presence unconfirmed"] == 2
    finally:
        await broker.close()


async def test_a_raw_websocket_cannot_listen_to_the_control_channel(tmp_path: Path) -> None:
    app = await served_app(tmp_path)
    async with hypercorn(app) as port:
        async with connect(f"ws://127.0.0.1:{port}/ws?channel=room") as allowed:
            assert allowed.protocol.state.name == "OPEN"
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}/ws?channel=%01centrifuge-control")
        assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    "info",
    ['{"user":"u"}{"x":1}', 'u"},"data":{"forged":1', "[1]", "not json"],
)
def test_publisher_info_that_is_not_a_json_object_is_left_out(info: str) -> None:
    """Info off Redis is spliced into frames: only a JSON object is; the rest is dropped,
    the publication itself still delivered."""
    pub = Publication('{"a":1}', True, info, "ab12", 3)
    assert info_json(pub) is None
    line = encode_reply(1, "history", {"publications": [publication_object(pub)]})
    assert json.loads(line)["history"]["publications"] == [{"data": {"a": 1}, "offset": 3}]
    good = Publication('{"a":1}', True, '{"user":"u"}', "ab12", 4)
    line = encode_reply(1, "history", {"publications": [publication_object(good)]})
    assert json.loads(line)["history"]["publications"][0]["info"] == {"user": "u"}
