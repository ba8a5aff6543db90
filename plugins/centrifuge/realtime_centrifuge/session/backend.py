"""The seam between a session and everything outside it.

A session knows no transport, hub or broker: whatever it does outside itself goes
through a :class:`Backend` (the transport's ``ConnectionBackend`` in production, a
fake in the unit tests), so the protocol's rules are tested without a socket.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from realtime_hub.channels import HookAnswer

from ..codes import Error


@dataclass(frozen=True, slots=True)
class ConnectAuth:
    """An ``authorize_connect`` hook's admission of a client that sent no token."""

    user: str
    #: ``conn_info`` shown to other clients with this client's publications.
    info: Any = None
    #: Unix time the client must refresh by (with a connection token); None: never.
    expire_at: int | None = None
    #: Server-side subscriptions, granted without further checks.
    channels: tuple[str, ...] = ()
    #: Sent to the client in the connect result.
    data: Any = None
    #: For hooks only, never sent.
    meta: Any = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Publications as the protocol sends them (each a ``Publication`` object with its
    ``offset``), and the stream's position: its last offset and its epoch."""

    publications: list[dict[str, Any]]
    offset: int
    epoch: str
    #: About how many bytes the publications take on the wire.
    size: int = 0


class SessionMetrics(Protocol):
    """What a session reports for ``/metrics`` (the node's ``CentrifugeMetrics``)."""

    def command(self, method: str, seconds: float) -> None:
        """A command took ``seconds``, from its dispatch to its encoded reply."""

    def auth_refused(self) -> None:
        """A connect was refused for its token, or by the connect hook (no credentials)."""


class Backend(Protocol):
    """What a session needs from outside; one per connection.

    The ``authorize_*`` methods are application hooks (pluggy, first result wins):
    None means no opinion. Any method may raise :class:`Error` (answered to the
    client) or :class:`DisconnectError` (the connection is closed).
    """

    async def authorize_connect(
        self, *, client: str, data: Any, name: str, version: str, headers: Mapping[str, str]
    ) -> ConnectAuth | Error | None:
        """Admit a client without a token (Centrifugo's connect proxy)."""

    async def authorize_subscribe(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        """Decide a subscription no token or user-limited channel decided."""

    async def authorize_publish(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        """Decide a publication before the namespace's options do."""

    async def rpc(self, *, client: str, user: str, meta: Any, method: str, data: Any) -> Any:
        """The ``data`` of the rpc result; raise ``Error(104)`` if no one has ``method``."""

    async def on_send(self, *, client: str, user: str, meta: Any, data: Any) -> None:
        """An asynchronous message from the client (no reply); may be ignored."""

    async def subscribe(self, channel: str, join_leave: bool = False) -> list[str | bytes] | None:
        """Start delivering ``channel``'s publications to this connection (and its
        joins and leaves with ``join_leave``); the pushes of those that came while
        joining, to send after the reply (they must not go before it)."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``'s publications to this connection (and take it
        out of the channel's presence)."""

    async def join_presence(self, channel: str, info: Mapping[str, Any]) -> None:
        """Put this connection in ``channel``'s presence, shown as ``info`` (ClientInfo)."""

    async def presence(self, channel: str, max_bytes: int | None = None) -> dict[str, Any]:
        """The channel's members as ``ClientInfo`` objects, by client id; with
        ``max_bytes``, ``Error(106)`` when they would take more in the reply."""

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """Clients and distinct users in the channel."""

    def recovered(self, seconds: float) -> None:
        """A recovery took ``seconds``: from its turn (:meth:`recovery_slot`) to its
        encoded reply (join, read, merge, encode)."""

    def recovery_slot(self) -> AbstractAsyncContextManager[Any]:
        """Held while a subscription joins its stream (a few at a time per process)."""

    async def publish(self, channel: str, data: Any, info: Mapping[str, Any]) -> None:
        """Publish ``data`` to ``channel``'s subscribers; ``info`` is the publisher."""

    async def history(
        self,
        channel: str,
        *,
        limit: int,
        since: tuple[int, str] | None,
        reverse: bool,
        max_bytes: int | None = None,
    ) -> HistoryPage:
        """The channel's stream (as the broker's ``history``); raise ``Error(108)``
        where it keeps none, ``Error(112)`` when ``since`` is in another epoch.

        With ``max_bytes``, the publications stop before the one that would take them
        past it (the first is always in): a reply never grows with what a channel
        keeps."""

    def recovers(self) -> bool:
        """Whether joining then reading the stream gives every publication once."""

    async def subscribe_held(self, channel: str) -> Any:
        """Join ``channel`` with its publications kept aside (see :meth:`release`)."""

    async def release(
        self, channel: str, held: Any, top: tuple[int, str] | None, join_leave: bool = False
    ) -> tuple[list[dict[str, Any]], int]:
        """Go live, once every publication up to ``top`` (the stream's position when
        read) has arrived; the publications kept aside meanwhile (protocol objects,
        with their offsets), and how many this process missed meanwhile."""
