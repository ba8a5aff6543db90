"""The fence: the only place in the project beneath Hypercorn's, wsproto's, asyncio's APIs.

Two speed-ups rest on objects those libraries do not promise to keep: the hub's
fast path (take a WebSocket away from Hypercorn once the handshake is done, guard
what a client sends under ASGI) and the lean TCP server (Hypercorn's connection
with fewer tasks). Every private name they use is in this subpackage, one module
per library (:mod:`.hypercorn`, :mod:`.wsproto`, :mod:`.asyncio`), behind a small
documented API; no other module of the host or of a plugin reaches beneath a
public API. A version bump then breaks one place, and this probe says so.

:func:`fence` checks, once per process, that each library is a version this code was
tested on (:data:`KNOWN`) and still has the names it uses. Where one is not, what
rests on it does not engage (``take_over`` returns ``None``, the guard is not put
in, the lean TCP server is not installed): the server runs on the plain ASGI path,
slower and heavier but correct, and :func:`warn` says so in one start-up warning.
docs/internals.md tells how to move a bound.

Test knob: ``REALTIME_PRETEND_VERSIONS="hypercorn=0.99.0,wsproto=9.0"`` makes the
probe see those versions instead of the installed ones (a process that starts with
it falls back as a newer library would make it). In-process, monkeypatch
:data:`KNOWN` or the environment and call ``fence.cache_clear()``.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from dataclasses import dataclass
from importlib import metadata
from typing import Final

#: The releases (major, minor) each library's internals were tested on. Keep in step
#: with the upper bounds in pyproject.toml (tests/integration/test_internals.py checks).
KNOWN: Final[dict[str, tuple[tuple[int, int], ...]]] = {
    "hypercorn": ((0, 17), (0, 18)),
    "wsproto": ((1, 2), (1, 3)),
    "python": ((3, 11), (3, 12), (3, 13), (3, 14)),  # asyncio's internals
}
#: The environment variable that makes the probe see other versions (a test knob).
PRETEND_ENV: Final = "REALTIME_PRETEND_VERSIONS"


@dataclass(frozen=True, slots=True)
class Fence:
    """What the probe found: the versions, what is wrong, and what may engage."""

    #: Library name -> the version the probe saw.
    versions: dict[str, str]
    #: One line per library that is not as this code expects; empty when all are.
    problems: tuple[str, ...]
    #: The hub may take sockets over from Hypercorn (needs Hypercorn and asyncio).
    takeover: bool
    #: The hub may guard ASGI connections (needs Hypercorn, wsproto and asyncio).
    guard: bool
    #: The lean TCP server may replace Hypercorn's (needs Hypercorn and asyncio).
    lean_tcp: bool

    def warning(self) -> str | None:
        """The start-up warning, or ``None`` when everything engages."""
        if not self.problems:
            return None
        off = [
            name
            for name, on in (
                ("the WebSocket takeover", self.takeover),
                ("the incoming-frame guard", self.guard),
                ("the lean TCP server", self.lean_tcp),
            )
            if not on
        ]
        return (
            f"{'; '.join(self.problems)}: {', '.join(off)} off, WebSockets run on the plain"
            " ASGI path (correct, but more CPU and memory a connection); see docs/internals.md"
        )


def _version(name: str, pretend: dict[str, str]) -> str:
    if name in pretend:
        return pretend[name]
    if name == "python":
        return ".".join(str(part) for part in sys.version_info[:3])
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "none"


def _release(version: str) -> tuple[int, int] | None:
    parts = version.split(".")
    try:
        return int(parts[0]), int(parts[1])
    except (IndexError, ValueError):
        return None


def _pretend() -> dict[str, str]:
    pairs = (item.partition("=") for item in os.environ.get(PRETEND_ENV, "").split(","))
    return {name.strip().lower(): version.strip() for name, _, version in pairs if version}


def _check(name: str, version: str, missing: list[str]) -> str | None:
    """The problem with one library, or ``None``."""
    known = KNOWN[name]
    if _release(version) not in known:
        shown = ", ".join(f"{major}.{minor}" for major, minor in known)
        return f"{name} {version} is not a version the fast path knows ({shown})"
    if missing:
        return f"{name} {version} lacks {', '.join(missing)}"
    return None


@functools.cache
def fence() -> Fence:
    """Probe the libraries, once per process (a fact of what is installed, not app state)."""
    from .asyncio import missing as asyncio_missing
    from .hypercorn import missing as hypercorn_missing
    from .wsproto import missing as wsproto_missing

    pretend = _pretend()
    versions = {name: _version(name, pretend) for name in KNOWN}
    found = {
        "hypercorn": _check("hypercorn", versions["hypercorn"], hypercorn_missing()),
        "wsproto": _check("wsproto", versions["wsproto"], wsproto_missing()),
        "python": _check("python", versions["python"], asyncio_missing()),
    }
    ok = {name: problem is None for name, problem in found.items()}
    return Fence(
        versions=versions,
        problems=tuple(problem for problem in found.values() if problem is not None),
        takeover=ok["hypercorn"] and ok["python"],
        guard=ok["hypercorn"] and ok["wsproto"] and ok["python"],
        lean_tcp=ok["hypercorn"] and ok["python"],
    )


def warn(logger: logging.Logger) -> bool:
    """Log the probe's one warning, if any (call once, at a process's start-up).

    Returns whether everything engages.
    """
    message = fence().warning()
    if message is not None:
        logger.warning("%s", message)
    return message is None


__all__ = ["KNOWN", "PRETEND_ENV", "Fence", "fence", "warn"]
