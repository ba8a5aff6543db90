"""Telemetry: instruments as no-ops until an exporter is installed, declared once by name;
and what the host itself measures (script runs, its own refused handshakes)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from realtime import create_app, get_host, hookimpl
from realtime.limits import ConnectionLimits
from realtime.origins import OriginCheck
from realtime.telemetry import DURATION_BUCKETS, NOOP, Instrument, Spec, Telemetry


class Recorded:
    """An instrument that records what it is told: ``(labels, op, amount)``."""

    def __init__(self, spec: Spec, calls: list[tuple[str, tuple[str, ...], str, float]]) -> None:
        self.spec = spec
        self.calls = calls
        self.values: tuple[str, ...] = ()

    def labels(self, *values: str) -> Instrument:
        assert len(values) == len(self.spec.labels), (self.spec, values)
        child = Recorded(self.spec, self.calls)
        child.values = values
        return child

    def _record(self, op: str, amount: float) -> None:
        self.calls.append((self.spec.name, self.values, op, amount))

    def inc(self, amount: float = 1) -> None:
        self._record("inc", amount)

    def dec(self, amount: float = 1) -> None:
        self._record("dec", amount)

    def set(self, value: float) -> None:
        self._record("set", value)

    def observe(self, amount: float) -> None:
        self._record("observe", amount)


class Recorder:
    """An exporter keeping every call, in order."""

    def __init__(self) -> None:
        self.made: list[Spec] = []
        self.calls: list[tuple[str, tuple[str, ...], str, float]] = []

    def make(self, spec: Spec) -> Instrument:
        self.made.append(spec)
        return Recorded(spec, self.calls)

    def of(self, name: str) -> list[tuple[tuple[str, ...], str, float]]:
        return [(labels, op, amount) for n, labels, op, amount in self.calls if n == name]


# Telemetry itself ------------------------------------------------------------------


def test_instruments_are_noops_until_an_exporter_is_installed() -> None:
    telemetry = Telemetry()
    counter = telemetry.counter("realtime_things_total", "things", ("kind",))
    assert counter is NOOP and not telemetry.enabled
    counter.labels("a").inc()  # nothing to see, nothing raised
    assert [spec.name for spec in telemetry.specs()] == ["realtime_things_total"]


def test_install_after_an_instrument_was_made_is_refused() -> None:
    telemetry = Telemetry()
    telemetry.gauge("realtime_level", "a level")
    with pytest.raises(RuntimeError, match="realtime_level"):
        telemetry.install(Recorder())


def test_the_same_declaration_twice_is_one_instrument() -> None:
    telemetry = Telemetry()
    recorder = Recorder()
    telemetry.install(recorder)
    first = telemetry.counter("realtime_handshakes_total", "one help", ("result",))
    second = telemetry.counter("realtime_handshakes_total", "another help", ("result",))
    assert first is second and len(recorder.made) == 1
    first.labels("accepted").inc()
    second.labels("origin").inc(2)
    assert recorder.of("realtime_handshakes_total") == [
        (("accepted",), "inc", 1),
        (("origin",), "inc", 2),
    ]


@pytest.mark.parametrize(
    "declare",
    [
        lambda t: t.gauge("realtime_x_total", "", ("result",)),  # another kind
        lambda t: t.counter("realtime_x_total", "", ("code",)),  # other labels
    ],
)
def test_a_conflicting_declaration_is_refused(declare: Callable[[Telemetry], object]) -> None:
    telemetry = Telemetry()
    telemetry.counter("realtime_x_total", "", ("result",))
    with pytest.raises(ValueError, match="declared twice"):
        declare(telemetry)


def test_histograms_differ_by_buckets_and_default_to_duration_buckets() -> None:
    telemetry = Telemetry()
    recorder = Recorder()
    telemetry.install(recorder)
    telemetry.histogram("realtime_run_seconds", "runs")
    assert recorder.made[0].buckets is None  # the exporter applies DURATION_BUCKETS
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
    with pytest.raises(ValueError, match="declared twice"):
        telemetry.histogram("realtime_run_seconds", "runs", buckets=(1.0, 2.0))


def test_a_counter_must_end_in_total() -> None:
    with pytest.raises(ValueError, match="_total"):
        Telemetry().counter("realtime_things", "things")


def test_a_failing_sampler_does_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = Telemetry()
    ran: list[str] = []

    def broken() -> None:
        raise RuntimeError("sampler bug")

    telemetry.sampler(broken)
    telemetry.sampler(lambda: ran.append("second"))
    with caplog.at_level(logging.ERROR, logger="realtime.telemetry"):
        telemetry.sample()
        telemetry.sample()
    assert ran == ["second", "second"]
    failures = [r for r in caplog.records if "sampler" in r.getMessage()]
    assert len(failures) == 1  # throttled: once per interval


# The host's script runs -------------------------------------------------------------


class Recording:
    """A plugin installing a :class:`Recorder`, as the metrics plugin installs its exporter."""

    def __init__(self) -> None:
        self.recorder = Recorder()

    @hookimpl
    def validate(self, host: Any) -> None:
        host.telemetry.install(self.recorder)


Scripts = Callable[..., Awaitable[tuple[int, str]]]


@pytest.fixture
async def scripts(tmp_path: Path) -> Any:
    (tmp_path / "ok.py").write_text("print('ok')")
    (tmp_path / "boom.py").write_text("raise ValueError('on purpose')")
    (tmp_path / "slow.py").write_text("import time\ntime.sleep(1)")
    (tmp_path / "only_get.py").write_text("METHODS = ('GET',)\nprint('got')")
    (tmp_path / "context.py").write_text(
        "import logging\n"
        "from realtime.logs import CONTEXT\n"
        "logging.getLogger('app.script').warning('from the script')\n"
        "print(CONTEXT.get().get('request'), end='')\n"
    )
    plugin = Recording()
    app = create_app(
        tmp_path,
        plugins=[plugin],
        load_entrypoints=False,
        settings={"script_timeout": 0.2, "max_body_size": 16},
    )
    async with app.test_app() as test_app:
        client = test_app.test_client()

        async def call(path: str, method: str = "GET", **kwargs: Any) -> tuple[int, str]:
            response = await client.open(path, method=method, **kwargs)
            return response.status_code, await response.get_data(as_text=True)

        yield call, plugin.recorder


async def test_every_script_run_is_timed_by_status(
    scripts: tuple[Scripts, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    call, recorder = scripts
    with caplog.at_level(logging.INFO, logger="realtime.access"):
        assert (await call("/ok.py?token=secret"))[0] == 200
        assert (await call("/boom.py"))[0] == 500
        assert (await call("/slow.py"))[0] == 504
        assert (await call("/only_get.py", "POST"))[0] == 405
        assert (await call("/ok.py", "POST", data="x" * 17))[0] == 413
        assert (await call("/only_get.py", "OPTIONS"))[0] == 204
    observed = recorder.of("realtime_script_duration_seconds")
    assert [(labels, op) for labels, op, _ in observed] == [
        (("200",), "observe"),
        (("500",), "observe"),
        (("504",), "observe"),
        (("405",), "observe"),
        (("413",), "observe"),
        (("204",), "observe"),
    ]
    durations = [amount for _, _, amount in observed]
    assert all(d >= 0 for d in durations)
    assert durations[2] >= 0.2  # the deadline was waited for
    lines = [r for r in caplog.records if r.name == "realtime.access"]
    assert [(r.method, r.path, r.status, r.kind) for r in lines] == [  # type: ignore[attr-defined]
        ("GET", "/ok.py", 200, "script"),
        ("GET", "/boom.py", 500, "script"),
        ("GET", "/slow.py", 504, "script"),
        ("POST", "/only_get.py", 405, "script"),
        ("POST", "/ok.py", 413, "script"),
        ("OPTIONS", "/only_get.py", 204, "script"),
    ]
    assert all("secret" not in r.getMessage() for r in lines)
    assert lines[2].duration >= 0.2  # type: ignore[attr-defined]


async def test_a_run_carries_a_request_id_into_the_scripts_thread(
    scripts: tuple[Scripts, Recorder], caplog: pytest.LogCaptureFixture
) -> None:
    call, _ = scripts
    from realtime.logs import CONTEXT

    seen: list[str | None] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(CONTEXT.get().get("request"))

    handler = Capture()
    for name in ("app.script", "realtime.access"):
        logging.getLogger(name).addHandler(handler)
    try:
        with caplog.at_level(logging.INFO):
            status, body = await call("/context.py", headers={"X-Request-Id": "req-42.a_B"})
            assert (status, body) == (200, "req-42.a_B")
            # The script's record (its thread) and the access line (the loop) both carry it.
            assert seen == ["req-42.a_B", "req-42.a_B"]
            for bad in ("has space", "x" * 65, "semi;colon", ""):
                status, body = await call("/context.py", headers={"X-Request-Id": bad})
                assert status == 200 and body != bad
                assert len(body) == 16 and int(body, 16) >= 0  # a fresh hex id
            _, other = await call("/context.py")
            assert other != body
    finally:
        for name in ("app.script", "realtime.access"):
            logging.getLogger(name).removeHandler(handler)
    assert CONTEXT.get().get("request") is None  # nothing leaks out of the run


# The host's own refused handshakes -------------------------------------------------


class Sent:
    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: dict[str, Any]) -> None:
        self.messages.append(message)


async def _receive() -> dict[str, Any]:
    return {"type": "websocket.connect"}


def _ws_scope(
    address: str = "10.0.0.1", origin: str | None = None, host: str = "example.com"
) -> dict[str, Any]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {
        "type": "websocket",
        "path": "/ws",
        "client": (address, 1234),
        "headers": headers,
        "scheme": "ws",
        "extensions": {"websocket.http.response": {}},
    }


async def test_connection_limits_count_each_refusal_by_reason() -> None:
    recorder = Recorder()
    counter = recorder.make(Spec("counter", "realtime_handshakes_total", "", ("result",)))
    held: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        held.append(scope["realtime.detach"]())  # stays open past its call

    limits = ConnectionLimits(app, total=3, per_address=2)
    limits.handshakes = counter
    for address in ("10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.3"):
        await limits(_ws_scope(address), _receive, Sent())
    assert recorder.of("realtime_handshakes_total") == [
        (("per_ip",), "inc", 1),  # a third from 10.0.0.1
        (("capacity",), "inc", 1),  # 10.0.0.3: three are open
    ]
    assert len(held) == 3  # accepted ones are not the host's to count


async def test_origin_check_counts_foreign_origins_and_bad_hosts_of_handshakes_only() -> None:
    recorder = Recorder()
    counter = recorder.make(Spec("counter", "realtime_handshakes_total", "", ("result",)))
    passed: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["type"])

    check = OriginCheck(app, [], ["example.com"])
    check.handshakes = counter
    await check(_ws_scope(origin="http://example.com"), _receive, Sent())
    await check(_ws_scope(origin="http://evil.test"), _receive, Sent())
    await check(_ws_scope(host="evil.test"), _receive, Sent())
    http = {"type": "http", "path": "/", "headers": [(b"host", b"evil.test")]}
    sent = Sent()
    await check(http, _receive, sent)
    assert sent.messages[0]["status"] == 400  # refused, but no handshake
    assert recorder.of("realtime_handshakes_total") == [
        (("origin",), "inc", 1),
        (("host",), "inc", 1),
    ]
    assert passed == ["websocket"]


async def test_the_host_gives_its_middlewares_the_counter_at_startup(tmp_path: Path) -> None:
    plugin = Recording()
    app = create_app(tmp_path, plugins=[plugin], load_entrypoints=False)
    host = get_host(app)
    recorder = plugin.recorder
    assert host.limits is not None and host.origin_check is not None
    assert host.limits.handshakes is NOOP and recorder.made == []  # none before start-up
    async with app.test_app():
        assert host.limits.handshakes is host.origin_check.handshakes
        names = {spec.name: spec for spec in recorder.made}
        assert names["realtime_handshakes_total"].labels == ("result",)
        assert names["realtime_script_duration_seconds"].labels == ("status",)
        assert names["realtime_script_duration_seconds"].kind == "histogram"


def test_a_gauge_declared_with_another_aggregate_is_refused() -> None:
    telemetry = Telemetry()
    telemetry.gauge("realtime_x", "x", aggregate="livesum")
    with pytest.raises(ValueError, match="declared twice"):
        telemetry.gauge("realtime_x", "x", aggregate="max")
    assert telemetry.gauge("realtime_x", "other help, same gauge") is not None
