"""The ``realtime`` command: ``run`` serves the app with Hypercorn, ``plugins`` lists plugins."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config as ServerConfig
from hypercorn.utils import LifespanFailureError

from .errors import PluginError
from .host import all_options, build_app, get_host
from .options import Option
from .plugins import DISABLE_ENV, Plugins
from .routes import route_kinds

log = logging.getLogger("realtime")

#: Seconds Hypercorn waits for its own connection tasks once the host has drained.
DRAINED_GRACE = 0.5


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    help_text = f"{option.help} (env {option.env}; default: {option.default})"
    if option.type is bool:
        parser.add_argument(
            option.flag,
            dest=option.name,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=help_text,
        )
    else:
        parser.add_argument(
            option.flag,
            dest=option.name,
            default=None,
            metavar=option.name.upper(),
            choices=option.choices,
            help=help_text,
        )


def build_parser(plugins: Plugins) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realtime",
        description="A WebSocket broadcast server for drop-in Python scripts.",
        epilog=(
            "Every option of 'run' can also be set by its environment variable "
            f"(REALTIME_BIND, REALTIME_APP, REALTIME_THREADS, ...). {DISABLE_ENV}=a,b "
            "skips the named plugins. See 'realtime run --help'."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser(
        "run",
        help="serve the app with Hypercorn",
        description="Serve app/ with Hypercorn. Options fall back to their REALTIME_* variable.",
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for owner, option in all_options(plugins):
        if owner not in groups:
            title = "host options" if owner == "host" else f"plugin {owner!r}"
            groups[owner] = run.add_argument_group(title)
        _add_option(groups[owner], option)  # type: ignore[arg-type]
    run.add_argument(
        "--log-level",
        default=os.environ.get("REALTIME_LOG_LEVEL", "info"),
        help="debug, info, warning or error (env REALTIME_LOG_LEVEL; default: info)",
    )
    run.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("REALTIME_ACCESS_LOG", "") not in ("", "0", "false"),
        help="log every request (env REALTIME_ACCESS_LOG)",
    )
    listing = commands.add_parser("plugins", help="list discovered plugins, routes and functions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        plugins = Plugins.discover()
        parser = build_parser(plugins)
    except PluginError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    given = {
        name: value
        for name, value in vars(args).items()
        if name not in ("command", "json", "log_level", "access_log") and value is not None
    }
    if args.command == "plugins":
        given.pop("app", None)
    try:
        app = build_app(plugins, given, os.environ)
    except PluginError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    if args.command == "plugins":
        return list_plugins(app, as_json=args.json)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return run(app, access_log=args.access_log)


def list_plugins(app: Any, *, as_json: bool) -> int:
    host = get_host(app)
    report: list[dict[str, Any]] = []
    for info in host.plugins.info():
        routes = [
            {"path": route.path, "kind": type(route).__name__, "scopes": list(route_kinds(route))}
            for owner, route in host.routes
            if owner == info.name
        ]
        functions = sorted(n for n, owner in host.function_owner.items() if owner == info.name)
        report.append(
            {
                "name": info.name,
                "module": info.module,
                "distribution": info.distribution,
                "version": info.version,
                "hooks": list(info.hooks),
                "routes": routes,
                "functions": functions,
            }
        )
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    for entry in report:
        origin = f"{entry['distribution']} {entry['version']}" if entry["distribution"] else "local"
        print(f"{entry['name']}  ({entry['module']}, {origin})")
        for route in entry["routes"]:
            scopes = "+".join("ws" if s == "websocket" else s for s in route["scopes"])
            print(f"    route     {scopes:<7} {route['path']}")
        for function in entry["functions"]:
            print(f"    function  {function}()")
    return 0


def server_config(app: Any, *, access_log: bool) -> ServerConfig:
    host = get_host(app)
    config = ServerConfig()
    config.bind = [host.settings["bind"]]
    config.graceful_timeout = host.settings["shutdown_timeout"]
    # Through the logging module, so one configuration formats everything.
    config.errorlog = logging.getLogger("hypercorn.error")
    if access_log:
        config.accesslog = logging.getLogger("hypercorn.access")
    host.plugins.call_each("configure_server", config=config, settings=host.settings)
    return config


def run(app: Any, *, access_log: bool = False) -> int:
    host = get_host(app)
    if not host.app_dir.is_dir():
        print(f"realtime: app directory {str(host.app_dir)!r} does not exist", file=sys.stderr)
        return 2
    config = server_config(app, access_log=access_log)
    try:
        loop_factory = _loop_factory(host.settings["loop"])
    except ImportError:
        print("realtime: --loop uvloop needs the uvloop package", file=sys.stderr)
        return 2
    log.info(
        "serving %s on http://%s (%s loop)",
        host.app_dir.resolve(),
        host.settings["bind"],
        "asyncio" if loop_factory is None else "uvloop",
    )
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_serve(app, config))
    except (PluginError, LifespanFailureError) as exc:
        # The traceback is already in the log; end with the one line that matters.
        print(f"realtime: {host.startup_error or exc}", file=sys.stderr)
        return 1
    return 0


def _loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when asked for, or when installed and nothing was asked; else asyncio's."""
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _quiet_cancellations(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """Connections cancelled at exit are expected; anything else is still reported."""
    if isinstance(context.get("exception"), asyncio.CancelledError):
        return
    loop.default_exception_handler(context)


async def _serve(app: Any, config: ServerConfig) -> None:
    """Serve until SIGINT or SIGTERM, then let plugins drain before Hypercorn stops."""
    host = get_host(app)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    async def shutdown_trigger() -> None:
        await stop.wait()
        log.info("stopping: draining (up to %s s)", config.graceful_timeout)
        await host.drain()
        # Scripts have finished and plugins have closed their connections. What
        # Hypercorn still waits for is idle: its WebSocket ping tasks sleep out their
        # interval after the socket is gone. Don't make Ctrl-C wait for them.
        config.graceful_timeout = DRAINED_GRACE
        loop.set_exception_handler(_quiet_cancellations)

    await serve(app, config, shutdown_trigger=shutdown_trigger)
