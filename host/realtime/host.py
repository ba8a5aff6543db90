"""The host: a Quart application built from whatever plugins were discovered.

It knows routes, native functions, drop-in scripts and lifecycle hooks; it knows
nothing about WebSockets or broadcasting, which are plugins' business.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import re
import secrets
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from quart import Quart, Response, request, send_file
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import HTTPException
from werkzeug.http import parse_range_header

from .errors import HTTPError, PluginError
from .executor import ScriptThreads
from .internal import build_internal_app, check_bind
from .limits import ConnectionLimits
from .logs import log_access, log_context
from .options import CONFIG_FILE, Option, app_config_path, config_path, read_config, resolve
from .origins import OriginCheck
from .plugins import Plugins, await_me_maybe
from .proxy import ForwardedHeadersMiddleware
from .routes import ALL_METHODS, TEXT, AnyRoute, add_routes, check_routes
from .scripts import (
    RESERVED_NAMES,
    SCRIPT_SUFFIX,
    CompileCache,
    ScriptRequest,
    ScriptResponse,
    build_namespace,
    execute,
)
from .scripts import (
    resolve as resolve_path,
)
from .settings import (
    ALLOWED_HOSTS,
    ALLOWED_ORIGINS,
    APP,
    BACKLOG,
    CONFIG,
    DEBUG,
    FORWARDED_ALLOW_IPS,
    GC_THRESHOLD,
    HOST_OPTIONS,
    INTERNAL_BIND,
    MAX_BODY_SIZE,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_IP,
    MAX_FORM_FIELDS,
    MAX_FORM_SIZE,
    SCRIPT_TIMEOUT,
    SHUTDOWN_TIMEOUT,
    THREADS,
    WORKERS,
)
from .settings import (
    DEFAULT_APP_DIR as DEFAULT_APP_DIR,  # still importable from here
)
from .settings import (
    LOG_LEVELS as LOG_LEVELS,
)
from .telemetry import NOOP, Instrument, Telemetry

log = logging.getLogger("realtime")

T = TypeVar("T")

EXTENSION_KEY = "realtime"
#: An ``X-Request-Id`` a proxy sent that is short and plain enough to log as it is.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")

_current: contextvars.ContextVar[Host] = contextvars.ContextVar("realtime_current_host")


def current_host() -> Host:
    """The host serving this request or running this script, from any thread it runs in."""
    try:
        return _current.get()
    except LookupError:
        from quart import current_app

        if current_app:
            return get_host(current_app._get_current_object())  # type: ignore[attr-defined]
        raise RuntimeError("no realtime host is active here") from None


def get_host(app: Quart) -> Host:
    host = app.extensions.get(EXTENSION_KEY)
    if not isinstance(host, Host):
        raise RuntimeError("this Quart app was not built by realtime.create_app")
    return host


def _released() -> None:
    """The release of a connection nothing counted."""


class Host:
    """Per-application state: plugins, settings, functions, the script runner."""

    def __init__(self, app: Quart, plugins: Plugins, settings: Mapping[str, Any]) -> None:
        self.app = app
        self.plugins = plugins
        #: Plugin-declared hooks, called through pluggy (``host.hook.authorize(...)``).
        self.hook = plugins.hook
        #: What plugins count and time; exported by the metrics plugin, if installed.
        self.telemetry = Telemetry()
        self.settings: Mapping[str, Any] = dict(settings)
        self.app_dir = Path(self.setting(APP))
        #: The settings files read, the operator's before the app's (for the log).
        self.config_files: tuple[Path, ...] = ()
        self.debug: bool = self.setting(DEBUG)
        self.functions: dict[str, Callable[..., Any]] = {}
        #: Which plugin registered each function, for conflicts and ``realtime plugins``.
        self.function_owner: dict[str, str] = {}
        self.routes: list[tuple[str, AnyRoute]] = []
        #: ``register_internal_routes``' answers, served only by :attr:`internal_app`.
        self.internal_routes: list[tuple[str, AnyRoute]] = []
        #: The internal listener's app (``--internal-bind``); ``None`` when it is off.
        self.internal_app: Quart | None = None
        #: The refusing middlewares of the public app (set by ``build_app``), which
        #: get their handshake counter at start-up.
        self.limits: ConnectionLimits | None = None
        self.origin_check: OriginCheck | None = None
        self.script_duration: Instrument = NOOP
        self.compile_cache = CompileCache()
        self.executor: ScriptThreads | None = None
        #: Plugins whose ``startup`` (``connect``) ran, in order, for undoing in reverse.
        self._started: list[str] = []
        self._connected: list[str] = []
        self.draining = False
        #: Why start-up failed, for the command line to say in one line.
        self.startup_error: PluginError | None = None
        self._scripts_running = 0
        self._scripts_idle = asyncio.Event()
        self._scripts_idle.set()

    def setting(self, option: Option[T]) -> T:
        """``option``'s value, typed as its owner declared it (its default if the owner
        is not loaded): ``host.setting(MAX_BODY_SIZE)`` rather than a string and a fallback."""
        return option.get(self.settings)

    def hold_connection(self, scope: Any) -> Callable[[], None] | tuple[int, str]:
        """Count a long-lived HTTP response as one more connection (see
        :meth:`ConnectionLimits.acquire`): ``--max-connections`` and its per-address cap
        bound WebSockets and streams together. The release, or the refusal's status and text."""
        if self.limits is None:  # an app not built by build_app: nothing counts
            return _released
        return self.limits.acquire(scope)

    # Registration -----------------------------------------------------------

    def collect(self) -> None:
        """Gather routes and functions, refusing any name claimed twice."""
        self.routes.extend(check_routes(self.plugins.call_each("register_routes", host=self)))
        # The internal listener's own: the host answers /-/health there too.
        self.internal_routes.extend(
            check_routes(
                self.plugins.call_each("register_internal_routes", host=self),
                {("http", "/-/health"): "host"},
            )
        )
        function_owner = self.function_owner
        for plugin, functions in self.plugins.call_each("register_functions", host=self):
            for name, function in dict(functions).items():
                if not name.isidentifier() or name in RESERVED_NAMES:
                    raise PluginError(f"plugin {plugin!r} registers an invalid function {name!r}")
                if name in function_owner:
                    raise PluginError(
                        f"function {name!r} is claimed by both plugin "
                        f"{function_owner[name]!r} and plugin {plugin!r}"
                    )
                if not callable(function):
                    raise PluginError(f"plugin {plugin!r}: function {name!r} is not callable")
                function_owner[name] = plugin
                self.functions[name] = function

    def validate(self) -> None:
        """Let every plugin refuse the configuration before anything is served."""
        if self.setting(WORKERS) < 1 or self.setting(THREADS) < 1:
            raise PluginError("--workers and --threads must be at least 1")
        if self.setting(BACKLOG) < 1:
            raise PluginError("--backlog must be at least 1")
        if self.setting(GC_THRESHOLD) < 0:
            raise PluginError("--gc-threshold must be 0 (Python's default) or positive")
        try:
            check_bind(self)
        except ValueError as exc:
            raise PluginError(str(exc)) from None
        for plugin, call in self.plugins.bound("validate", host=self):
            try:
                call()
            except ValueError as exc:
                raise PluginError(f"{exc} (plugin {plugin!r})") from None
            except Exception as exc:
                raise PluginError(
                    f"plugin {plugin!r} failed in validate: {type(exc).__name__}: {exc}"
                ) from exc

    def install(self) -> None:
        add_routes(self.app, self.routes)
        if self.setting(INTERNAL_BIND):
            self.internal_app = build_internal_app(self)
            self.internal_app.extensions[EXTENSION_KEY] = self
        self.app.register_error_handler(HTTPError, self.http_error)
        self.app.add_url_rule("/-/health", "realtime:health", self.health)
        for rule in ("/", "/<path:path>"):
            self.app.add_url_rule(
                rule,
                "realtime:app",
                self.serve,
                methods=list(ALL_METHODS),
                provide_automatic_options=False,
                defaults={"path": ""} if rule == "/" else None,
            )
        self.app.before_serving(self.startup)
        self.app.after_serving(self.shutdown)

    # Lifecycle (Caddy's provision / cleanup) --------------------------------

    async def startup(self) -> None:
        """Every plugin's ``startup``, then every ``connect``, in requirement order.

        A failure stops start-up naming the plugin, after cleaning up what had started.
        """
        self.executor = ScriptThreads(self.setting(THREADS))
        self._make_instruments()
        token = _current.set(self)
        try:
            for hook, done in (("startup", self._started), ("connect", self._connected)):
                for plugin, call in self.plugins.bound(hook, host=self):
                    try:
                        await await_me_maybe(call())
                    except Exception as exc:
                        await self.shutdown()
                        self.startup_error = PluginError(
                            f"plugin {plugin!r} failed to start: {type(exc).__name__}: {exc}"
                        )
                        raise self.startup_error from exc
                    done.append(plugin)
        finally:
            _current.reset(token)

    def _make_instruments(self) -> None:
        """The host's own, made here: after the fork and the exporter's installation."""
        self.script_duration = self.telemetry.histogram(
            "realtime_script_duration_seconds",
            "Drop-in script runs, by the HTTP status answered",
            ("status",),
        )
        handshakes = self.telemetry.counter(
            "realtime_handshakes_total", "WebSocket handshakes, by outcome", ("result",)
        )
        if self.limits is not None:
            self.limits.handshakes = handshakes
        if self.origin_check is not None:
            self.origin_check.handshakes = handshakes

    async def health(self) -> tuple[str, int]:
        """For load balancers: 503 once stopping, or while a plugin reports a problem."""
        if self.draining:
            return "draining\n", 503
        problems = []
        for plugin, call in self.plugins.bound("health", host=self):
            try:
                reason = call()
            except Exception as exc:
                log.exception("plugin %r failed in health", plugin)
                reason = f"health check failed: {type(exc).__name__}"
            if reason:
                problems.append(f"{plugin}: {reason}\n")
        return ("".join(problems), 503) if problems else ("ok\n", 200)

    async def drain(self) -> None:
        """Before the server stops: finish running scripts, let plugins close connections.

        Both are bounded by the ``shutdown_timeout`` setting.
        """
        self.draining = True
        timeout = self.setting(SHUTDOWN_TIMEOUT)

        async def drain_plugin(plugin: str, call: Callable[[], Any]) -> None:
            try:
                await await_me_maybe(call())
            except Exception:
                log.error("plugin %r failed to drain", plugin, exc_info=True)

        async def scripts_done() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scripts_idle.wait(), timeout)

        calls = self.plugins.bound("drain", host=self, grace=timeout)
        await asyncio.gather(scripts_done(), *(drain_plugin(p, c) for p, c in calls))

    async def shutdown(self) -> None:
        """``disconnect`` then ``shutdown``, each in reverse of the order they ran in.

        Every plugin that got that far is called, even when another one fails.
        """
        for hook, done in (("disconnect", self._connected), ("shutdown", self._started)):
            calls = dict(self.plugins.bound(hook, host=self))
            for plugin in reversed(done):
                call = calls.get(plugin)
                if call is None:
                    continue
                try:
                    await await_me_maybe(call())
                except Exception:
                    what = "shut down" if hook == "shutdown" else hook
                    log.error("plugin %r failed to %s", plugin, what, exc_info=True)
            done.clear()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)
            self.executor = None

    async def http_error(self, exc: HTTPError) -> Response:
        """A plugin's Quart route raised an ``HTTPError``: answer its status, as scripts do.

        So a backend's :class:`~realtime.errors.Unavailable` is a 503 wherever it surfaces.
        """
        level = logging.WARNING if exc.status >= 500 else logging.INFO
        log.log(level, "%s answered %d: %s", request.path, exc.status, exc)
        return Response(f"{exc}\n", exc.status, content_type=TEXT)

    # Drop-in scripts and static files ---------------------------------------

    async def serve(self, path: str) -> Response | tuple[str, int] | Any:
        """A script, or a static file for GET and HEAD.

        ``resolve_path`` has refused hidden and private files (sources, backups) and
        links whose URL and target disagree on being a script.
        """
        target = resolve_path(self.app_dir, path)
        if target is None or target == self.app_dir.resolve() / CONFIG_FILE:
            return "Not Found\n", 404  # the app's settings file is not for browsers
        if target.suffix == SCRIPT_SUFFIX:
            return await self.run_script(target)
        if request.method not in ("GET", "HEAD"):
            return _not_allowed("GET, HEAD, OPTIONS")
        wanted = parse_range_header(request.headers.get("Range"))
        if wanted is not None and wanted.units == "bytes" and len(wanted.ranges) == 1:
            begin = wanted.ranges[0][0]
            if begin < 0:
                # Quart 0.22 passes a suffix range ("bytes=-5", the last 5 bytes) on
                # unresolved and then fails an assertion (a 500): resolve it here.
                start = max(target.stat().st_size + begin, 0)
                request.headers["Range"] = f"bytes={start}-"
        return await send_file(target, conditional=True)

    async def run_in_thread(self, function: Callable[..., T], *args: Any) -> T:
        """Run blocking code (an app's event handler, say) in the script threads, with
        :func:`current_host` and the caller's log ids set there, as a script has them."""
        if self.executor is None:
            raise RuntimeError("the host is not serving (startup has not run)")
        context = contextvars.copy_context()
        context.run(_current.set, self)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, context.run, function, *args)

    async def run_script(self, path: Path) -> Response:
        """:meth:`_run_script`, timed, logged and counted once per run whatever it answers.

        Under a request id (a proxy's plain ``X-Request-Id``, else a fresh one), which
        every record of the run carries, the script's own included: its thread runs in
        a copy of this context.
        """
        given = request.headers.get("X-Request-Id", "")
        request_id = given if REQUEST_ID.fullmatch(given) else secrets.token_hex(8)
        started = time.perf_counter()
        status = 500
        with log_context(request=request_id):
            try:
                response = await self._run_script(path)
                status = response.status_code
                return response
            except HTTPException as exc:  # Quart's own: a body over MAX_CONTENT_LENGTH
                status = exc.code or 500
                raise
            finally:
                duration = time.perf_counter() - started
                self.script_duration.labels(str(status)).observe(duration)
                log_access("script", request.method, request.path, status, duration)

    async def _run_script(self, path: Path) -> Response:
        """Run a script for a method it accepts (``METHODS``, else GET and POST).

        HEAD and OPTIONS are answered from its declaration without running it, so a
        link checker or a CORS preflight never sends a broadcast; other methods get 405.
        Only the host's own deadline gives 504: a script raising ``TimeoutError``
        itself has failed like any script that raises.
        """
        loop = asyncio.get_running_loop()
        if self.executor is None:
            raise RuntimeError("the host is not serving (startup has not run)")
        relative = path.relative_to(self.app_dir.resolve())

        def failed(exc: Exception) -> Response:
            log.exception("script %s raised", relative)
            body = f"Internal Server Error: {relative} raised {type(exc).__name__}\n"
            if self.debug:
                body += "\n" + traceback.format_exc()
            return Response(body, 500, content_type=TEXT)

        try:
            script = self.compile_cache.get(path)
        except Exception as exc:  # a SyntaxError, or a METHODS that cannot be read
            return failed(exc)
        if request.method not in script.methods:
            get_allowed = request.method == "HEAD" and "GET" in script.methods
            return _not_allowed(script.allow, head_status=200 if get_allowed else 405)
        script_request = await self._read_request()
        if isinstance(script_request, Response):
            return script_request
        script_response = ScriptResponse()
        context = contextvars.copy_context()
        context.run(_current.set, self)
        namespace = build_namespace(path, self.functions, script_request, script_response)

        def run() -> None:
            """In the script's thread, which may run on past the deadline with its files."""
            try:
                execute(script.code, namespace)
            finally:
                script_request.close()

        deadline = asyncio.timeout(self.setting(SCRIPT_TIMEOUT))
        self._scripts_running += 1
        self._scripts_idle.clear()
        try:
            try:
                async with deadline:
                    await loop.run_in_executor(self.executor, context.run, run)
            except TimeoutError:
                if not deadline.expired():
                    raise  # the script's own: handled below like any other exception
                # A thread cannot be killed: the script runs on, but its client is not kept waiting.
                log.error("script %s ran over %s s", relative, self.setting(SCRIPT_TIMEOUT))
                return Response(f"{relative} did not finish in time\n", 504, content_type=TEXT)
        except HTTPError as exc:
            level = logging.WARNING if exc.status >= 500 else logging.INFO
            log.log(level, "script %s answered %d: %s", relative, exc.status, exc)
            return Response(f"{exc}\n", exc.status, content_type=TEXT)
        except Exception as exc:
            return failed(exc)
        finally:
            self._scripts_running -= 1
            if not self._scripts_running:
                self._scripts_idle.set()
        response = Response(script_response.body, script_response.status)
        response.headers = Headers(script_response.headers)
        response.headers["Content-Length"] = str(len(script_response.body))
        return response

    async def _read_request(self) -> ScriptRequest | Response:
        """Read the body on the loop, which is I/O only; parse nothing here.

        Form and JSON are parsed on first use in the script's thread, within
        ``max_form_size`` and ``max_form_fields``: a form bomb must not stall the loop.
        """
        limit = self.setting(MAX_BODY_SIZE)
        too_large = f"request body is over the {limit}-byte limit\n"
        if request.content_length is not None and request.content_length > limit:
            return Response(too_large, 413, content_type=TEXT)
        body = await request.get_data(cache=True, as_text=False, parse_form_data=False)
        if len(body) > limit:
            return Response(too_large, 413, content_type=TEXT)
        return ScriptRequest(
            method=request.method,
            path=request.path,
            query=MultiDict(request.args),
            headers=Headers(request.headers),
            body=body,
            remote_addr=request.remote_addr,
            scheme=request.scheme,
            host=request.host,
            cookies=dict(request.cookies),
            max_form_size=self.setting(MAX_FORM_SIZE),
            max_form_fields=self.setting(MAX_FORM_FIELDS),
        )


