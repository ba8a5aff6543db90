"""The NATS broker in this process, against a real nats-server: what each part promises.

Two brokers stand for two hosts. What a foreign publisher sends is dropped and counted
by kind; a control message is told once; node counts and channel maps cross; the
reference-counted subscription follows its last subscriber; a restart of nats-server
reports a loss on every channel subscribed here; rules keeping history or presence are
refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nats
import pytest

from realtime_broker import BrokerUnavailable, Publication
from realtime_broker.nats import HEADER, NatsBroker

from ..nats_server import NatsServer
from ..nats_server import nats_server as nats_server  # the fixture

SETTINGS = {"broker_timeout": 1.0, "broker_prefix": "realtime", "max_message_size": 1024}


async def until(check: Callable[[], object], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


@pytest.fixture
async def pair(nats_server: NatsServer) -> AsyncIterator[tuple[NatsBroker, NatsBroker]]:
    first = NatsBroker(nats_server.url, SETTINGS)
    second = NatsBroker(nats_server.url, SETTINGS)
    await first.start()
    await second.start()
    yield first, second
    await first.close()
    await second.close()


class Got:
    def __init__(self) -> None:
        self.items: list[Publication] = []

    def __call__(self, publication: Publication) -> int:
        self.items.append(publication)
        return 1


async def test_foreign_payloads_are_dropped_and_counted_by_kind(
    pair: tuple[NatsBroker, NatsBroker], nats_server: NatsServer
) -> None:
    first, second = pair
    got = Got()
    second.subscribe("room", got)
    await second.ready("room")
    told: list[bytes] = []
    second.on_control(told.append)
    intruder = await nats.connect(nats_server.url)
    try:
        subject = first.subjects.channel("room")
        await intruder.publish(subject, b"plain bytes")
        await intruder.publish(subject, HEADER + b"j{not json")
        await intruder.publish(subject, HEADER + b"t" + b"x" * 1025)
        await intruder.publish(subject, HEADER + b"T99999 {}x")  # info over its bound
        await intruder.publish("realtime.control", b"realtime/2c 0123456789abcdef hi")
        await intruder.publish("realtime.control", b"realtime/2c 0123456789abcdef hi")
        await intruder.publish("realtime.control", b"garbage")
        await intruder.publish("realtime.nodes", b'realtime/2n {"uid":"x","name":1}')
        await intruder.publish("realtime.channels", b"who are you", reply="_INBOX.x")
        await intruder.flush()
    finally:
        await intruder.close()
    await first.publish("room", Publication('{"ok":1}', json=True))
    await until(lambda: got.items)
    assert got.items == [Publication('{"ok":1}', json=True)]
    counts = second.tally.counts
    await until(lambda: counts["ask foreign"] == 1)
    assert counts["foreign"] == 2 and counts["oversized"] == 2
    # Told once: NATS permissions are the trust boundary; an id is not told twice.
    assert told == [b"hi"] and counts["control replayed"] == 1
    assert counts["control foreign"] == 1 and counts["node foreign"] == 1


async def test_control_messages_reach_every_process_once(
    pair: tuple[NatsBroker, NatsBroker],
) -> None:
    first, second = pair
    heard: dict[str, list[bytes]] = {"first": [], "second": []}
    first.on_control(heard["first"].append)
    second.on_control(heard["second"].append)
    await first.publish_control(b'{"op":"disconnect","user":"u"}')
    await until(lambda: heard["first"] and heard["second"])
    message = b'{"op":"disconnect","user":"u"}'
    assert heard == {"first": [message], "second": [message]}
    with pytest.raises(ValueError, match="over"):
        await first.publish_control(b"x" * (64 * 1024 + 1))


async def test_node_counts_and_channel_maps_cross_hosts(
    pair: tuple[NatsBroker, NatsBroker],
) -> None:
    first, second = pair
    first.add_counter(lambda: 3)
    first.add_channel_counter(lambda: {"x": 2})
    second.add_counter(lambda: 5)
    second.add_channel_counter(lambda: {"x": 1, "y": 4, "z": 0})
    await until(lambda: len(first._live_nodes()) == 1 and len(second._live_nodes()) == 1)
    await until(lambda: first._live_nodes()[0]["num_clients"] == 5)
    nodes = await first.cluster_nodes()
    assert sorted(node["num_clients"] for node in nodes) == [3, 5]
    assert {node["uid"] for node in nodes} == {first.uid, second.uid}
    assert await first.cluster_channels() == {"x": 3, "y": 4}
    assert await second.cluster_channels() == {"x": 3, "y": 4}
    assert await first.publish("anywhere", "hi") == 8
    await second.close()  # says goodbye: forgotten at once, not after NODE_TTL
    await until(lambda: not first._live_nodes(), timeout=2)
    assert await first.cluster_channels() == {"x": 2}


async def test_a_channel_is_listened_to_while_it_has_a_subscriber(
    pair: tuple[NatsBroker, NatsBroker],
) -> None:
    first, second = pair
    one, two = Got(), Got()
    second.subscribe("c", one)
    second.subscribe("c", two)
    await second.ready("c")
    await first.publish("c", "a")
    await until(lambda: one.items and two.items)
    second.unsubscribe("c", one)
    await first.publish("c", "b")
    await until(lambda: len(two.items) == 2)
    assert [p.data for p in one.items] == ["a"]
    second.unsubscribe("c", two)
    await until(lambda: "c" not in second._subs)
    # Subscribed again: a fresh subscription, confirmed before ready() returns.
    second.subscribe("c", one)
    await second.ready("c")
    await first.publish("c", "c")
    await until(lambda: len(one.items) == 2)
    assert [p.data for p in one.items] == ["a", "c"] and len(two.items) == 2
    with pytest.raises(ValueError, match="not subscribed"):
        await second.ready("nothing")


async def test_a_restart_of_nats_reports_a_loss_on_every_channel_subscribed_here(
    pair: tuple[NatsBroker, NatsBroker], nats_server: NatsServer
) -> None:
    first, second = pair
    losses: list[tuple[str, int]] = []
    second.on_loss(lambda channel, missed: losses.append((channel, missed)))
    got = Got()
    for channel in ("a", "b.c", "d e"):
        second.subscribe(channel, got)
        await second.ready(channel)
    nats_server.stop()
    await until(lambda: not first.up and not second.up)
    assert second.problem() is None  # down for every process alike: broadcasts 503
    with pytest.raises(BrokerUnavailable):
        await first.publish("a", "lost")
    second.subscribe("late", got)
    with pytest.raises(BrokerUnavailable, match="did not confirm"):
        await second.ready("late")
    nats_server.start()
    await until(lambda: len(losses) == 4, timeout=15)
    assert sorted(losses) == [("a", 1), ("b.c", 1), ("d e", 1), ("late", 1)]
    await second.ready("late")
    await until(lambda: first.up)
    await first.publish("late", "back")
    await until(lambda: got.items)
    assert [p.data for p in got.items] == ["back"] and second.reconnects == 1


async def test_rules_keeping_history_or_presence_are_refused(nats_server: NatsServer) -> None:
    rules = {"namespaces": [{"name": "chat"}]}
    broker = NatsBroker(nats_server.url, {**SETTINGS, "channel": rules})

    def history(channel: str) -> Any:
        return (10, 60.0) if channel.startswith("chat:") else None

    broker.history_policy = history
    with pytest.raises(ValueError, match=r"namespace 'chat' \(history\).*Redis"):
        await broker.start()
    await broker.close()
    broker = NatsBroker(nats_server.url, SETTINGS)
    broker.presence_policy = lambda channel: object()  # type: ignore[assignment,return-value]
    with pytest.raises(ValueError, match=r"top-level channels \(presence\)"):
        await broker.start()
    await broker.close()


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed: (ca, cert, key) PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "realtime test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


async def test_nats_tls_with_the_system_s_trust_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """nats+tls:// verifies the server against the system's CAs (here SSL_CERT_FILE)."""
    ca, cert, key = _tls_files(tmp_path)
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir, "--tls", "--tlscert", str(cert), "--tlskey", str(key)).start()
    url = f"nats+tls://127.0.0.1:{server.port}"
    untrusting = NatsBroker(url, SETTINGS)  # the CA is not in the trust store yet
    try:
        await untrusting.start()  # serves anyway, not connected, after 3 timeouts
        assert not untrusting.up
        assert untrusting.tally.counts["nats SSLCertVerificationError"] >= 1
    finally:
        await untrusting.close()
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    first, second = NatsBroker(url, SETTINGS), NatsBroker(url, SETTINGS)
    try:
        await first.start()
        await second.start()
        assert first.up and second.up
        got = Got()
        second.subscribe("secure", got)
        await second.ready("secure")
        # At most once: a TLS connection nats-py drops and makes again just after
        # start-up (APPLICATION_DATA_AFTER_CLOSE_NOTIFY, now and then) may lose one.
        async with asyncio.timeout(10):
            while not got.items:
                await first.publish("secure", "over tls")
                await asyncio.sleep(0.5)
        assert {p.data for p in got.items} == {"over tls"}
    finally:
        await first.close()
        await second.close()
        server.stop()


async def test_credentials_in_the_url_are_nats_s_trust_boundary(tmp_path: Path) -> None:
    workdir = tmp_path / "nats"
    workdir.mkdir()
    server = NatsServer(workdir, "--user", "realtime", "--pass", "s3cr#t").start()
    good = NatsBroker(f"nats://realtime:s3cr%23t@127.0.0.1:{server.port}", SETTINGS)
    bad = NatsBroker(f"nats://127.0.0.1:{server.port}", SETTINGS)
    try:
        await good.start()
        assert good.up
        await good.publish("x", "fine")
        await bad.start()  # refused by NATS: serves, but every broadcast is a 503
        assert not bad.up
        with pytest.raises(BrokerUnavailable):
            await bad.publish("x", "refused")
        assert bad.tally.counts["nats Error"] >= 1  # nats-py: "Authorization Violation"
    finally:
        await good.close()
        await bad.close()
        server.stop()
