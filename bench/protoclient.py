"""What a load-generator client does with each protocol's messages, once whole.

:class:`ProtocolClient` is a mixin of ``loadgen.Client``, with no state of its own:
the WebSocket frames are parsed there and the deliveries counted there
(``Client.message``), for every protocol alike; the methods here turn a whole
message (a WebSocket message, a line of an HTTP stream) of the Centrifuge protocol
(JSON or protobuf), Pusher's or Mercure's into a publication (``publication``), a
reply, or a ping to answer. The wire formats are in ``clients.py`` and
``protocols.py``; :func:`connect_frame` is a Centrifuge client's first frame.
"""

from __future__ import annotations

import json
from time import perf_counter_ns as now_ns
from typing import TYPE_CHECKING, Any

import clients
import protocols
from wsclient import client_text

if TYPE_CHECKING:
    import asyncio

#: The Centrifuge protocol's ping (a server frame) and its pong (the client's answer).
CENTRIFUGE_PING = b"{}"
CENTRIFUGE_PONG = client_text(b"{}")
PROTOBUF_PONG = client_text(clients.PROTOBUF_PONG, opcode=2)
PUSHER_PONG = client_text(protocols.PUSHER_PONG)
#: What precedes a publication's data in a ``pub`` push.
DATA_KEY = b'"data":'
PUSH = b'{"push":'


def connect_frame(protobuf: bool, token: str, channel: str) -> bytes:
    """A Centrifuge client's first frame: connect, then subscribe, in one."""
    if protobuf:
        return client_text(clients.protobuf_connect(token, channel), opcode=2)
    connect: dict[str, Any] = {"token": token} if token else {}
    commands = [{"id": 1, "connect": connect}, {"id": 2, "subscribe": {"channel": channel}}]
    text = "\n".join(json.dumps(c, separators=(",", ":")) for c in commands)
    return client_text(text.encode())


