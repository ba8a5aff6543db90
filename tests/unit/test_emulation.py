"""The emulation transports' pure parts: request parsing and the body framings."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from realtime_centrifuge.emulation import _json_request, protobuf_request
from realtime_centrifuge.emulation_routing import FORWARDED_KIB_BURST, Emulation, Refused
from realtime_centrifuge.node import Node
from realtime_centrifuge.protobuf import client_pb2 as pb
from realtime_hub.guard import IncomingLimits
from realtime_hub.httpstream import BARE, EVENTS, LINES


def test_a_protobuf_emulation_request_parses_as_the_generated_code_writes_it() -> None:
    request = pb.EmulationRequest(node="n1", session="s1", data=b"\x05hello")
    assert protobuf_request(request.SerializeToString()) == ("n1", "s1", b"\x05hello")
    # Unknown fields of every wire type are skipped, as protobuf allows.
    extra = b"\x20\x96\x01" + b"\x29" + b"\x00" * 8 + b"\x35" + b"\x00" * 4
    assert protobuf_request(request.SerializeToString() + extra)[2] == b"\x05hello"


@pytest.mark.parametrize(
    "body",
    [
        b"\x0a",  # a key, no length
        b"\x0a\x85",  # a truncated varint length
        b"\x0a\xff\xff\xff\xff\x07abc",  # a 2 GiB length prefix
        b"\x0a\x05ab",  # a field past the end
        b"\x0b",  # wire type 3 (groups): refused
        b"\x80" * 11,  # a varint over 10 bytes
        b"\x29\x00\x00",  # a fixed64 past the end
        b"\x0a\x02\xff\xfe",  # node not UTF-8
    ],
)
def test_a_malformed_protobuf_request_is_a_value_error(body: bytes) -> None:
    with pytest.raises(ValueError, match=r"varint|past the end|wire type|can't decode"):
        protobuf_request(body)


def test_a_json_request_needs_three_strings() -> None:
    assert _json_request(b'{"node":"a","session":"b","data":"{}"}') == ("a", "b", "{}")
    for body in (b'{"node":"a","session":"b"}', b'{"node":1,"session":"b","data":"x"}', b"[]"):
        with pytest.raises((KeyError, TypeError)):
            _json_request(body)
    with pytest.raises(ValueError, match="Expecting"):
        _json_request(b"{")


def test_each_body_framing_plain_and_chunked() -> None:
    assert LINES.plain.frame('{"a":1}\n{"b":2}') == b'{"a":1}\n{"b":2}\n'
    assert LINES.chunked.frame("{}") == b"3\r\n{}\n\r\n"
    assert BARE.plain.frame(b"\x02\x08\x01") == b"\x02\x08\x01"
    assert BARE.chunked.frame(b"\x02\x08\x01") == b"3\r\n\x02\x08\x01\r\n"
    assert EVENTS.plain.frame("one\ntwo") == b"data: one\ndata: two\n\n"
    assert EVENTS.chunked.frame("x") == b"9\r\ndata: x\n\n\r\n"
    # One object per kind: the hub groups a channel's subscribers by framing object.
    assert LINES.chunked is LINES.chunked and LINES.plain is not EVENTS.plain


# -- routing bounds (issue 21 red-team review) -----------------------------------------


class _Broker:
    """What :class:`Emulation` needs of a broker: a node list it reads slowly."""

    uid = "here"

    def __init__(self) -> None:
        self.listed = asyncio.Event()
        self.reads = 0
        self.published: list[bytes] = []

    def on_control(self, handler: object) -> Callable[[], None]:
        return lambda: None

    async def cluster_nodes(self) -> list[dict[str, object]]:
        self.reads += 1
        await self.listed.wait()
        return [{"uid": "here"}, {"uid": "there"}]

    async def publish_control(self, data: bytes) -> None:
        self.published.append(data)


def _layer(rate: int = 100) -> tuple[Emulation, _Broker]:
    broker = _Broker()
    node = SimpleNamespace(hub=SimpleNamespace(incoming=IncomingLimits(65536, rate)), broker=broker)
    return Emulation(node), broker  # type: ignore[arg-type]


async def test_a_session_longer_than_any_id_is_refused_and_nothing_kept() -> None:
    # Each session sent on gets a rate bucket keyed by its id: 64 KB ids would hold
    # 10,000 x 64 KB = 640 MB. The server's ids are UUIDs; a longer one is no session.
    layer, broker = _layer()
    broker.listed.set()
    with pytest.raises(Refused) as refused:
        await layer.dispatch("there", "s" * 60_000, "{}", "192.0.2.1")
    assert refused.value.status == 400
    assert layer._forwarded == {} and broker.published == []
    await layer.dispatch("there", str(uuid.uuid4()), "{}", "192.0.2.1")  # a real one is sent
    assert len(broker.published) == 1


async def test_requests_for_unknown_nodes_count_against_their_address() -> None:
    # A 404 costs a read of the cluster's node list now and then: made-up nodes must
    # not let one address past its rate (nor past it with the list being read).
    layer, broker = _layer(rate=10)
    broker.listed.set()
    statuses = []
    for _ in range(layer.address_rate.burst + 1):
        with pytest.raises(Refused) as refused:
            await layer.dispatch("ghost", "s", "{}", "192.0.2.1")
        statuses.append(refused.value.status)
    assert statuses[:-1] == [404] * layer.address_rate.burst
    assert statuses[-1] == 429


async def test_bytes_sent_on_to_other_processes_are_bounded_per_address() -> None:
    # Every process parses every control message: one address's forwarded bytes are
    # bounded (FORWARDED_KIB_BURST at once), whatever its request count allows.
    layer, broker = _layer(rate=1000)
    broker.listed.set()
    command = "x" * 40_000  # about 40 KiB a request once wrapped
    for _ in range(FORWARDED_KIB_BURST // 40):  # the burst goes
        await layer.dispatch("there", str(uuid.uuid4()), command, "192.0.2.1")
    with pytest.raises(Refused) as refused:  # then it is refused
        await layer.dispatch("there", str(uuid.uuid4()), command, "192.0.2.1")
    assert refused.value.status == 429
    assert len(broker.published) == FORWARDED_KIB_BURST // 40
    assert sum(map(len, broker.published)) <= FORWARDED_KIB_BURST * 1024
    await layer.dispatch("there", str(uuid.uuid4()), command, "192.0.2.2")  # others go on


async def test_concurrent_requests_share_one_read_of_the_node_list() -> None:
    layer, broker = _layer(rate=0)
    waiting = [
        asyncio.ensure_future(layer.dispatch(f"node-{n}", "s", "{}", f"192.0.2.{n}"))
        for n in range(50)
    ]
    await asyncio.sleep(0)  # each request runs up to its wait on the list
    broker.listed.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, Refused) and result.status == 404 for result in results)
    assert broker.reads == 1


async def test_a_routed_request_for_another_node_is_not_parsed_by_this_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Every process hears every routed request (the control channel is broadcast):
    # one 64 KB request cost each of them two JSON parses, its node's listener's and
    # the Centrifuge node's, whoever held the session.
    layer, broker = _layer()
    broker.listed.set()
    await layer.dispatch("there", str(uuid.uuid4()), "x" * 60_000, "192.0.2.1")
    [routed] = broker.published
    parsed: list[object] = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda data, **kw: parsed.append(data) or loads(data, **kw))
    assert layer._control(routed) == 0  # this process is "here"
    assert Node._control(SimpleNamespace(), routed) == 0  # type: ignore[arg-type]
    assert parsed == []
