"""The plugin host: hook calling, discovery errors, duplicate names, start-up and shutdown."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import pytest

from realtime import (
    ASGIRoute,
    Option,
    PluginError,
    Route,
    Unavailable,
    WebSocketRoute,
    create_app,
    get_host,
    hookimpl,
    hookspec,
)
from realtime.host import all_options
from realtime.plugins import Plugins
from realtime.settings import WORKERS


def plugin(name: str, requires: tuple[str, ...] = (), **hooks: Any) -> types.ModuleType:
    """A plugin object as a module, the way entry points deliver them."""
    module = types.ModuleType(name)
    if requires:
        module.REQUIRES = requires  # type: ignore[attr-defined]
    for hook, function in hooks.items():
        setattr(module, hook, hookimpl(function))
    return module


async def hello() -> str:
    return "hello"


def test_hooks_get_only_the_arguments_they_declare(tmp_path: Path) -> None:
    seen: list[str] = []

    def register_routes() -> list[Route]:
        seen.append("routes, no arguments")
        return [Route("/hello", hello)]

    def register_functions(host: Any) -> dict[str, Any]:
        seen.append(f"functions, host of {type(host).__name__}")
        return {"greet": lambda: "hi"}

    app = create_app(
        tmp_path,
        plugins=[
            plugin("p", register_routes=register_routes, register_functions=register_functions)
        ],
        load_entrypoints=False,
    )
    assert seen == ["routes, no arguments", "functions, host of Host"]
    host = get_host(app)
    assert set(host.functions) == {"greet"}
    assert host.function_owner == {"greet": "p"}


def test_a_misspelled_hook_is_refused_with_the_plugin_name(tmp_path: Path) -> None:
    bad = plugin("typo", register_rutes=lambda: [])
    with pytest.raises(PluginError, match=r"'typo' is invalid.*register_rutes"):
        create_app(tmp_path, plugins=[bad], load_entrypoints=False)


def test_two_plugins_claiming_one_function_name_names_both(tmp_path: Path) -> None:
    one = plugin("one", register_functions=lambda: {"shout": print})
    two = plugin("two", register_functions=lambda: {"shout": print})
    with pytest.raises(PluginError) as error:
        create_app(tmp_path, plugins=[one, two], load_entrypoints=False)
    assert "'shout'" in str(error.value)
    assert "'one'" in str(error.value) and "'two'" in str(error.value)


def test_two_plugins_claiming_one_route_names_both(tmp_path: Path) -> None:
    one = plugin("one", register_routes=lambda: [WebSocketRoute("/ws", hello)])
    two = plugin("two", register_routes=lambda: [WebSocketRoute("/ws", hello)])
    with pytest.raises(PluginError, match="'/ws' is claimed by both plugin 'one' and plugin 'two'"):
        create_app(tmp_path, plugins=[one, two], load_entrypoints=False)


def test_an_http_and_a_websocket_route_may_share_a_path(tmp_path: Path) -> None:
    both = plugin(
        "both", register_routes=lambda: [Route("/live", hello), WebSocketRoute("/live", hello)]
    )
    create_app(tmp_path, plugins=[both], load_entrypoints=False)


def test_an_asgi_route_conflicts_with_a_quart_route_of_the_same_kind(tmp_path: Path) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        pass

    one = plugin("one", register_routes=lambda: [ASGIRoute("/live", raw)])
    two = plugin("two", register_routes=lambda: [Route("/live", hello)])
    with pytest.raises(PluginError, match="http route '/live' is claimed by both"):
        create_app(tmp_path, plugins=[one, two], load_entrypoints=False)


async def test_asgi_routes_answer_their_exact_path_ahead_of_quart(tmp_path: Path) -> None:
    async def raw(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"raw " + scope["path"].encode()})

    (tmp_path / "index.html").write_text("quart")
    app = create_app(
        tmp_path,
        plugins=[plugin("raw", register_routes=lambda: [ASGIRoute("/raw", raw, ("http",))])],
        load_entrypoints=False,
    )
    async with app.test_app() as test_app:
        client = test_app.test_client()
        assert await (await client.get("/raw")).get_data(as_text=True) == "raw /raw"
        assert (await client.get("/raw/more")).status_code == 404  # exact match only
        assert await (await client.get("/")).get_data(as_text=True) == "quart"


async def test_an_http_error_from_a_quart_route_is_its_status(tmp_path: Path) -> None:
    async def down() -> str:
        raise Unavailable("the backend is down")

    app = create_app(
        tmp_path,
        plugins=[plugin("down", register_routes=lambda: [Route("/down", down)])],
        load_entrypoints=False,
    )
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/down")
        assert response.status_code == 503
        assert await response.get_data(as_text=True) == "the backend is down\n"


def test_function_names_the_host_uses_are_refused(tmp_path: Path) -> None:
    bad = plugin("bad", register_functions=lambda: {"request": print})
    with pytest.raises(PluginError, match="'bad' registers an invalid function 'request'"):
        create_app(tmp_path, plugins=[bad], load_entrypoints=False)


def test_route_paths_are_checked_when_declared() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        Route("hello", hello)


def test_options_from_plugins_take_explicit_then_environment_then_default(tmp_path: Path) -> None:
    declares = plugin(
        "opts", register_options=lambda: [Option("answer", 42, "the answer", type=int)]
    )
    host = get_host(create_app(tmp_path, plugins=[declares], load_entrypoints=False, environ={}))
    assert host.settings["answer"] == 42
    env = {"REALTIME_ANSWER": "7"}
    host = get_host(create_app(tmp_path, plugins=[declares], load_entrypoints=False, environ=env))
    assert host.settings["answer"] == 7
    host = get_host(
        create_app(
            tmp_path,
            plugins=[declares],
            load_entrypoints=False,
            environ=env,
            settings={"answer": 1},
        )
    )
    assert host.settings["answer"] == 1
    with pytest.raises(PluginError, match="REALTIME_ANSWER"):
        create_app(
            tmp_path, plugins=[declares], load_entrypoints=False, environ={"REALTIME_ANSWER": "x"}
        )
    with pytest.raises(PluginError, match="unknown setting"):
        create_app(tmp_path, plugins=[declares], load_entrypoints=False, settings={"nope": 1})


def test_a_setting_is_read_typed_through_the_owners_handle(tmp_path: Path) -> None:
    answer = Option("answer", 42, "the answer", type=int)
    owner = plugin("owner", register_options=lambda: [answer])
    host = get_host(
        create_app(
            tmp_path, plugins=[owner], load_entrypoints=False, environ={"REALTIME_ANSWER": "7"}
        )
    )
    assert host.setting(answer) == 7 and answer.get(host.settings) == 7
    assert host.setting(WORKERS) == 1  # the host's own, from realtime.settings
    # Without its owner loaded, a reader gets the owner's default: written once, there.
    alone = get_host(create_app(tmp_path, load_entrypoints=False, environ={}))
    assert alone.setting(answer) == 42


async def test_the_message_size_limit_is_the_brokers_and_reaches_every_publisher(
    tmp_path: Path,
) -> None:
    """Declared by the broker, so the server API has it with broadcast() disabled too."""
    from realtime_broker.plugin import MAX_MESSAGE_SIZE
    from realtime_centrifuge.plugin import get_node

    app = create_app(tmp_path, settings={"max_message_size": 1000}, disabled=["broadcast"])
    host = get_host(app)
    assert host.setting(MAX_MESSAGE_SIZE) == 1000
    owners = {option.name: owner for owner, option in all_options(host.plugins)}
    assert owners["max_message_size"] == "broker"
    async with app.test_app():
        assert get_node(host).api.max_message_size == 1000


def test_an_option_declared_twice_names_both(tmp_path: Path) -> None:
    clash = plugin("clash", register_options=lambda: [Option("bind", "x", "again")])
    with pytest.raises(PluginError, match="--bind is declared by both 'host' and plugin 'clash'"):
        create_app(tmp_path, plugins=[clash], load_entrypoints=False)


async def test_a_plugin_that_fails_to_start_stops_start_up_and_started_ones_clean_up(
    tmp_path: Path,
) -> None:
    events: list[str] = []

    def first_startup() -> None:
        events.append("first started")

    def first_shutdown() -> None:
        events.append("first cleaned up")

    def broken_startup() -> None:
        raise OSError("cannot bind the thing")

    def never_startup() -> None:
        events.append("third started")

    app = create_app(
        tmp_path,
        plugins=[
            plugin("first", startup=first_startup, shutdown=first_shutdown),
            plugin("broken", startup=broken_startup),
            plugin("third", startup=never_startup),
        ],
        load_entrypoints=False,
    )
    with pytest.raises(PluginError, match="'broken' failed to start: OSError: cannot bind"):
        await get_host(app).startup()
    assert events == ["first started", "first cleaned up"]


async def test_shutdown_runs_for_every_plugin_even_if_one_fails(tmp_path: Path) -> None:
    events: list[str] = []

    async def failing_shutdown() -> None:
        raise RuntimeError("cleanup failed")

    app = create_app(
        tmp_path,
        plugins=[
            plugin("a", startup=lambda: None, shutdown=lambda: events.append("a")),
            plugin("b", startup=lambda: None, shutdown=failing_shutdown),
            plugin("c", startup=lambda: None, shutdown=lambda: events.append("c")),
        ],
        load_entrypoints=False,
    )
    host = get_host(app)
    await host.startup()
    await host.shutdown()
    assert events == ["c", "a"]  # reverse order; b's failure did not stop a


def test_a_missing_requirement_stops_start_up_naming_both(tmp_path: Path) -> None:
    needy = plugin("needy", requires=("absent",), startup=lambda: None)
    with pytest.raises(PluginError, match="'needy' requires plugin 'absent', which is not inst"):
        create_app(tmp_path, plugins=[needy], load_entrypoints=False)


def test_requires_must_be_a_tuple_of_names(tmp_path: Path) -> None:
    sloppy = plugin("sloppy")
    sloppy.REQUIRES = "hub"  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match="'sloppy' is invalid: REQUIRES must be a tuple"):
        create_app(tmp_path, plugins=[sloppy], load_entrypoints=False)


def test_plugins_requiring_each_other_in_a_cycle_are_refused(tmp_path: Path) -> None:
    a, b = plugin("a", requires=("b",)), plugin("b", requires=("a",))
    with pytest.raises(PluginError, match="in a cycle: a -> b -> a"):
        create_app(tmp_path, plugins=[a, b], load_entrypoints=False)


async def test_start_up_follows_requirements_and_shutdown_reverses_it(tmp_path: Path) -> None:
    events: list[str] = []

    def lifecycle(name: str, requires: tuple[str, ...] = ()) -> types.ModuleType:
        return plugin(
            name,
            requires,
            startup=lambda: events.append(f"start {name}"),
            connect=lambda: events.append(f"connect {name}"),
            disconnect=lambda: events.append(f"disconnect {name}"),
            shutdown=lambda: events.append(f"stop {name}"),
        )

    # Loaded needing-first: load order alone would start them the wrong way round.
    app = create_app(
        tmp_path,
        plugins=[lifecycle("app", ("web",)), lifecycle("web", ("db",)), lifecycle("db")],
        load_entrypoints=False,
    )
    host = get_host(app)
    await host.startup()
    assert events == [
        *("start db", "start web", "start app"),  # every startup, then every connect
        *("connect db", "connect web", "connect app"),
    ]
    events.clear()
    await host.shutdown()
    assert events == [
        *("disconnect app", "disconnect web", "disconnect db"),
        *("stop app", "stop web", "stop db"),
    ]


async def test_a_failed_connect_stops_start_up_and_undoes_every_step(tmp_path: Path) -> None:
    events: list[str] = []

    def refuse() -> None:
        raise OSError("connection refused")

    app = create_app(
        tmp_path,
        plugins=[
            plugin(
                "db",
                startup=lambda: events.append("start db"),
                connect=refuse,
                shutdown=lambda: events.append("stop db"),
            ),
            plugin(
                "web",
                ("db",),
                startup=lambda: events.append("start web"),
                connect=lambda: events.append("connect web"),
                disconnect=lambda: events.append("disconnect web"),
                shutdown=lambda: events.append("stop web"),
            ),
        ],
        load_entrypoints=False,
    )
    with pytest.raises(PluginError, match="'db' failed to start: OSError: connection refused"):
        await get_host(app).startup()
    assert events == ["start db", "start web", "stop web", "stop db"]


def test_a_requirement_orders_every_hook_transitively(tmp_path: Path) -> None:
    """Through a plugin that does not implement the hook, too."""
    plugins = Plugins.discover(
        [
            plugin("top", ("middle",), validate=lambda: None),
            plugin("middle", ("base",)),
            plugin("other", validate=lambda: None),
            plugin("base", validate=lambda: None),
        ],
        load_entrypoints=False,
    )
    assert [name for name, _ in plugins.bound("validate")] == ["base", "top", "other"]
    assert plugins.requires["top"] == ("middle",)


def test_the_hub_disabled_stops_start_up_naming_who_needs_it(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as caught:
        create_app(tmp_path, disabled=["hub"])
    assert "plugin 'centrifuge' requires plugin 'hub', which is disabled by " in str(caught.value)
    assert "REALTIME_DISABLE_PLUGINS" in str(caught.value)
    assert "HubClosed" not in str(caught.value)


def test_the_broker_disabled_names_every_plugin_that_needs_it(tmp_path: Path) -> None:
    with pytest.raises(PluginError) as caught:
        create_app(tmp_path, disabled=["broker"])
    for needy in ("hub", "broadcast", "centrifuge"):
        assert f"plugin {needy!r} requires plugin 'broker'" in str(caught.value)


async def test_the_broker_connects_after_every_plugin_wired_itself_to_it(tmp_path: Path) -> None:
    """The hub (and the centrifuge node) register callbacks on the broker in ``startup``;
    the broker starts in ``connect``, so its first subscription has every channel."""
    from realtime_broker import get_broker

    seen: list[object] = []

    def startup(host: Any) -> None:
        broker = get_broker(host)
        seen.append(broker.loop)  # None until the broker started
        broker.subscribe("wired", lambda publication: 0)

    app = create_app(tmp_path, plugins=[plugin("late", ("broker",), startup=startup)])
    host = get_host(app)
    starting = [name for name, _ in host.plugins.bound("startup", host=host)]
    assert starting.index("hub") < starting.index("centrifuge")
    assert [name for name, _ in host.plugins.bound("connect", host=host)] == ["broker"]
    async with app.test_app():
        broker = get_broker(host)
        assert seen == [None] and broker.loop is not None
        assert "wired" in broker.subscribers
        assert broker.loss_handlers and broker.presence_handlers and broker.channel_counters


def test_bundled_plugins_load_through_entry_points() -> None:
    plugins = Plugins.discover()
    names = {info.name: info for info in plugins.info()}
    assert {"websocket", "broadcast"} <= set(names)
    assert names["websocket"].distribution == "realtime"
    assert names["broadcast"].module == "realtime_broadcast.plugin"
    assert names["centrifuge"].requires == ("hub", "broker")


def test_plugins_can_be_disabled(tmp_path: Path) -> None:
    app = create_app(tmp_path, disabled=["broadcast"])
    assert "broadcast" not in get_host(app).functions


def test_a_wrapper_on_a_host_hook_is_refused_naming_the_plugin(tmp_path: Path) -> None:
    def startup() -> Any:
        yield

    module = types.ModuleType("wrapping")
    module.startup = hookimpl(wrapper=True)(startup)  # type: ignore[attr-defined]
    with pytest.raises(PluginError, match=r"'wrapping' is invalid: startup is a wrapper"):
        create_app(tmp_path, plugins=[module], load_entrypoints=False)


class AuthSpecs:
    """Hooks a plugin declares for others: the first answer decides."""

    @hookspec(firstresult=True)
    def authorize(self, user: str) -> bool | None:  # type: ignore[empty-body]
        """Whether ``user`` may do it; ``None`` to leave it to the next plugin."""


def test_plugins_declare_hooks_of_their_own_called_through_pluggy(tmp_path: Path) -> None:
    calls: list[str] = []

    def deny_mallory(user: str) -> bool | None:
        calls.append(f"deny_mallory({user})")
        return False if user == "mallory" else None

    def allow_everyone(user: str) -> bool:
        calls.append(f"allow_everyone({user})")
        return True

    def timing(user: str) -> Any:
        calls.append("wrapper before")
        result = yield
        calls.append(f"wrapper after: {result}")
        return result

    # The implementing plugins load before the one that declares the hook.
    last = plugin("last", authorize=allow_everyone)
    first = plugin("first")
    first.authorize = hookimpl(tryfirst=True)(deny_mallory)  # type: ignore[attr-defined]
    wrapping = plugin("wrapping")
    wrapping.authorize = hookimpl(wrapper=True)(timing)  # type: ignore[attr-defined]
    declares = plugin("declares", register_hookspecs=lambda: AuthSpecs)
    app = create_app(tmp_path, plugins=[last, first, wrapping, declares], load_entrypoints=False)
    host = get_host(app)
    assert host.hook.authorize(user="mallory") is False
    assert calls == ["wrapper before", "deny_mallory(mallory)", "wrapper after: False"]
    calls.clear()
    assert host.hook.authorize(user="alice") is True
    assert calls == [
        "wrapper before",
        "deny_mallory(alice)",
        "allow_everyone(alice)",
        "wrapper after: True",
    ]


def test_an_implementation_of_a_hook_nobody_declares_names_the_plugin(tmp_path: Path) -> None:
    stray = plugin("stray", authorize=lambda user: True)
    with pytest.raises(PluginError, match=r"'stray' is invalid.*authorize"):
        create_app(tmp_path, plugins=[stray], load_entrypoints=False)