class ProtocolClient:
    """The protocol half of ``loadgen.Client`` (which has every attribute named here)."""

    if not TYPE_CHECKING:  # empty, so a Client keeps no __dict__; mypy sees Client's
        __slots__ = ()
    else:
        run: Any
        transport: asyncio.Transport | None
        handshake: asyncio.Future[None]
        channel: int
        replies: int
        stream: clients.HttpStream | None
        ended: str | None

        def fail(self, why: str) -> None: ...
        def message(self, payload: bytes, now: int) -> None: ...

    def whole(self, payload: bytes, now: int) -> None:
        """A whole WebSocket message: binary protobuf replies, or what message() takes."""
        if self.run.pusher:
            data = protocols.pusher_data_fast(payload)  # the common case, a publication
            if data is not None:
                self.publication(data, now)
            else:
                self.pusher_message(payload, now)
            return
        if not self.run.protobuf:
            self.message(payload, now)
            return
        data = clients.publication_fast(payload)  # the common case, one publication
        if data is not None:
            self.publication(clients.publication_data(data), now)
            return
        try:
            replies = clients.protobuf_replies(payload)
        except ValueError as exc:
            self.fail(f"bad protobuf frame: {exc}")
            return
        for reply in replies:
            if reply.kind == "pub":
                self.publication(clients.publication_data(reply.data), now)
            elif reply.kind == "ping":
                self.run.pings += 1
                if self.transport is not None:
                    self.transport.write(PROTOBUF_PONG)
            elif reply.kind == "error":
                self.fail(f"Centrifuge error {reply.data.decode(errors='replace')}")
                return
            elif reply.kind in ("connect", "subscribe") and reply.id in (1, 2):
                self.replied()
            else:
                self.run.other_pushes[reply.data[:80].hex()] += 1

    def publication(self, data: bytes, now: int) -> None:
        """A publication's data: measured (``m…``) or a warm-up (``w…``)."""
        if data[:1] == b"m":
            self.message(data, now)
        else:
            self.run.warm_received(self, data)

    def pusher_message(self, payload: bytes, now: int) -> None:
        """A Pusher message other than a publication with plain string data."""
        try:
            event = protocols.pusher_event(payload)
        except ValueError as exc:
            self.fail(f"bad Pusher message: {exc}")
            return
        name, transport = event.event, self.transport
        if name == "pusher:ping":
            self.run.pings += 1
            if transport is not None:
                transport.write(PUSHER_PONG)
        elif name == "pusher:connection_established":
            if protocols.pusher_socket_id(event) is None:
                self.fail(f"bad connection_established {event.data[:80]!r}")
            elif transport is not None:
                channel = self.run.channel_names[self.channel]
                transport.write(client_text(protocols.pusher_subscribe(channel)))
        elif name == "pusher_internal:subscription_succeeded":
            mine = event.channel == self.run.channel_names[self.channel]
            if mine and not self.handshake.done():
                self.handshake.set_result(None)
        elif name in ("pusher:error", "pusher:subscription_error"):
            self.fail(f"{name} {event.data[:120]}")
        elif event.channel and not name.startswith("pusher"):
            data = event.data.encode()  # data the fast path did not read (escapes, a value)
            self.publication(clients.publication_data(data), now)
        else:
            self.run.other_pushes[payload[:80].decode(errors="replace")] += 1

    def replied(self) -> None:
        """The connect or the subscribe reply: connected once both came."""
        self.replies += 1
        if self.replies == 2 and not self.handshake.done():
            self.handshake.set_result(None)

    def stream_received(self, data: bytes) -> None:
        """HTTP streaming: the response's lines are the JSON codec's replies and pushes."""
        assert self.stream is not None
        now = now_ns()
        mercure = self.run.mercure
        if mercure and self.stream.between_chunks():
            value = protocols.sse_chunk_data(data)  # the common case, one update
            if value is not None:
                self.publication(value, now)
                return
        for line in self.stream.feed(data):
            if mercure:
                self.sse_line(line, now)
            else:
                self.centrifuge_line(line, now)
            if self.ended is not None:
                return
        if mercure and self.stream.status == 200 and not self.handshake.done():
            self.handshake.set_result(None)  # subscribed once the stream's head came
        if self.stream.error is not None:
            self.fail(self.stream.error)
        elif self.stream.ended and self.transport is not None:
            self.transport.close()

    def sse_line(self, line: bytes, now: int) -> None:
        """One line of a Mercure event stream: ``data:`` is a publication."""
        data = protocols.sse_data(line)
        if data is not None:
            self.publication(data, now)
            return
        name, _ = protocols.sse_field(line)
        if name not in ("", "id", "event", "retry"):
            self.run.other_pushes[line[:80].decode(errors="replace")] += 1

    def centrifuge_line(self, line: bytes, now: int) -> None:
        """One Centrifuge reply or push (a frame may hold several, joined by newlines)."""
        if line[:8] == PUSH:
            at = line.find(DATA_KEY)
            if at < 0 or line[at + 7 : at + 8] != b'"':
                self.run.other_pushes[line[:80].decode(errors="replace")] += 1
                return
            start = at + 8
            self.publication(line[start : line.find(b'"', start)], now)
        elif line == CENTRIFUGE_PING:
            self.run.pings += 1
            if self.stream is not None:
                self.run.emulate(self, "{}")
            elif self.transport is not None:
                self.transport.write(CENTRIFUGE_PONG)
        else:
            try:
                reply = json.loads(line)
            except ValueError:
                self.fail(f"bad Centrifuge frame {line[:80]!r}")
                return
            if "error" in reply:
                self.fail(f"Centrifuge error {reply['error']}")
                return
            if reply.get("id") in (1, 2) and ("connect" in reply or "subscribe" in reply):
                self.replied()
                if self.stream is not None and reply.get("id") == 1:
                    session = clients.connect_result(line)
                    if session is None:
                        self.fail(f"bad connect reply {line[:80]!r}")
                        return
                    name = self.run.channel_names[self.channel]
                    self.run.emulate(self, clients.subscribe_command(name), *session)
            else:
                self.run.other_pushes[line[:80].decode(errors="replace")] += 1
