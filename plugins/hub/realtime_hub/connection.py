"""One WebSocket connection over plain ASGI: the few calls the hub makes, nothing more.

Quart's websocket object would add a request wrapper, a queue and two tasks to every
connection; a broadcast server holding ten thousand of them cannot afford that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ConnectionGone(Exception):
    """The client disconnected (or never completed the handshake)."""


class ASGIConnection:
    __slots__ = ("_receive", "asgi_send")

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        #: The server's ASGI send callable; the fast path looks beneath it.
        self.asgi_send = send

    async def accept(self) -> None:
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise ConnectionGone
        await self.asgi_send({"type": "websocket.accept"})

    async def receive(self) -> str | bytes | None:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            raise ConnectionGone
        data: str | bytes | None = message.get("text") or message.get("bytes")
        return data

    async def send(self, data: str | bytes) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        await self.asgi_send({"type": "websocket.send", key: data})

    async def close(self, code: int, reason: str = "") -> None:
        await self.asgi_send({"type": "websocket.close", "code": code, "reason": reason})
