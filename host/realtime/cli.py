"""The ``realtime`` command: ``run`` serves the app with Hypercorn, ``plugins`` lists plugins."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from hypercorn.config import Config as ServerConfig

from . import gcpolicy
from .errors import PluginError
from .host import all_options, build_app, get_host
from .limits import raise_open_file_limit
from .logs import configure_logging, log_uncaught, secret_values
from .options import Option
from .plugins import DISABLE_ENV, Plugins
from .routes import route_kinds
from .server import loop_factory, serve_process, supervise
from .settings import (
    ACCESS_LOG,
    BACKLOG,
    BIND,
    GC_THRESHOLD,
    LOG_FORMAT,
    LOG_LEVEL,
    LOOP,
    SHUTDOWN_TIMEOUT,
    WORKERS,
)

log = logging.getLogger("realtime")


def _add_option(parser: argparse.ArgumentParser, option: Option) -> None:
    default = "(secret)" if option.secret else option.default
    # argparse formats help with %: a literal one ("90% of") must be doubled.
    help_text = f"{option.help} (env {option.env}; default: {default})".replace("%", "%%")
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
    listing = commands.add_parser("plugins", help="list discovered plugins, routes and functions")
    listing.add_argument("--json", action="store_true", help="print JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Until the settings are known: warnings only, with the patterns that need no
    # secret's value (a plugin that logs while it loads).
    configure_logging("warning")
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
        if name not in ("command", "json") and value is not None
    }
    if args.command == "plugins":
        given.pop("app", None)
    try:
        app = build_app(plugins, given, os.environ, look_in_cwd=True)
    except PluginError as exc:
        print(f"realtime: {exc}", file=sys.stderr)
        return 2
    if args.command == "plugins":
        return list_plugins(app, as_json=args.json)
    settings = get_host(app).settings
    # Every secret option's value, the host's and each plugin's, is redacted.
    secrets = secret_values((option for _, option in all_options(plugins)), settings)
    configure_logging(LOG_LEVEL.get(settings), LOG_FORMAT.get(settings), secrets)
    log_uncaught()
    return run(app)


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
                "requires": list(info.requires),
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
        if entry["requires"]:
            print(f"    requires  {', '.join(entry['requires'])}")
        for route in entry["routes"]:
            scopes = "+".join("ws" if s == "websocket" else s for s in route["scopes"])
            print(f"    route     {scopes:<7} {route['path']}")
        for function in entry["functions"]:
            print(f"    function  {function}()")
    return 0


def server_config(app: Any) -> ServerConfig:
    host = get_host(app)
    config = ServerConfig()
    config.bind = [host.setting(BIND)]
    config.backlog = host.setting(BACKLOG)
    config.graceful_timeout = host.setting(SHUTDOWN_TIMEOUT)
    # Through the logging module, so one handler formats and redacts everything
    # (logs.configure_logging): with --log-format json, access lines are JSON too.
    config.errorlog = logging.getLogger("hypercorn.error")
    if host.setting(ACCESS_LOG):
        config.accesslog = logging.getLogger("hypercorn.access")
    host.plugins.call_each("configure_server", config=config, settings=host.settings)
    return config


def run(app: Any) -> int:
    host = get_host(app)
    if not host.app_dir.is_dir():
        print(f"realtime: app directory {str(host.app_dir)!r} does not exist", file=sys.stderr)
        return 2
    config = server_config(app)
    try:
        factory = loop_factory(host.setting(LOOP))
    except ImportError:
        print("realtime: --loop uvloop needs the uvloop package", file=sys.stderr)
        return 2
    workers: int = host.setting(WORKERS)
    if host.config_files:
        log.info(
            "settings from %s (flags and REALTIME_* variables override %s)",
            ", then ".join(map(str, host.config_files)),
            "it" if len(host.config_files) == 1 else "them",
        )
    open_files = raise_open_file_limit()
    log.info("open-file limit: %d", open_files)
    # Process-wide, so here, for the serving process and the workers it forks, never in
    # create_app: at Python's 700 a connect storm spent half its CPU collecting.
    gcpolicy.tune(host.setting(GC_THRESHOLD))
    bind: str = host.setting(BIND)
    log.info(
        "serving %s on %s (%s loop, %d worker%s)",
        host.app_dir.resolve(),
        bind if "://" in bind else f"http://{bind}",  # fd://N: a socket handed over
        "asyncio" if factory is None else "uvloop",
        workers,
        "" if workers == 1 else "s",
    )
    if workers == 1:
        return serve_process(app, config, factory)
    return supervise(app, config, factory, workers)
