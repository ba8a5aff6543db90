"""A webhook receiver for tests: a real HTTP/1.1 server on loopback, with h11."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

import h11

from realtime_events.webhooks import SIGNATURE_HEADER

SECRET = b"0123456789abcdef-webhook"


class Receiver:
    """An HTTP/1.1 server that records each POST body and answers as ``answer`` says."""

    def __init__(
        self, answer: Callable[[int], int | None] = lambda n: 200, body_size: int = 2
    ) -> None:
        #: Given the request's number (0, 1...): a status, or None to never answer.
        self.answer = answer
        #: Bytes of each answer's body, and how many of them the sender took.
        self.body_size = body_size
        self.body_written = 0
        self.bodies: list[bytes] = []
        self.signatures: list[str] = []
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.got = asyncio.Event()

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/hook"

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                body = b""
                headers: dict[bytes, bytes] = {}
                while True:
                    event = conn.next_event()
                    if event is h11.NEED_DATA:
                        data = await reader.read(65536)
                        if not data:
                            return
                        conn.receive_data(data)
                        continue
                    if isinstance(event, h11.Request):
                        headers = dict(event.headers)
                    elif isinstance(event, h11.Data):
                        body += event.data
                    elif isinstance(event, h11.EndOfMessage):
                        break
                    elif isinstance(event, h11.ConnectionClosed):
                        return
                number = self.requests
                self.requests += 1
                self.bodies.append(body)
                self.signatures.append(headers.get(SIGNATURE_HEADER.lower().encode(), b"").decode())
                self.got.set()
                status = self.answer(number)
                if status is None:
                    with contextlib.suppress(asyncio.CancelledError):  # the server closing
                        await asyncio.sleep(3600)  # hang: the sender must time out
                    return
                writer.write(conn.send(h11.Response(status_code=status, headers=[
                    ("content-length", str(self.body_size))])) or b"")  # fmt: skip
                left = self.body_size
                while left > 0:
                    piece = b"k" * min(left, 65536)
                    writer.write(conn.send(h11.Data(data=piece)) or b"")
                    await writer.drain()  # blocks while the sender does not read
                    left -= len(piece)
                    self.body_written += len(piece)
                writer.write(conn.send(h11.EndOfMessage()) or b"")
                await writer.drain()
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError):
            return
        finally:
            writer.close()

    def events(self) -> list[dict[str, Any]]:
        return [event for body in self.bodies for event in json.loads(body)["events"]]
