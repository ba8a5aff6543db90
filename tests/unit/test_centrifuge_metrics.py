"""What the Centrifuge protocol, its server API and the broker report for /metrics,
recorded by a tiny exporter: every instrument call is kept by metric and labels."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

import jwt
import pytest

from realtime import Telemetry
from realtime.telemetry import Spec
from realtime_broker import Member, MemoryBroker, Publication, StreamPosition
from realtime_broker.metrics import BrokerMetrics
from realtime_broker.presence import PresenceMode
from realtime_centrifuge import (
    ChannelRules,
    ConnectAuth,
    DisconnectError,
    Error,
    Session,
    SessionOptions,
    TokenVerifier,
)
from realtime_centrifuge.api import ServerAPI
from realtime_centrifuge.metrics import CentrifugeMetrics

SECRET = "metrics-secret-" * 4
T0 = 1_700_000_000.0
RULES = ChannelRules.from_config(
    {"namespaces": [{"name": "news", "allow_subscribe_for_client": True}]}
)


class Recorded:
    """One instrument, or one labelled child of it: what was done to it."""

    def __init__(self, spec: Spec) -> None:
        self.spec = spec
        self.children: dict[tuple[str, ...], Recorded] = {}
        self.total = 0.0
        self.value: float | None = None
        self.observed: list[float] = []

    def labels(self, *values: str) -> Recorded:
        assert len(values) == len(self.spec.labels), (self.spec, values)
        return self.children.setdefault(values, Recorded(self.spec))

    def inc(self, amount: float = 1) -> None:
        assert amount >= 0 or self.spec.kind == "gauge"
        self.total += amount

    def dec(self, amount: float = 1) -> None:
        self.total -= amount

    def set(self, value: float) -> None:
        self.value = value

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


class Recorder:
    """An exporter whose instruments record."""

    def __init__(self) -> None:
        self.made: dict[str, Recorded] = {}

    def make(self, spec: Spec) -> Recorded:
        return self.made.setdefault(spec.name, Recorded(spec))

    def of(self, name: str, *labels: str) -> Recorded:
        made = self.made[name]
        return made.children[labels] if labels else made

    def counts(self, name: str) -> dict[str, int]:
        """Observations per label value, where there were some."""
        return {k[0]: len(c.observed) for k, c in self.made[name].children.items() if c.observed}


def recording() -> tuple[Telemetry, Recorder]:
    telemetry, recorder = Telemetry(), Recorder()
    telemetry.install(recorder)
    return telemetry, recorder


class Backend:
    """Just enough of a session's backend for connect, subscribe, rpc and send."""

    def __init__(self) -> None:
        self.connect_answer: ConnectAuth | Error | None = None

    async def authorize_connect(self, **kwargs: Any) -> ConnectAuth | Error | None:
        return self.connect_answer

    async def authorize_subscribe(self, **kwargs: Any) -> None:
        return None

    async def subscribe(self, channel: str, join_leave: bool = False) -> None:
        return None

    async def join_presence(self, channel: str, info: Mapping[str, Any]) -> None:
        pass

    async def unsubscribe(self, channel: str) -> None:
        pass

    async def rpc(self, **kwargs: Any) -> Any:
        return {"ok": True}

    async def on_send(self, **kwargs: Any) -> None:
        pass


def session(metrics: CentrifugeMetrics | None, backend: Backend | None = None) -> Session:
    return Session(
        RULES,
        TokenVerifier(hmac_secret=SECRET),
        backend or Backend(),  # type: ignore[arg-type]
        options=SessionOptions(metrics=metrics),
        clock=lambda: T0,
    )


def frame(*commands: dict[str, Any]) -> str:
    return "\n".join(json.dumps(command) for command in commands)


def connect(token: str = "", cid: int = 1) -> dict[str, Any]:
    return {"id": cid, "connect": {"token": token} if token else {}}


def good_token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", **claims}, SECRET, algorithm="HS256")


COMMANDS = "realtime_command_duration_seconds"
HANDSHAKES = "realtime_handshakes_total"


async def test_each_command_is_timed_once_under_its_method() -> None:
    telemetry, recorder = recording()
    metrics = CentrifugeMetrics(telemetry, ServerAPI.METHODS)
    s = session(metrics)
    await s.handle_frame(frame(connect(good_token())))
    await s.handle_frame(
        frame(
            {"id": 2, "subscribe": {"channel": "news:a"}},
            {"id": 3, "rpc": {"method": "m", "data": {}}},
            {"send": {"data": "hi"}},
            {"id": 4, "history": {"channel": "news:a"}},  # refused (108): still timed
        )
    )
    assert recorder.counts(COMMANDS) == {
        "connect": 1, "subscribe": 1, "rpc": 1, "send": 1, "history": 1,
    }  # fmt: skip
    observed = [t for c in recorder.made[COMMANDS].children.values() for t in c.observed]
    assert all(0 <= t < 5 for t in observed)
    # Every label value is there from the start, and none is a client's string.
    assert ("unknown",) in recorder.made[COMMANDS].children
    assert not recorder.of(HANDSHAKES, "auth").total


async def test_without_an_exporter_nothing_is_timed() -> None:
    metrics = CentrifugeMetrics(Telemetry(), ServerAPI.METHODS)
    assert not metrics.enabled
    s = session(None)
    lines = await s.handle_frame(frame(connect(good_token())))
    assert json.loads(lines[0])["connect"]["client"] == s.client_id


