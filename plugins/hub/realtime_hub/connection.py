"""One WebSocket connection over plain ASGI: the few calls the hub makes, nothing more.

Quart's websocket object would add a request wrapper, a queue and two tasks to every
connection; a broadcast server holding ten thousand of them cannot afford that.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from realtime import DETACH

from .closecode import CloseCode

T = TypeVar("T")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ConnectionGone(Exception):
    """The client disconnected (or never completed the handshake)."""


class ASGIConnection:
    __slots__ = ("_ended", "_receive", "_scope", "asgi_send", "guard")

    def __init__(self, receive: Receive, send: Send, scope: Any = None) -> None:
        self._receive = receive
        self._scope = scope
        #: The server's ASGI send callable; the fast path looks beneath it.
        self.asgi_send = send
        self._ended: tuple[int, str] | None = None
        #: What watches the client's frames beneath the server (:func:`.guard.guard`),
        #: which knows the close frame's code when the server does not say it.
        self.guard: Any = None

    @property
    def ended(self) -> tuple[int, str] | None:
        """How the client left (code, reason), once it did: its close frame as the guard
        read it, else the server's ``websocket.disconnect`` (Hypercorn: 1000 or 1006)."""
        watched = self.guard.ended if self.guard is not None else None
        return watched if watched is not None else self._ended

    async def accept(
        self, handover: Callable[[Send], T | None] | None = None, subprotocol: str | None = None
    ) -> T | None:
        """Complete the handshake; ``handover(send)`` may do it instead, taking the socket.
        ``subprotocol`` (one the client offered) is the one accepted.

        Returns what ``handover`` returned, or None when the handshake went through ASGI.
        """
        message = await self._receive()
        if message["type"] != "websocket.connect":
            raise ConnectionGone
        if handover is not None:
            taken = handover(self.asgi_send)
            if taken is not None:
                return taken
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if subprotocol is not None:
            accept["subprotocol"] = subprotocol
        await self.asgi_send(accept)
        return None

    def detach(self) -> Callable[[], None] | None:
        """The connection outlives this ASGI call: the host's count ends at the release.

        ``None`` where the host keeps no count (``realtime.detach`` is not in the scope).
        """
        hold = self._scope.get(DETACH) if self._scope is not None else None
        release: Callable[[], None] | None = hold() if hold is not None else None
        return release

    async def receive(self) -> str | bytes | None:
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            code = message.get("code")
            reason = message.get("reason")
            self._ended = (
                code if isinstance(code, int) else CloseCode.NO_STATUS,
                reason if isinstance(reason, str) else "",
            )
            raise ConnectionGone
        data: str | bytes | None = message.get("text") or message.get("bytes")
        return data

    async def send(self, data: str | bytes) -> None:
        key = "text" if isinstance(data, str) else "bytes"
        await self.asgi_send({"type": "websocket.send", key: data})

    async def close(self, code: int, reason: str = "") -> None:
        await self.asgi_send({"type": "websocket.close", "code": code, "reason": reason})


class Handler(Protocol):
    """What a protocol plugin does with a connection's messages, and at its end.

    The hub calls :meth:`received` for each message, in order, and waits for the
    awaitable it may return before handing over the next one (reading pauses
    meanwhile). :meth:`closed` comes once, when the connection has ended for any
    reason, after which the client is out of every channel. A handler may also have
    ``dropped(count)``: the ``drop-oldest`` policy just dropped ``count`` messages
    meant for this client.
    """

    def received(self, data: str | bytes) -> Awaitable[None] | None: ...

    def closed(self) -> None: ...
