"""Trust ``X-Forwarded-*`` headers only from the proxy in front (Caddy), never from clients.

The proxy speaks HTTP/1.1 to the host. Cleartext HTTP/2 (an ``Upgrade: h2c`` or a
prior-knowledge preface) is refused: through a proxy that relays the upgrade, it
becomes a tunnel in which a client writes requests the proxy never saw, with any
``X-Forwarded-For`` it likes, arriving from the trusted proxy's address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Coroutine, Iterable
from typing import Any

from .routes import TEXT, ASGIApp

H2C_REFUSED = b"HTTP/2 over cleartext (h2c) is not served here; use HTTP/1.1\n"


class ForwardedHeadersMiddleware:
    """Rewrite client address and scheme from the last proxy hop, if that hop is trusted."""

    def __init__(self, app: ASGIApp, trusted: Iterable[str]) -> None:
        self.app = app
        entries = [entry for entry in trusted if entry]
        self.trust_all = "*" in entries
        self.networks = [ipaddress.ip_network(e, strict=False) for e in entries if e != "*"]
        #: Single trusted addresses as a peer's address reads (127.0.0.1, ::1): most
        #: peers are the proxy, known without parsing. Anything else is parsed.
        self.exact = {
            str(network.network_address) for network in self.networks if network.num_addresses == 1
        }

    def _trusted(self, host: str) -> bool:
        if self.trust_all or host in self.exact:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def __call__(self, scope: Any, receive: Any, send: Any) -> Coroutine[Any, Any, None]:
        # Not async: it hands over the inner app's coroutine rather than awaiting it,
        # so no frame of this middleware stays alive for a connection's whole life.
        # (Installed as Quart's asgi_app only: a server guessing ASGI 2 from a plain
        # __call__ must not be given it alone.)
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            return self.app(scope, receive, send)
        if scope.get("http_version", "1.1").startswith("2") and scope.get("scheme") in (
            "http",
            "ws",
        ):
            return _refuse(kind, send)
        client = scope.get("client")
        if client and self._trusted(client[0]):
            headers = dict(scope["headers"])
            forwarded_for = headers.get(b"x-forwarded-for")
            if forwarded_for:
                # The rightmost address is the one our trusted proxy saw.
                peer = forwarded_for.decode("latin-1").split(",")[-1].strip()
                scope = dict(scope, client=(peer, 0))
            proto = headers.get(b"x-forwarded-proto", b"").decode("latin-1").strip().lower()
            if proto in ("http", "https"):
                secure = proto == "https"
                scheme = ("wss" if secure else "ws") if kind == "websocket" else proto
                scope = dict(scope, scheme=scheme)
        return self.app(scope, receive, send)


async def _refuse(kind: str, send: Any) -> None:
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1002})  # a 403 before the handshake
        return
    headers = [(b"content-type", TEXT.encode())]
    await send({"type": "http.response.start", "status": 400, "headers": headers})
    await send({"type": "http.response.body", "body": H2C_REFUSED})
