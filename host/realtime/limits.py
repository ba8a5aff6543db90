"""Bounds on what one client, or all of them, may hold: connections and log lines.

Every WebSocket holds a file descriptor for its whole life. With a soft limit of
1,024 open files (a common default), one client opening a thousand WebSockets left
nothing for new requests, and asyncio logged thousands of "out of system resource"
records a second. So: raise the soft limit to the hard one, cap long-lived
connections per client address and in total (below the limit, so HTTP, Redis and
files keep some), and log each such condition at most once in a while.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .routes import ASGIApp, deny_websocket

if TYPE_CHECKING:
    from .telemetry import Instrument

log = logging.getLogger("realtime")

#: Share of the open-file limit long-lived connections may take when the total cap is
#: automatic; the rest stays for HTTP requests, the broker, scripts' files.
AUTO_SHARE = 0.9
#: What an unlimited open-file limit counts as.
UNLIMITED_FILES = 1 << 20
#: Seconds between two log records of one throttled condition.
LOG_INTERVAL = 10.0


def raise_open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one; return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, UNLIMITED_FILES)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft


class LogThrottle:
    """Lets a recurring condition be logged once per ``interval``, counting what it held back."""

    def __init__(self, interval: float = LOG_INTERVAL) -> None:
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, key: str) -> int | None:
        """``None`` to stay quiet; else how many records of ``key`` were held back."""
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if len(self._last) > 1000:  # keys name conditions, not clients; but be sure
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)

    def suffix(self, held: int) -> str:
        return f" ({held} more like this in the last {self.interval:.0f} s)" if held else ""

    def warn(self, logger: logging.Logger, key: str, message: str, *args: Any) -> None:
        """``logger.warning(message, *args)`` unless ``key`` was logged within the interval."""
        held = self.allow(key)
        if held is not None:
            logger.warning(message + "%s", *args, self.suffix(held))


def throttled_exception_handler(
    throttle: LogThrottle,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's exception handler, one record per kind of failure per interval.

    asyncio reports "socket.accept() out of system resource" for every refused accept.
    """

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        message = str(context.get("message", "unhandled exception in the event loop"))
        held = throttle.allow(f"{message}:{type(context.get('exception')).__name__}")
        if held is None:
            return
        loop.default_exception_handler(dict(context, message=message + throttle.suffix(held)))

    return handle


#: Scope key of a callable an app calls when a connection outlives its ASGI call (a
#: socket taken over from the server): it returns the release to call at the real end.
DETACH = "realtime.detach"


class _Hold:
    """One counted connection; released once, at the end of the call or when detached."""

    __slots__ = ("address", "detached", "limits")

    def __init__(self, limits: ConnectionLimits, address: str) -> None:
        self.limits: ConnectionLimits | None = limits
        self.address = address
        self.detached = False

    def detach(self) -> Callable[[], None]:
        self.detached = True
        return self.release

    def release(self) -> None:
        limits, self.limits = self.limits, None
        if limits is not None:
            limits._release(self.address)


def _address(scope: Any) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


class ConnectionLimits:
    """Refuses a WebSocket handshake past the per-address or the total cap.

    Counts ASGI ``websocket`` scopes (the connections that stay), keyed by the client
    address the proxy middleware established, so behind Caddy it is the browser's. A
    connection counts until its ASGI call returns, or, if the app called
    ``scope[DETACH]()``, until it calls the release that returned. A protocol's
    long-lived HTTP responses count in the same caps through :meth:`acquire`.
    A refused handshake gets an HTTP status (429 per address, 503 in total) when the
    server supports ASGI's WebSocket denial responses, a 403 otherwise, and counts in
    :attr:`handshakes` as ``per_ip`` or ``capacity`` (the host sets it at start-up).
    """

    def __init__(self, app: ASGIApp, *, total: int, per_address: int) -> None:
        self.app = app
        self.total = total
        self.per_address = per_address
        self.open = 0
        self.by_address: dict[str, int] = {}
        self.refused = 0
        self._throttle = LogThrottle()
        # Here, not at the top: telemetry imports this module for LogThrottle.
        from .telemetry import NOOP

        #: ``realtime_handshakes_total{result}``: a no-op until the host's start-up.
        self.handshakes: Instrument = NOOP

    def limit(self) -> int:
        """The total cap; 0 in the settings means a share of the open-file limit."""
        if self.total <= 0:
            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            if soft == resource.RLIM_INFINITY:
                soft = UNLIMITED_FILES
            self.total = max(1, int(soft * AUTO_SHARE))
        return self.total

    def _check(self, address: str) -> tuple[int, str, str] | None:
        """Why one more connection from ``address`` is refused (status, text, result)."""
        if self.per_address and self.by_address.get(address, 0) >= self.per_address:
            limit = self.per_address
            return 429, f"too many connections from {address} (limit {limit})", "per_ip"
        if self.open >= self.limit():
            return 503, f"server full ({self.total} connections)", "capacity"
        return None

    def _hold(self, address: str) -> _Hold:
        self.open += 1
        self.by_address[address] = self.by_address.get(address, 0) + 1
        return _Hold(self, address)

    def acquire(self, scope: Any) -> Callable[[], None] | tuple[int, str]:
        """Count a long-lived HTTP response (a stream a protocol keeps open) as one more
        connection of its client address, within the caps WebSockets count against:
        the release to call when it ends (once is enough; more do nothing), or the
        refusal's status (429, 503) and text for the protocol to answer with."""
        address = _address(scope)
        refused = self._check(address)
        if refused is not None:
            status, reason, _ = refused
            self.refused += 1
            self._throttle.warn(log, f"stream {status}", "refused a stream: %s", reason)
            return status, reason
        return self._hold(address).release

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        address = _address(scope)
        refused = self._check(address)
        if refused is not None:
            await self._refuse(scope, send, *refused)
            return
        hold = self._hold(address)
        scope[DETACH] = hold.detach
        try:
            await self.app(scope, receive, send)
        finally:
            if not hold.detached:
                hold.release()

    def _release(self, address: str) -> None:
        self.open -= 1
        left = self.by_address[address] - 1
        if left:
            self.by_address[address] = left
        else:
            del self.by_address[address]

    async def _refuse(self, scope: Any, send: Any, status: int, reason: str, result: str) -> None:
        self.refused += 1
        self.handshakes.labels(result).inc()
        self._throttle.warn(log, str(status), "refused a WebSocket: %s", reason)
        retry = ((b"retry-after", b"5"),) if status == 503 else ()
        await deny_websocket(scope, send, status, reason, close_code=1013, headers=retry)
