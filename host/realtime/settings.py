"""The host's own settings, each a typed handle: ``host.setting(WORKERS)`` is an ``int``.

Plugins declare theirs the same way, as constants of their ``plugin`` module returned
from ``register_options``; code that needs another owner's setting imports the handle.
"""

from __future__ import annotations

from typing import Any

from .options import Option
from .scripts import DEFAULT_MAX_FORM_FIELDS, DEFAULT_MAX_FORM_SIZE

DEFAULT_APP_DIR = "app"
LOG_LEVELS = ("debug", "info", "warning", "error")

BIND = Option("bind", "127.0.0.1:8000", "HOST:PORT to listen on (Caddy proxies to the default)")

INTERNAL_BIND = Option(
    "internal_bind",
    "",
    "HOST:PORT (or fd://N) of the internal listener, which serves /metrics, /-/health "
    "and /admin and never the public site (127.0.0.1:9000, say; empty: off)",
)

CONFIG = Option(
    "config",
    "",
    "TOML file of settings, one key per option (default: ./realtime.toml if present); "
    "flags and environment variables override it, and it overrides the app's own "
    "APP/realtime.toml",
)

APP = Option("app", DEFAULT_APP_DIR, "directory of drop-in scripts and static files")

THREADS = Option("threads", 8, "worker threads that run drop-in scripts", type=int)

WORKERS = Option(
    "workers",
    1,
    "server processes sharing the port (more than 1 needs a shared --broker)",
    type=int,
)

LOOP = Option(
    "loop",
    "asyncio",
    "event loop: asyncio, or uvloop (pip install 'realtime[uvloop]'; measured no faster "
    "here, see bench/README.md)",
    choices=("asyncio", "uvloop"),
)

DEBUG = Option("debug", False, "put tracebacks in 500 responses", type=bool)

LOG_LEVEL = Option("log_level", "info", "least severe log records shown", choices=LOG_LEVELS)

ACCESS_LOG = Option("access_log", False, "log every request", type=bool)

LOG_FORMATS = ("text", "json")

LOG_FORMAT = Option(
    "log_format",
    "text",
    "text, or json: one JSON object per line (time, level, logger, message, ids)",
    choices=LOG_FORMATS,
)

FORWARDED_ALLOW_IPS = Option(
    "forwarded_allow_ips",
    "127.0.0.1,::1",
    "comma-separated peers whose X-Forwarded-* headers are trusted ('*' for any)",
)

ALLOWED_ORIGINS = Option(
    "allowed_origins",
    "",
    "comma-separated origin globs whose pages may open WebSockets here, besides this "
    "host's own (https://*.example.com); handshakes without Origin always pass",
)

ALLOWED_HOSTS = Option(
    "allowed_hosts",
    "",
    "comma-separated Host name globs served here (example.com,*.example.com); any "
    "other Host gets 400, which stops DNS-rebinding pages (empty: any host)",
)

MAX_CONNECTIONS = Option(
    "max_connections",
    0,
    "WebSocket connections this process holds at most; past it a handshake gets 503 "
    "(0: 90% of the open-file limit, which is raised to its hard limit at start)",
    type=int,
)

MAX_CONNECTIONS_PER_IP = Option(
    "max_connections_per_ip",
    1000,
    "WebSocket connections one client address may hold; past it a handshake gets 429 "
    "(behind Caddy, the browser's address; 0: no limit)",
    type=int,
)

BACKLOG = Option(
    "backlog",
    4096,
    "connections the kernel queues for accepting (the listen backlog; capped by "
    "net.core.somaxconn): room for every client reconnecting at once",
    type=int,
)

GC_THRESHOLD = Option(
    "gc_threshold",
    20_000,
    "allocations between the garbage collector's youngest-generation runs (Python's "
    "default: 700, which makes it sweep every connection again and again while "
    "thousands connect; 0 keeps Python's)",
    type=int,
)

MAX_BODY_SIZE = Option(
    "max_body_size", 1024 * 1024, "largest request body a script accepts, bytes", type=int
)

SHUTDOWN_TIMEOUT = Option(
    "shutdown_timeout",
    5.0,
    "seconds a graceful stop (SIGTERM, Ctrl-C) waits for connections to flush and close",
    type=float,
)

SCRIPT_TIMEOUT = Option(
    "script_timeout",
    30.0,
    "seconds a script may run before the request gets 504 (PHP's max_execution_time)",
    type=float,
)

MAX_FORM_SIZE = Option(
    "max_form_size",
    DEFAULT_MAX_FORM_SIZE,
    "largest urlencoded or JSON body, or multipart text fields in all, a script may "
    "parse, bytes (413 above; uploaded files may use all of --max-body-size)",
    type=int,
)

MAX_FORM_FIELDS = Option(
    "max_form_fields",
    DEFAULT_MAX_FORM_FIELDS,
    "most fields (multipart: parts) a form may have (413 above)",
    type=int,
)

#: In ``--help`` order.
HOST_OPTIONS: tuple[Option[Any], ...] = (
    BIND,
    INTERNAL_BIND,
    CONFIG,
    APP,
    THREADS,
    WORKERS,
    LOOP,
    DEBUG,
    LOG_LEVEL,
    ACCESS_LOG,
    LOG_FORMAT,
    FORWARDED_ALLOW_IPS,
    ALLOWED_ORIGINS,
    ALLOWED_HOSTS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    BACKLOG,
    GC_THRESHOLD,
    MAX_BODY_SIZE,
    SHUTDOWN_TIMEOUT,
    SCRIPT_TIMEOUT,
    MAX_FORM_SIZE,
    MAX_FORM_FIELDS,
)
