"""What the hub keeps of a connection, of a message on its way, and of a channel's members.

Plain data, no behaviour beyond keeping itself consistent: the engine (:mod:`.engine`)
and the backlog (:mod:`.backlog`) act on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from .connection import Handler
from .stream import WEBSOCKET, Framing, Stream

if TYPE_CHECKING:
    from .engine import Hub


class Format(Protocol):
    """How a publication looks on one wire protocol's connections.

    One object per protocol, shared by all its connections: the engine groups a
    channel's subscribers by format and encodes a publication once per format.
    """

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        """The message (text for ``str``, binary for ``bytes``), which each connection's
        :class:`.Framing` turns into its bytes; None when this format's clients get
        nothing of it (a join or leave, say)."""
        ...

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        """This process missed ``count`` publications on ``channel``: tell ``client``."""
        ...


class Connection(Protocol):
    """What the hub needs of a connection (:class:`.connection.ASGIConnection`).

    ``receive`` raises :class:`.connection.ConnectionGone` (or the task is cancelled)
    when the client leaves. A connection may carry ``asgi_send``, for the fast path,
    and then its ``accept`` takes a ``handover`` (:meth:`.ASGIConnection.accept`).
    """

    async def accept(self) -> None: ...
    async def receive(self) -> Any: ...
    async def send(self, data: Any) -> None: ...
    async def close(self, code: int, reason: str = "") -> None: ...


@dataclass(frozen=True, slots=True)
class Message:
    """One outgoing message: a publication in one format and framing, or a reply.

    ``data`` is what an ASGI connection sends; ``frame`` the bytes a :class:`.Stream`
    writes (its framing's), shared by every fast-path subscriber of that framing.
    """

    data: str | bytes
    frame: bytes

    @property
    def size(self) -> int:
        return len(self.frame)


@dataclass
class HubStats:
    """Running counts of one hub, kept where the work is done: per fan-out, per connect,
    per disconnect, never per delivered socket. Telemetry samples them (``.metrics``)."""

    connected: int = 0
    messages: int = 0
    deliveries: int = 0
    overflows: int = 0
    dropped: int = 0
    disconnected_slow: int = 0
    #: Connections that became hub clients (accepted handshakes, attached streams).
    accepted: int = 0
    #: Bytes handed to clients: each fan-out's frame times the clients it went to, and
    #: replies; a backlog a client never takes is counted too.
    sent_bytes: int = 0
    #: Channel memberships now (a client in three channels counts three).
    subscriptions: int = 0
    #: Connected clients by protocol (``raw``, ``centrifuge``); a protocol stays at 0.
    protocols: dict[str, int] = field(default_factory=dict)
    #: Ended connections by close code (``"1000"``, ``"other"``): at most
    #: :data:`.census.MAX_CODES` keys.
    disconnects: dict[str, int] = field(default_factory=dict)


@dataclass(eq=False, slots=True)
class Client:
    """A connected client. ``wire`` is set when the hub writes to it directly: a
    WebSocket the fast path took over, or a stream a transport attached (it is then
    its ``connection`` too)."""

    id: int
    connection: Connection | Stream
    wire: Stream | None
    #: The protocol plugin's reader of this client's messages.
    handler: Handler | None = None
    #: Tells the host's connection count this connection ended (taken-over sockets).
    release: Callable[[], None] | None = None
    #: Channels this client is in (usually one or a few: a list is smaller than a set).
    channels: list[str] = field(default_factory=list)
    #: What the protocol keeps on the connection (a Centrifuge session, say).
    state: Any = None
    #: Backlog, created only while the client lags (an empty deque costs 760 bytes).
    queue: deque[Message] | None = None
    queued_bytes: int = 0
    sender: asyncio.Task[None] | None = None
    closing: bool = False
    overflow_logged: bool = False
    #: The stream's ``send_now`` while the client may be written to directly (a
    #: stream, open, keeping up, no backlog), else None: one lookup per delivery.
    direct: Callable[[bytes], int] | None = None
    #: How a message becomes this connection's bytes (a WebSocket frame unless attached).
    framing: Framing = WEBSOCKET
    #: The wire protocol it speaks, as its plugin named it: a metrics label.
    protocol: str = "raw"
    #: The close the server decided for it (code, reason), once it did.
    ending: tuple[int, str] | None = None
    #: Set by :meth:`.Hub.identify` once the protocol has connected it: its own id for
    #: the client (Centrifuge's), and the user it authenticated ("" if anonymous).
    name: str = ""
    user: str = ""


class Group(dict[int, Client]):
    """One format's subscribers in a channel, by client id, and by framing if they differ.

    Nearly always every member has the same framing (``framing``; ``split`` is None)
    and a fan-out walks this dict itself. Only while members of several framings share
    the format (an SSE stream beside WebSockets) does ``split`` hold them by framing,
    so each framing's bytes are built once and the per-client loop stays as it is.
    """

    __slots__ = ("framing", "split")

    def __init__(self, framing: Framing) -> None:
        super().__init__()
        self.framing = framing
        self.split: dict[Framing, dict[int, Client]] | None = None

    def add(self, client: Client) -> None:
        framing = client.framing
        split = self.split
        if split is not None:
            split.setdefault(framing, {})[client.id] = client
        elif framing is not self.framing:
            if self:
                self.split = {self.framing: dict(self), framing: {client.id: client}}
            else:
                self.framing = framing
        self[client.id] = client

    def discard(self, client: Client) -> bool:
        """Remove ``client``; False if it was not a member."""
        if self.pop(client.id, None) is None:
            return False
        split = self.split
        if split is not None:
            some = split[client.framing]
            del some[client.id]
            if not some:
                del split[client.framing]
            if len(split) == 1:
                (self.framing,) = split
                self.split = None
        return True


class Held:
    """A client's publications of one channel kept aside between :meth:`.Hub.hold` and
    :meth:`.Hub.release`. It stands in the channel as its own format group: the fan-out
    hands it the publications instead of encoding them."""

    __slots__ = ("lost", "publications")

    def __init__(self) -> None:
        self.publications: list[Any] = []
        #: Publications this process missed meanwhile (the broker lost them).
        self.lost = 0

    def encode(self, channel: str, publication: Any) -> str | bytes | None:
        raise RuntimeError("held publications are not encoded")

    def missed(self, hub: Hub, client: Client, channel: str, count: int) -> None:
        self.lost += count


Channel = dict[Any, Group]
"""A channel's subscribers, grouped by format: ``{format: {client id: client}}``."""
