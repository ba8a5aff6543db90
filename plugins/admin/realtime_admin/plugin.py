"""The admin plugin: ``/admin`` on the internal listener, behind a password.

Off unless ``--admin-password`` (``REALTIME_ADMIN_PASSWORD``) is set, and served only
where ``--internal-bind`` listens, never on the public site. What it shows comes
from the hub and the broker; its actions run the Centrifuge plugin's server API in
this process, and answer 503 when that plugin is not running.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from realtime import Host, LogThrottle, Option, hookimpl
from realtime.settings import INTERNAL_BIND

from .monitor import MAX_QUERY, Monitor
from .session import LoginLimiter, Sessions
from .views import admin_routes

if TYPE_CHECKING:
    from realtime_centrifuge.api import ServerAPI

log = logging.getLogger("realtime.admin")

REQUIRES = ("hub", "broker")

EXTENSION_KEY = "realtime_admin"
#: The shortest password accepted: the page can publish and disconnect users.
MIN_PASSWORD = 8

ADMIN_PASSWORD = Option(
    "admin_password",
    "",
    "password of the admin page at /admin on the internal listener (empty: no admin page)",
    secret=True,
)

NO_CENTRIFUGE = "the centrifuge plugin is not running: actions need its server API"


class Admin:
    """One host's admin state: the sessions (made before the fork), the monitor (after)."""

    def __init__(self, host: Host, password: str) -> None:
        self.host = host
        self.sessions = Sessions(password)
        self.limiter = LoginLimiter()
        #: Wrong passwords and refused tries, logged at most once in a while.
        self.throttle = LogThrottle()
        self.max_query = MAX_QUERY
        self.monitor = Monitor(host, api_status=self.api_status)

    def __repr__(self) -> str:
        return "<Admin>"

    def server_api(self) -> tuple[ServerAPI | None, str]:
        """The Centrifuge node's server API, or None and why not."""
        try:
            from realtime_centrifuge import server_api
        except ImportError:
            return None, NO_CENTRIFUGE
        api = server_api(self.host)
        return (api, "") if api is not None else (None, NO_CENTRIFUGE)

    def api_status(self) -> tuple[bool, str]:
        api, reason = self.server_api()
        return api is not None, reason


def get_admin(host: Host) -> Admin | None:
    """The host's admin state; None when the page is off."""
    admin = host.app.extensions.get(EXTENSION_KEY)
    return admin if isinstance(admin, Admin) else None


@hookimpl
def register_options() -> list[Option]:
    return [ADMIN_PASSWORD]


def _admin(host: Host) -> Admin | None:
    """The host's admin state, made on first asking if the settings turn the page on.

    Asked while the app is built (routes, then ``validate``), so before ``--workers``
    fork: every worker signs cookies with the same key.
    """
    admin = get_admin(host)
    password = host.setting(ADMIN_PASSWORD)
    if admin is None and password and host.setting(INTERNAL_BIND):
        admin = host.app.extensions[EXTENSION_KEY] = Admin(host, password)
    return admin


@hookimpl
def validate(host: Host) -> None:
    password = host.setting(ADMIN_PASSWORD)
    if not password:
        return
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"--admin-password must be at least {MIN_PASSWORD} characters")
    if not host.setting(INTERNAL_BIND):
        log.warning("--admin-password is set but --internal-bind is not: no admin page")
    _admin(host)


@hookimpl
def register_internal_routes(host: Host) -> list[Any]:
    admin = _admin(host)
    return [] if admin is None else list(admin_routes(host, admin))


@hookimpl
def startup(host: Host) -> None:
    admin = get_admin(host)
    if admin is not None:
        admin.monitor.start()


@hookimpl
async def drain(host: Host) -> None:
    admin = get_admin(host)
    if admin is not None:
        admin.monitor.stopping.set()
        admin.monitor.wake()


@hookimpl
async def shutdown(host: Host) -> None:
    admin = get_admin(host)
    if admin is not None:
        await admin.monitor.stop()