def test_a_method_outside_the_fixed_set_is_unknown() -> None:
    telemetry, recorder = recording()
    metrics = CentrifugeMetrics(telemetry, ServerAPI.METHODS)
    metrics.command("x" * 500, 0.25)
    metrics.api("../etc", 0.5)
    assert recorder.of(COMMANDS, "unknown").observed == [0.25]
    assert recorder.of("realtime_api_duration_seconds", "unknown").observed == [0.5]
    assert len(recorder.made[COMMANDS].children) == 12  # METHODS and "unknown"


@pytest.mark.parametrize(
    ("token", "answer", "closes"),
    [
        ("not-a-jwt", None, True),  # invalid token: 3500
        (good_token(exp=int(T0) - 10), None, False),  # expired: error 109
        ("", Error(103), False),  # the connect hook refuses
        ("", None, True),  # no credentials and no hook: 3501
        ("", ConnectAuth("bob", expire_at=int(T0) - 1), False),  # the hook's expiry: 110
    ],
)
async def test_refused_connects_count_as_auth(
    token: str, answer: ConnectAuth | Error | None, closes: bool
) -> None:
    telemetry, recorder = recording()
    backend = Backend()
    backend.connect_answer = answer
    s = session(CentrifugeMetrics(telemetry, ServerAPI.METHODS), backend)
    if closes:
        with pytest.raises(DisconnectError):
            await s.handle_frame(frame(connect(token)))
    else:
        (line,) = await s.handle_frame(frame(connect(token)))
        assert "error" in json.loads(line)
    assert recorder.of(HANDSHAKES, "auth").total == 1
    assert recorder.counts(COMMANDS) == {"connect": 1}  # timed even when it closes


async def test_an_accepted_connect_is_not_an_auth_refusal() -> None:
    telemetry, recorder = recording()
    backend = Backend()
    backend.connect_answer = ConnectAuth("bob")
    s = session(CentrifugeMetrics(telemetry, ServerAPI.METHODS), backend)
    await s.handle_frame(frame(connect()))
    assert s.connected and recorder.of(HANDSHAKES, "auth").total == 0


# -- the server API --------------------------------------------------------------


class APIBackend:
    async def publish(
        self, channel: str, data: Any, *, tags: Any = None, idempotency_key: str = ""
    ) -> Mapping[str, Any]:
        return {}


async def asgi(api: ServerAPI, path: str, body: bytes, headers: Any = ()) -> list[Any]:
    sent: list[Any] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> Any:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": list(headers),
             "query_string": b"key=do-not-log"}  # fmt: skip
    await api(scope, receive, send)
    return sent


async def test_api_calls_are_timed_once_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    telemetry, recorder = recording()
    metrics = CentrifugeMetrics(telemetry, ServerAPI.METHODS)
    api = ServerAPI(APIBackend(), RULES, "k3y", observe=metrics.api)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="realtime.access")
    body = b'{"channel": "news:a", "data": {"n": 1}}'
    sent = await asgi(api, "/api/publish", body, [(b"x-api-key", b"k3y")])
    assert sent[0]["status"] == 200
    await asgi(api, "/api/publish", body, [(b"x-api-key", b"wrong")])
    await asgi(api, "/api/nothing", b"{}")
    status, reply = await api.call("publish", body)  # in-process: no key asked
    assert (status, json.loads(reply)) == (200, {"result": {}})
    assert recorder.counts("realtime_api_duration_seconds") == {"publish": 3, "unknown": 1}
    lines = [(r.method, r.path, r.status) for r in caplog.records if r.name == "realtime.access"]  # type: ignore[attr-defined]
    assert lines == [
        ("POST", "/api/publish", 200), ("POST", "/api/publish", 401), ("POST", "/api/nothing", 404)
    ]  # fmt: skip
    assert all(r.kind == "api" for r in caplog.records if r.name == "realtime.access")  # type: ignore[attr-defined]
    assert "do-not-log" not in caplog.text and "k3y" not in caplog.text


# -- the broker -----------------------------------------------------------------------


async def test_broker_metrics_sample_what_the_broker_counts() -> None:
    telemetry, recorder = recording()
    broker = MemoryBroker("memory://", {})
    broker.history_policy = lambda channel: (10, 60.0) if channel.startswith("kept") else None
    broker.presence_policy = lambda channel: PresenceMode(listed=True, announced=False)
    BrokerMetrics(telemetry, broker)
    telemetry.sample()
    assert recorder.of("realtime_broker_up").value == 0  # not started
    await broker.start()
    try:
        broker.subscribe("kept", lambda pub: 1)
        await broker.publish("kept", Publication("one"))
        await broker.publish("other", "two")
        assert len(recorder.of("realtime_broker_publish_duration_seconds").observed) == 2
        await broker.history("kept", limit=-1)
        await broker.history("kept", limit=0, since=StreamPosition(0, ""))
        await broker.join_presence("room", Member("c1", "alice"))
        await broker.join_presence("room", Member("c2", "bob"))
        await broker.join_presence("hall", Member("c1", "alice"))
        broker.missed += 3
        telemetry.sample()
        assert recorder.of("realtime_broker_up").value == 1
        assert recorder.of("realtime_history_reads_total").total == 2
        assert recorder.of("realtime_presence_members").value == 3
        assert recorder.of("realtime_broker_missed_total").total == 3
        await broker.leave_presence("room", "c2")
        telemetry.sample()  # counters grow by what changed since, not again
        assert recorder.of("realtime_history_reads_total").total == 2
        assert recorder.of("realtime_broker_missed_total").total == 3
        assert recorder.of("realtime_presence_members").value == 2
    finally:
        await broker.close()
    telemetry.sample()
    assert recorder.of("realtime_broker_up").value == 0
