"""Third-party discovery, for real: a separate distribution on sys.path, found by entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ..conftest import Server

PLUGIN_SOURCE = '''
"""A third-party plugin: a native function and an HTTP route."""
from quart import jsonify
from realtime import Route, current_host, hookimpl


def shout(text: str) -> str:
    return text.upper() + "!"


async def hello():
    host = current_host()
    return jsonify(plugin="shouting", functions=sorted(host.functions))


@hookimpl
def register_functions():
    return {"shout": shout}


@hookimpl
def register_routes():
    return [Route("/hello", hello)]
'''


def make_distribution(site: Path, name: str, module: str, source: str) -> None:
    """What pip would leave behind: the module, and a .dist-info with entry_points.txt."""
    (site / f"{module}.py").write_text(source)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[realtime.plugins]\n{name} = {module}\n")
    (info / "RECORD").write_text("")


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    return path


def env_with(site: Path) -> dict[str, str]:
    path = os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


def realtime(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The ``realtime`` command, with the fake distribution on its path."""
    return subprocess.run(
        [sys.executable, "-m", "realtime", *args],
        env=env_with(site), capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_a_third_party_plugin_is_discovered_and_its_function_runs_in_scripts(
    site: Path, app_dir: Path
) -> None:
    make_distribution(site, "shouting", "realtime_shouting", PLUGIN_SOURCE)
    (app_dir / "shout.py").write_text("print(shout(request.query.get('text', 'hi')))\n")
    (app_dir / "both.py").write_text("print(shout('sent'), broadcast('x'))\n")
    server = Server(app_dir, env=env_with(site)).start()
    try:
        assert httpx.get(server.url + "/shout.py?text=hello").text.strip() == "HELLO!"
        assert httpx.get(server.url + "/both.py").text.strip() == "SENT! 0"
        hello = httpx.get(server.url + "/hello").json()
        assert hello["plugin"] == "shouting"
        # Its function beside the bundled plugins' (broadcast, the token minters).
        assert {"broadcast", "shout", "connection_token"} <= set(hello["functions"])
    finally:
        server.stop()


def test_realtime_plugins_lists_plugins_routes_and_functions(site: Path) -> None:
    make_distribution(site, "shouting", "realtime_shouting", PLUGIN_SOURCE)
    listing = realtime(site, "plugins", "--json")
    assert listing.returncode == 0, listing.stderr
    plugins = {entry["name"]: entry for entry in json.loads(listing.stdout)}
    assert plugins["shouting"]["distribution"] == "shouting"
    assert plugins["shouting"]["functions"] == ["shout"]
    assert plugins["shouting"]["routes"] == [
        {"path": "/hello", "kind": "Route", "scopes": ["http"]}
    ]
    assert plugins["websocket"]["routes"] == [
        {"path": "/ws", "kind": "ASGIRoute", "scopes": ["websocket"]}
    ]
    assert plugins["broadcast"]["functions"] == [
        "broadcast",
        "history",
        "presence",
        "presence_stats",
    ]
    assert plugins["centrifuge"]["requires"] == ["hub", "broker"]
    assert plugins["shouting"]["requires"] == []
    text = realtime(site, "plugins").stdout
    assert "shouting" in text and "shout()" in text and "/ws" in text
    assert "requires  hub, broker" in text


def test_a_plugin_needing_one_not_installed_stops_start_up_naming_both(
    site: Path, app_dir: Path
) -> None:
    make_distribution(site, "needy", "realtime_needy", 'REQUIRES = ("postgres",)\n')
    result = realtime(site, "run", "--app", str(app_dir), "--bind", "127.0.0.1:1")
    assert result.returncode == 2
    assert "plugin 'needy' requires plugin 'postgres', which is not installed" in result.stderr


def test_the_hub_disabled_stops_the_command_naming_who_needs_it(app_dir: Path) -> None:
    """It used to start and fail with "HubClosed: the hub is not running"."""
    result = subprocess.run(
        [sys.executable, "-m", "realtime", "run", "--app", str(app_dir), "--bind", "127.0.0.1:1"],
        env={**os.environ, "REALTIME_DISABLE_PLUGINS": "hub"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "plugin 'centrifuge' requires plugin 'hub', which is disabled by" in result.stderr
    assert "HubClosed" not in result.stderr


def test_a_plugin_that_fails_to_import_stops_start_up_naming_it(site: Path, app_dir: Path) -> None:
    make_distribution(site, "broken", "realtime_broken", "import this_module_does_not_exist\n")
    result = realtime(site, "run", "--app", str(app_dir), "--bind", "127.0.0.1:1")
    assert result.returncode != 0
    assert "plugin 'broken'" in result.stderr
    assert "this_module_does_not_exist" in result.stderr


def test_a_plugin_claiming_a_taken_function_stops_start_up_naming_both(
    site: Path, app_dir: Path
) -> None:
    source = (
        "from realtime import hookimpl\n\n"
        "@hookimpl\ndef register_functions():\n    return {'broadcast': print}\n"
    )
    make_distribution(site, "impostor", "realtime_impostor", source)
    result = realtime(site, "run", "--app", str(app_dir), "--bind", "127.0.0.1:1")
    assert result.returncode != 0
    assert "function 'broadcast' is claimed by both plugin" in result.stderr
    assert "'impostor'" in result.stderr and "plugin 'broadcast'" in result.stderr


def test_a_plugin_that_fails_to_start_stops_the_server(site: Path, app_dir: Path) -> None:
    source = (
        "from realtime import hookimpl\n\n"
        "@hookimpl\ndef startup():\n    raise RuntimeError('no database here')\n"
    )
    make_distribution(site, "faulty", "realtime_faulty", source)
    bind = f"127.0.0.1:{Server(app_dir).port}"
    result = realtime(site, "run", "--app", str(app_dir), "--bind", bind)
    assert result.returncode == 1
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line == "realtime: plugin 'faulty' failed to start: RuntimeError: no database here"
