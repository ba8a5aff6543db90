"""The admin page: ``/admin`` on the internal listener, behind ``--admin-password``.

Nodes, channels, a live chart, recent disconnects, and actions through the
Centrifuge server API; see docs/admin.md.
"""

from .monitor import Monitor, Sample, top_channels
from .plugin import ADMIN_PASSWORD, Admin, get_admin
from .session import LoginLimiter, Sessions

__all__ = [
    "ADMIN_PASSWORD",
    "Admin",
    "LoginLimiter",
    "Monitor",
    "Sample",
    "Sessions",
    "get_admin",
    "top_channels",
]
