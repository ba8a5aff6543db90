"""realtime: a Quart host that runs drop-in Python scripts and loads plugins by entry point."""

from .errors import HTTPError, PluginError, Unavailable
from .hookspecs import hookimpl, hookspec
from .host import Host, create_app, current_host, get_host
from .limits import DETACH, LogThrottle
from .logs import bind_context, log_access, log_context
from .options import Option
from .routes import ASGIRoute, Route, WebSocketRoute
from .scripts import ScriptRequest, ScriptResponse
from .telemetry import Instrument, Telemetry

__all__ = [
    "DETACH",
    "ASGIRoute",
    "HTTPError",
    "Host",
    "Instrument",
    "LogThrottle",
    "Option",
    "PluginError",
    "Route",
    "ScriptRequest",
    "ScriptResponse",
    "Telemetry",
    "Unavailable",
    "WebSocketRoute",
    "bind_context",
    "create_app",
    "current_host",
    "get_host",
    "hookimpl",
    "hookspec",
    "log_access",
    "log_context",
]
