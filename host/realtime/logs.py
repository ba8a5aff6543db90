"""Logging: ids that follow a connection or request, and one access line per request.

A plugin that serves a connection or a request binds its id for the task that serves
it (``with log_context(client="42"):``); every record logged in that task (and in the
threads it hands work to with ``contextvars.copy_context``) then carries it, as a
field of the JSON format or a suffix of the text one.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator, Mapping
from types import MappingProxyType

#: The ids in effect: ``connection``, ``client``, ``request``... (short strings).
CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "realtime_log_context", default=MappingProxyType({})
)

access_log = logging.getLogger("realtime.access")


@contextlib.contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Add ``ids`` to every record logged inside the block (in this task or thread)."""
    token = CONTEXT.set({**CONTEXT.get(), **ids})
    try:
        yield
    finally:
        CONTEXT.reset(token)


def bind_context(**ids: str) -> None:
    """Add ``ids`` for the rest of the current task (a connection's own task)."""
    CONTEXT.set({**CONTEXT.get(), **ids})


def log_access(kind: str, method: str, path: str, status: int, duration: float) -> None:
    """One line per script run or server-API call: ``kind`` is ``script`` or ``api``.

    ``path`` has no query string (it may hold a token); ``duration`` is in seconds.
    """
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %d %.1fms",
            method,
            path,
            status,
            duration * 1000,
            extra={
                "kind": kind,
                "method": method,
                "path": path,
                "status": status,
                "duration": round(duration, 6),
            },
        )
