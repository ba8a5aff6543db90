"""The fence (realtime.internals): the versions it knows, and the fallback when it does not.

On a Hypercorn, wsproto or Python the fence was not written against, the takeover,
the guard and the lean TCP server stay off, one warning at start-up says so, and
WebSockets still work over plain ASGI. Forced here through the documented test knob
(``REALTIME_PRETEND_VERSIONS``), in-process and in a real ``realtime run``.
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import httpx
import hypercorn.asyncio.run as hypercorn_run
import pytest
from packaging.requirements import Requirement
from websockets.asyncio.client import connect

from realtime import internals, tcp
from realtime.internals import hypercorn as hypercorn_internals
from realtime_hub.fastpath import IncomingLimits, guard, take_over

from ..conftest import Server

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 5.0


@pytest.fixture
def fresh_fence() -> Iterator[None]:
    """A probe that runs again for this test, and again after it."""
    internals.fence.cache_clear()
    yield
    internals.fence.cache_clear()


def _bounds() -> dict[str, Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        lines = tomllib.load(file)["project"]["dependencies"]
    requirements = (Requirement(line) for line in lines)
    return {req.name.lower(): req for req in requirements}


@pytest.mark.parametrize("name", ["hypercorn", "wsproto"])
def test_pyproject_bounds_each_fenced_library_to_the_releases_the_fence_knows(name: str) -> None:
    requirement = _bounds()[name]
    known = internals.KNOWN[name]
    for major, minor in known:
        assert requirement.specifier.contains(f"{major}.{minor}.0"), (requirement, known)
    major, minor = max(known)
    assert not requirement.specifier.contains(f"{major}.{minor + 1}.0"), (
        f"{requirement} lets in {major}.{minor + 1}, which the fence does not know"
    )
    installed = metadata.version(name)
    assert tuple(int(part) for part in installed.split(".")[:2]) in known


def test_the_installed_libraries_engage_everything(fresh_fence: None) -> None:
    fence = internals.fence()
    assert fence.problems == ()
    assert (fence.takeover, fence.guard, fence.lean_tcp) == (True, True, True)
    assert fence.warning() is None


def test_an_unknown_hypercorn_turns_everything_off_with_one_warning(
    fresh_fence: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(internals.PRETEND_ENV, "hypercorn=0.99.0")
    fence = internals.fence()
    assert (fence.takeover, fence.guard, fence.lean_tcp) == (False, False, False)
    assert fence.versions["hypercorn"] == "0.99.0"
    with caplog.at_level(logging.WARNING, logger="realtime"):
        assert internals.warn(logging.getLogger("realtime")) is False
    [record] = caplog.records
    assert "hypercorn 0.99.0" in record.message and "0.17, 0.18" in record.message
    assert "plain ASGI path" in record.message


def test_an_unknown_wsproto_turns_only_the_guard_off(
    fresh_fence: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(internals.PRETEND_ENV, "wsproto=2.0")
    fence = internals.fence()
    assert (fence.takeover, fence.guard, fence.lean_tcp) == (True, False, True)
    assert fence.warning() is not None and "wsproto 2.0" in fence.warning()  # type: ignore[operator]


def test_a_missing_name_is_a_problem_too(
    fresh_fence: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hypercorn_internals, "missing", lambda: ["TCPServer._read_data"])
    fence = internals.fence()
    assert not fence.takeover and not fence.lean_tcp
    assert "lacks TCPServer._read_data" in (fence.warning() or "")


def test_a_known_version_read_from_the_knob_changes_nothing(
    fresh_fence: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(internals.PRETEND_ENV, "hypercorn=0.17.3, wsproto=1.2.0")
    assert internals.fence().problems == ()


def test_off_means_no_takeover_no_guard_no_lean_tcp(
    fresh_fence: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(internals.PRETEND_ENV, "hypercorn=0.99.0")
    monkeypatch.setattr(hypercorn_run, "TCPServer", tcp.HYPERCORN_TCP_SERVER)
    limits = IncomingLimits(1000)

    class Stream:  # what an ASGI send would be bound to: never looked at
        async def app_send(self, message: object) -> None: ...

    send = Stream().app_send
    assert take_over(send, limits, client=1, high_water=0) is None
    assert guard(send, limits, client=1) is None
    assert hypercorn_internals.locate(send) is None
    assert tcp.install() is False
    assert hypercorn_run.TCPServer is tcp.HYPERCORN_TCP_SERVER


async def test_a_server_on_an_unknown_hypercorn_warns_once_and_still_broadcasts(
    app_dir: Path,
) -> None:
    server = Server(app_dir, env={internals.PRETEND_ENV: "hypercorn=0.99.0"}).start()
    try:
        async with connect(server.ws_url, open_timeout=TIMEOUT) as ws:
            async with httpx.AsyncClient(timeout=TIMEOUT) as http:
                response = await http.get(f"{server.url}/send.py", params={"message": "plain"})
            assert response.text.strip() == "Sent to 1 client."
            async with asyncio.timeout(TIMEOUT):
                while await ws.recv() != "plain":
                    pass
    finally:
        server.stop()
    warnings = [line for line in server.log.splitlines() if "is not a version" in line]
    assert len(warnings) == 1, server.log
    assert "hypercorn 0.99.0" in warnings[0] and "WARNING" in warnings[0]
