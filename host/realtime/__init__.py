"""realtime: a Quart host that runs drop-in Python scripts and loads plugins by entry point."""

from .errors import HTTPError, PluginError, Unavailable
from .hookspecs import hookimpl, hookspec
from .host import Host, create_app, current_host, get_host
from .limits import DETACH, LogThrottle
from .options import Option
from .routes import ASGIRoute, Route, WebSocketRoute
from .scripts import ScriptRequest, ScriptResponse

__all__ = [
    "DETACH",
    "ASGIRoute",
    "HTTPError",
    "Host",
    "LogThrottle",
    "Option",
    "PluginError",
    "Route",
    "ScriptRequest",
    "ScriptResponse",
    "Unavailable",
    "WebSocketRoute",
    "create_app",
    "current_host",
    "get_host",
    "hookimpl",
    "hookspec",
]
