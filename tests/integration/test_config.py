"""realtime.toml: one key per option, below flags and environment variables."""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

import pytest

from realtime import Option, PluginError, create_app, gcpolicy, get_host, hookimpl
from realtime.cli import server_config
from realtime.gcpolicy import tune as tune_garbage_collector
from realtime.options import resolve

from ..conftest import free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[2]


def settings_of(tmp_path: Path, toml: str, environ: dict[str, str] | None = None, **given: object):
    path = tmp_path / "settings.toml"
    path.write_text(toml)
    app = create_app(tmp_path, settings={"config": str(path), **given}, environ=environ or {})
    return get_host(app).settings


def test_the_file_sets_options_and_flags_and_environment_win(tmp_path: Path) -> None:
    toml = 'threads = 3\nmax_connections_per_ip = 7\nlog_level = "warning"\ndebug = true\n'
    settings = settings_of(tmp_path, toml)
    assert (settings["threads"], settings["max_connections_per_ip"]) == (3, 7)
    assert settings["log_level"] == "warning" and settings["debug"] is True
    environ = {"REALTIME_THREADS": "4", "REALTIME_DEBUG": "off"}
    settings = settings_of(tmp_path, toml, environ, max_connections_per_ip=9)
    assert (settings["threads"], settings["max_connections_per_ip"]) == (4, 9)
    assert settings["debug"] is False
    assert settings["config"].endswith("settings.toml")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("thread = 3\n", "unknown setting(s): thread"),
        ('threads = "three"\n', "threads in config file"),
        ("threads = true\n", "expected int, got True"),
        ("debug = 1\n", "expected bool, got 1"),
        ('log_level = "loud"\n', "--log-level must be one of"),
        ("threads = [\n", "is not valid TOML"),
        ('config = "other.toml"\n', "may not name another config file"),
    ],
)
def test_a_bad_file_stops_start_up_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(PluginError) as error:
        settings_of(tmp_path, toml)
    assert message in str(error.value)
    assert "settings.toml" in str(error.value) or "TOML" in str(error.value)


def test_a_named_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(PluginError, match="does not exist"):
        create_app(tmp_path, settings={"config": str(tmp_path / "missing.toml")}, environ={})
    with pytest.raises(PluginError, match="does not exist"):
        create_app(tmp_path, environ={"REALTIME_CONFIG": str(tmp_path / "missing.toml")})


def test_plugin_options_come_from_the_file_too(tmp_path: Path) -> None:
    module = type(sys)("shouting")
    module.register_options = hookimpl(  # type: ignore[attr-defined]
        lambda: [Option("shout_suffix", "!", "appended to every shout")]
    )
    path = tmp_path / "realtime.toml"
    path.write_text('shout_suffix = "?!"\n')
    app = create_app(
        tmp_path,
        settings={"config": str(path)},
        plugins=[module],
        load_entrypoints=False,
        environ={},
    )
    assert get_host(app).settings["shout_suffix"] == "?!"


def test_the_app_directory_ships_its_own_settings_below_the_operators(tmp_path: Path) -> None:
    app_dir = tmp_path / "site"
    app_dir.mkdir()
    (app_dir / "realtime.toml").write_text("threads = 3\nmax_body_size = 100\nbacklog = 7\n")
    operator = tmp_path / "operator.toml"
    operator.write_text("max_body_size = 200\n")
    host = get_host(
        create_app(
            app_dir,
            settings={"config": str(operator)},
            environ={"REALTIME_BACKLOG": "9"},
        )
    )
    # The app's file is below the operator's file, the environment and flags.
    assert (host.settings["threads"], host.settings["max_body_size"]) == (3, 200)
    assert host.settings["backlog"] == 9
    assert host.config_files == (operator, app_dir / "realtime.toml")
    assert host.settings["config"] == str(operator)
    alone = get_host(create_app(app_dir, environ={}))
    assert alone.settings["threads"] == 3 and alone.config_files == (app_dir / "realtime.toml",)


