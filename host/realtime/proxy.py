"""Trust ``X-Forwarded-*`` headers only from the proxy in front (Caddy), never from clients."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class ForwardedHeadersMiddleware:
    """Rewrite client address and scheme from the last proxy hop, if that hop is trusted."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        entries = [entry for entry in trusted if entry]
        self.trust_all = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]

    def _trusted(self, host: str) -> bool:
        if self.trust_all:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        client = scope.get("client")
        if scope["type"] in ("http", "websocket") and client and self._trusted(client[0]):
            headers = dict(scope["headers"])
            forwarded_for = headers.get(b"x-forwarded-for")
            if forwarded_for:
                # The rightmost address is the one our trusted proxy saw.
                peer = forwarded_for.decode("latin-1").split(",")[-1].strip()
                scope = dict(scope, client=(peer, 0))
            proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
            if proto in ("http", "https"):
                secure = proto == "https"
                scheme = ("wss" if secure else "ws") if scope["type"] == "websocket" else proto
                scope = dict(scope, scheme=scheme)
        await self.app(scope, receive, send)
