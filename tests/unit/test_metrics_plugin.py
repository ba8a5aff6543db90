"""The metrics plugin's loop-lag probe and its multiprocess directory."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from realtime_metrics import multiproc
from realtime_metrics.lag import run_probe


class Recorder:
    """An instrument that keeps what it is given."""

    def __init__(self) -> None:
        self.observed: list[float] = []

    def labels(self, *values: str) -> Recorder:
        return self

    def inc(self, amount: float = 1) -> None:
        raise AssertionError("the probe only observes")

    dec = set = inc

    def observe(self, amount: float) -> None:
        self.observed.append(amount)


async def test_the_probe_sees_the_loop_held_and_samples() -> None:
    lag = Recorder()
    samples: list[float] = []
    probe = asyncio.create_task(
        run_probe(lag, lambda: samples.append(time.monotonic()), interval=0.01, sample_every=0.05)
    )
    try:
        while len(lag.observed) < 3:
            await asyncio.sleep(0.005)
        time.sleep(0.2)  # a blocking call holds the loop: the probe wakes ~0.2 s late
        held = len(lag.observed)
        while len(lag.observed) <= held:
            await asyncio.sleep(0.005)
    finally:
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
    assert max(lag.observed) >= 0.15
    assert min(lag.observed) >= 0.0
    assert len(samples) >= 2, "sampled at start and about every sample_every"


def test_prepare_makes_a_private_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    registered: list[tuple[object, ...]] = []
    monkeypatch.setattr("atexit.register", lambda *a, **kw: registered.append(a))
    environ: dict[str, str] = {}
    path = multiproc.prepare(environ)
    try:
        assert environ[multiproc.ENV] == str(path)
        assert path.is_dir() and list(path.iterdir()) == []
        assert path.stat().st_mode & 0o777 == 0o700
        assert registered and registered[0][1] == path, "removed at the supervisor's exit"
    finally:
        path.rmdir()


def test_prepare_keeps_the_operators_directory_emptied(tmp_path: Path) -> None:
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_123.db").write_bytes(b"stale")
    (given / "gauge_livesum_123.db").write_bytes(b"stale")
    (given / "notes.txt").write_text("not ours")
    environ = {multiproc.ENV: str(given)}
    assert multiproc.prepare(environ) == given
    assert environ == {multiproc.ENV: str(given)}
    assert sorted(p.name for p in given.iterdir()) == ["notes.txt"]
    missing = tmp_path / "new" / "dir"
    assert multiproc.prepare({multiproc.ENV: str(missing)}) == missing and missing.is_dir()
    assert os.environ.get(multiproc.ENV) is None
