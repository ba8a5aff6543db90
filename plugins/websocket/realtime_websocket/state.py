"""Where a host keeps its pool: ``app.extensions``, never a module global."""

from __future__ import annotations

from realtime import Host

from .pool import Pool, PoolClosed

EXTENSION_KEY = "realtime_websocket.pool"


def get_pool(host: Host) -> Pool:
    """The pool of ``host``; raises :class:`PoolClosed` before start-up or after shutdown."""
    pool = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(pool, Pool):
        raise PoolClosed("the websocket pool is not running (host not started)")
    return pool
