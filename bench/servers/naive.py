"""The seed's naive design, for comparison: one set of sockets, sent to one after the other.

``/send.py?message=...`` awaits ``send`` on every client in turn, as the Go seed does,
so one client that stops reading holds up the whole broadcast (and the HTTP request).

    python bench/servers/naive.py --bind 127.0.0.1:8001
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart, request, websocket

app = Quart(__name__)
clients: set[Any] = set()


@app.websocket("/ws")
async def ws() -> None:
    await websocket.accept()
    connection = websocket._get_current_object()  # type: ignore[attr-defined]
    clients.add(connection)
    try:
        while True:
            await websocket.receive()
    finally:
        clients.discard(connection)


@app.route("/send.py", methods=["GET", "POST"])
async def send() -> tuple[str, int, dict[str, str]]:
    message = request.args.get("message") or "Hello from send.py!"
    sent = 0
    for connection in list(clients):
        try:
            await connection.send(message)
            sent += 1
        except Exception:
            clients.discard(connection)
    text = f"Sent to {sent} client{'' if sent == 1 else 's'}."
    return text, 200, {"Content-Type": "text/plain; charset=utf-8"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:8001", help="HOST:PORT")
    config = Config()
    config.bind = [parser.parse_args().bind]
    asyncio.run(serve(app, config))


if __name__ == "__main__":
    main()
