"""A broadcast server on the ``websockets`` library, for comparison.

``/ws`` is a WebSocket endpoint; a plain HTTP GET ``/send.py?message=...`` is answered
from ``process_request`` after ``websockets.asyncio.server.broadcast``, which writes
to every open connection without waiting (and without any per-client bound).

    python bench/servers/websockets_lib.py --bind 127.0.0.1:8002
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.http11 import Request, Response


async def handler(connection: ServerConnection) -> None:
    async for _ in connection:  # read and discard whatever the client sends
        pass


def process_request(connection: ServerConnection, request: Request) -> Response | None:
    url = urlsplit(request.path)
    if url.path == "/ws":
        return None  # go on with the WebSocket handshake
    if url.path != "/send.py":
        return connection.respond(404, "Not Found\n")
    message = parse_qs(url.query).get("message", ["Hello from send.py!"])[0]
    connections = connection.server.connections
    broadcast(connections, message)
    sent = len(connections)
    # respond() adds "Connection: close": websockets serves one HTTP request per connection.
    return connection.respond(200, f"Sent to {sent} client{'' if sent == 1 else 's'}.")


async def run(host: str, port: int) -> None:
    async with serve(
        handler, host, port, process_request=process_request, compression=None
    ) as server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8002", help="HOST:PORT")
    host, _, port = parser.parse_args().bind.rpartition(":")
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(host, int(port)))


if __name__ == "__main__":
    main()