@pytest.mark.parametrize("key", ["app", "config"])
def test_the_apps_file_may_not_move_the_app_or_name_another_file(tmp_path: Path, key: str) -> None:
    (tmp_path / "realtime.toml").write_text(f'{key} = "elsewhere"\n')
    with pytest.raises(PluginError, match=f"ships with the app: it may not set {key}"):
        create_app(tmp_path, environ={})


def test_a_bad_key_in_the_apps_file_names_that_file(tmp_path: Path) -> None:
    (tmp_path / "realtime.toml").write_text("thread = 3\n")
    with pytest.raises(PluginError, match=r"realtime.toml'.*unknown setting\(s\): thread"):
        create_app(tmp_path, environ={})


async def test_the_apps_settings_file_is_never_served(tmp_path: Path) -> None:
    (tmp_path / "realtime.toml").write_text("threads = 2\n")
    (tmp_path / "notes.toml").write_text("public = true\n")
    app = create_app(tmp_path, environ={})
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert (await client.get("/realtime.toml")).status_code == 404
        assert (await client.get("/notes.toml")).status_code == 200


def test_the_demo_app_ships_the_chat_namespace(tmp_path: Path) -> None:
    """``--app app`` gets ``chat:*`` for signed-in users from app/realtime.toml, whatever
    the library's default rules are."""
    from realtime_hub.channels import ChannelRules

    host = get_host(create_app(ROOT / "app", environ={}))
    assert host.config_files == (ROOT / "app" / "realtime.toml",)
    rules = ChannelRules.from_config(host.settings["channel"])
    chat = rules.namespace_of("chat:room")
    assert chat is not None and chat.allow_subscribe_for_client
    assert not chat.allow_subscribe_for_anonymous and chat.allow_publish_for_subscriber
    assert (chat.history_size, chat.history_ttl, chat.presence) == (100, 600.0, True)
    top = rules.namespace_of("news")
    assert top is not None and top.allow_subscribe_for_anonymous
    assert rules.namespace_of("other:room") is None
    # An operator's [channel] replaces the app's table whole.
    operator = tmp_path / "operator.toml"
    operator.write_text("[channel.without_namespace]\nallow_subscribe_for_client = true\n")
    host = get_host(create_app(ROOT / "app", settings={"config": str(operator)}, environ={}))
    assert "namespaces" not in host.settings["channel"]


def test_a_secret_that_does_not_parse_is_not_echoed() -> None:
    option = Option("token_ttl", 0, "seconds", type=int, secret=True)
    with pytest.raises(ValueError, match="REALTIME_TOKEN_TTL") as error:
        resolve([option], {}, {"REALTIME_TOKEN_TTL": "hunter2"})
    assert "hunter2" not in str(error.value)


def test_the_command_reads_realtime_toml_in_its_working_directory(
    tmp_path: Path, app_dir: Path
) -> None:
    port = free_port()
    (tmp_path / "realtime.toml").write_text(
        f'bind = "127.0.0.1:{port}"\napp = "{app_dir}"\nthreads = 2\n'
    )
    log = tmp_path / "server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "realtime", "run"],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/", process=process)
        assert "settings from realtime.toml" in log.read_text()
    finally:
        process.terminate()
        process.wait(10)


def test_the_listen_backlog_reaches_hypercorn(tmp_path: Path) -> None:
    assert server_config(create_app(tmp_path)).backlog == 4096  # a reconnect storm fits
    assert server_config(create_app(tmp_path, settings={"backlog": 128})).backlog == 128
    with pytest.raises(PluginError, match="--backlog"):
        create_app(tmp_path, settings={"backlog": 0})


def test_the_garbage_collector_threshold_is_set_for_the_serving_process() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector(0)  # Python's own
        assert gc.get_threshold() == before
        tune_garbage_collector(20_000)
        assert gc.get_threshold() == (20_000, gcpolicy.MIDDLE, gcpolicy.OLDEST)
    finally:
        gc.set_threshold(*before)


def test_create_app_leaves_the_garbage_collector_alone(tmp_path: Path) -> None:
    before = gc.get_threshold()
    create_app(tmp_path, settings={"gc_threshold": 12_345})
    assert gc.get_threshold() == before  # process-wide: only `realtime run` sets it