def _not_allowed(allow: str, head_status: int = 405) -> Response:
    """Answer a method nothing runs for: OPTIONS 204, HEAD ``head_status``, else 405.

    Always with ``Allow``; OPTIONS and HEAD without a body, a length or a type that
    would describe one.
    """
    if request.method in ("OPTIONS", "HEAD"):
        status = 204 if request.method == "OPTIONS" else head_status
        response = Response(None, status, headers={"Allow": allow})
        del response.headers["Content-Type"]
        return response
    return Response("Method Not Allowed\n", 405, headers={"Allow": allow}, content_type=TEXT)


def create_app(
    app_dir: str | os.PathLike[str] | None = None,
    *,
    settings: Mapping[str, Any] | None = None,
    plugins: Iterable[object] = (),
    load_entrypoints: bool = True,
    disabled: Iterable[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Quart:
    """Build a fresh host: discover plugins, resolve settings, register routes and functions.

    Tests pass ``plugins=[...]`` and ``load_entrypoints=False`` to inject plugins directly.
    """
    found = Plugins.discover(plugins, load_entrypoints=load_entrypoints, disabled=disabled)
    given = dict(settings or {})
    if app_dir is not None:
        given["app"] = os.fspath(app_dir)
    return build_app(found, given, os.environ if environ is None else environ)


def all_options(plugins: Plugins) -> list[tuple[str, Option]]:
    """Host options then each plugin's, refusing a name declared twice."""
    owned: dict[str, str] = {option.name: "host" for option in HOST_OPTIONS}
    options = [("host", option) for option in HOST_OPTIONS]
    for plugin, declared in plugins.call_each("register_options"):
        for option in declared:
            if option.name in owned:
                raise PluginError(
                    f"option {option.flag} is declared by both {owned[option.name]!r} "
                    f"and plugin {plugin!r}"
                )
            owned[option.name] = plugin
            options.append((plugin, option))
    return options


def build_app(
    plugins: Plugins,
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    *,
    look_in_cwd: bool = False,
) -> Quart:
    """The app for resolved settings: flag or code, then environment, then the operator's
    file, then the app's, then default.

    The operator's file is ``given["config"]``, else ``REALTIME_CONFIG``, else
    (``look_in_cwd``, as the command line does) ``realtime.toml`` in the working
    directory if present. The app's is ``realtime.toml`` in the app directory, if the
    app ships one (the demo's channel namespaces): it may not set ``app`` or ``config``.
    """
    options = [option for _, option in all_options(plugins)]
    try:
        path = config_path(CONFIG.get(given) or None, environ, look_in_cwd=look_in_cwd)
        file = read_config(path) if path is not None else {}
        if CONFIG.name in file:
            raise ValueError(f"config file {str(path)!r} may not name another config file")
        source = f"config file {str(path)!r}"
        settings = resolve(options, given, environ, file, source=source)
        shipped = app_config_path(APP.get(settings))
        if shipped is not None and not (path is not None and path.samefile(shipped)):
            table = read_config(shipped)
            for key in (APP.name, CONFIG.name):
                if key in table:
                    raise ValueError(
                        f"config file {str(shipped)!r} ships with the app: it may not set {key}"
                    )
            below = [(table, f"config file {str(shipped)!r}")]
            settings = resolve(options, given, environ, file, source=source, below=below)
        else:
            shipped = None
        settings[CONFIG.name] = str(path) if path is not None else ""
    except ValueError as exc:
        raise PluginError(str(exc)) from None
    app = Quart("realtime", static_folder=None)
    app.url_map.merge_slashes = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_SIZE.get(settings)
    host = Host(app, plugins, settings)
    host.config_files = tuple(p for p in (path, shipped) if p is not None)
    app.extensions[EXTENSION_KEY] = host
    host.collect()
    host.validate()
    host.install()
    host.limits = ConnectionLimits(
        app.asgi_app,
        total=MAX_CONNECTIONS.get(settings),
        per_address=MAX_CONNECTIONS_PER_IP.get(settings),
    )
    host.origin_check = OriginCheck(
        host.limits,
        ALLOWED_ORIGINS.get(settings).split(","),
        ALLOWED_HOSTS.get(settings).split(","),
    )
    app.asgi_app = host.origin_check  # type: ignore[method-assign]
    trusted = [ip.strip() for ip in FORWARDED_ALLOW_IPS.get(settings).split(",") if ip.strip()]
    app.asgi_app = ForwardedHeadersMiddleware(app.asgi_app, trusted)  # type: ignore[method-assign]
    return app
