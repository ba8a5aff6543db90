"""The load generator's Pusher and Mercure clients: what they send, how they read.

As in ``clients.py``, only what differs on the wire is here, as pure functions and
parsers with no sockets (``tests/unit/test_bench_clients.py`` checks them);
``loadgen.py`` keeps one client class and one account of deliveries for every
protocol, so CPU per delivery is comparable between rows.

- ``--protocol pusher``: pusher-js's WebSocket client, Pusher protocol 7, at
  ``/app/<key>?protocol=7&client=js&version=8.4.0&flash=false``. The client waits for
  ``pusher:connection_established``, sends ``pusher:subscribe`` to a public channel
  (:func:`pusher_subscribe`), and is connected once
  ``pusher_internal:subscription_succeeded`` for it came. Every other event is
  ``{"event":...,"channel":...,"data":...}`` with ``data`` a string (Pusher sends a
  JSON value as its JSON text, a string as itself): :func:`pusher_data_fast` reads
  the common one, a publication, in a few ``find`` calls; :func:`pusher_event`
  anything else. ``pusher:ping`` is answered with ``pusher:pong``
  (:data:`PUSHER_PONG`), as pusher-js does.
- ``--protocol mercure``: a browser's ``EventSource`` on a Mercure hub, ``GET
  /.well-known/mercure?topic=<channel>`` (:func:`mercure_request`), anonymous. The
  answer is a ``text/event-stream`` (``clients.HttpStream`` takes its lines); each
  ``data:`` line is one update's data (:func:`sse_data`; :func:`sse_chunk_data` reads
  the common read, one chunk of one update, without the stream parser); comments
  (heartbeats), ``id:``, ``event:`` and ``retry:`` lines are not counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

#: Where pusher-js 8 connects, after ``/app/<key>``.
PUSHER_QUERY = "protocol=7&client=js&version=8.4.0&flash=false"
PUSHER_PONG = b'{"event":"pusher:pong","data":{}}'
#: What every protocol event (``pusher:``, ``pusher_internal:``) has, in any key order.
_PUSHER_OWN = b'"event":"pusher'
_DATA = b'"data":"'


def pusher_path(key: str) -> str:
    """The path and query pusher-js opens for app ``key``."""
    return f"/app/{quote(key, safe='')}?{PUSHER_QUERY}"


def pusher_subscribe(channel: str) -> bytes:
    """``pusher:subscribe`` to a public channel (no auth), as pusher-js sends it."""
    message = {"event": "pusher:subscribe", "data": {"auth": "", "channel": channel}}
    return json.dumps(message, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class PusherEvent:
    """One Pusher message: its ``event``, ``channel`` ("" if none) and ``data``.

    ``data`` is the string the message carries (Pusher's ``data`` is JSON text in a
    string for the protocol's own events), or a JSON value's text if the sender put
    a value there; ``value`` is that data decoded as JSON where it is JSON, else None.
    """

    event: str
    channel: str
    data: str

    @property
    def value(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            return None


def pusher_event(payload: bytes) -> PusherEvent:
    """One Pusher message; ValueError if it is not a JSON object with a string event."""
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ValueError(f"not JSON: {payload[:80]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise ValueError(f"not a Pusher message: {payload[:80]!r}")
    data = message.get("data", "")
    if not isinstance(data, str):
        data = json.dumps(data, separators=(",", ":"))
    channel = message.get("channel", "")
    return PusherEvent(message["event"], channel if isinstance(channel, str) else "", data)


def pusher_data_fast(payload: bytes) -> bytes | None:
    """The data of a channel event whose data is a plain string, or None.

    Most messages a subscriber gets are that (``{"event":...,"channel":...,"data":
    "m1.…"}``, in any key order): read with a few ``find`` calls, so the load
    generator's cost per delivery stays near the raw clients'. A string holding JSON
    text of a string (``"data":"\\"m1.…\\""``) gives the inner string. Protocol
    events (``pusher:…``, ``pusher_internal:…``), data that is not a string, or a
    string with other escapes are None: :func:`pusher_event` reads them.
    """
    if _PUSHER_OWN in payload:
        return None
    at = payload.find(_DATA)
    if at < 0:
        return None
    start = at + 8
    if payload[start : start + 2] == b'\\"':
        start += 2
        end = payload.find(b'\\"', start)
    else:
        end = payload.find(b'"', start)
    if end < 0:
        return None
    data = payload[start:end]
    return None if b"\\" in data else data


def pusher_socket_id(event: PusherEvent) -> str | None:
    """``pusher:connection_established``'s ``socket_id`` (``digits.digits``), or None."""
    value = event.value
    socket_id = value.get("socket_id") if isinstance(value, dict) else None
    if not isinstance(socket_id, str):
        return None
    left, dot, right = socket_id.partition(".")
    return socket_id if dot and left.isdigit() and right.isdigit() else None


# Mercure (Server-Sent Events) ----------------------------------------------------------


def mercure_path(path: str, topic: str) -> str:
    """``path`` (the hub, maybe with a query) with ``topic=<topic>`` added."""
    return path + ("&" if "?" in path else "?") + "topic=" + quote(topic, safe="")


def mercure_request(path: str, host: str) -> bytes:
    """The GET an ``EventSource`` sends for a subscription (keep-alive, no cookie)."""
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nConnection: keep-alive\r\n\r\n"
    ).encode()


def sse_data(line: bytes) -> bytes | None:
    """A ``data:`` line's value (one leading space dropped, a CR too), else None.

    A value that is a JSON string (a JSON publication of a string) loses its quotes,
    as the JSON clients read the string.
    """
    if line[:5] != b"data:":
        return None
    value = line[5:]
    if value[:1] == b" ":
        value = value[1:]
    if value[-1:] == b"\r":
        value = value[:-1]
    if len(value) >= 2 and value[:1] == b'"' and value[-1:] == b'"':
        return value[1:-1]
    return value


def sse_chunk_data(data: bytes) -> bytes | None:
    """The update's data if ``data`` is exactly one chunk holding one ``data:`` line.

    Most reads a subscriber makes are that (the hub writes each update as one chunk,
    ``<size>\\r\\n[id: ...\\n]data: m1.…\\n\\n\\r\\n``): read in a few ``find``
    calls, so the load generator's cost per delivery stays near the WebSocket
    clients'. Anything else (several chunks in one read, a chunk cut, several data
    lines, a quoted value, a heartbeat) is None: ``clients.HttpStream`` reads it, line
    by line. Only for a stream between chunks (``HttpStream.between_chunks``).
    """
    end = data.find(b"\r\n", 0, 10)
    if end <= 0:
        return None
    try:
        size = int(data[:end], 16)
    except ValueError:
        return None
    start = end + 2
    stop = start + size
    if stop + 2 != len(data) or data[stop:] != b"\r\n":
        return None
    if data[start : start + 6] == b"data: ":
        at = start + 6
    else:
        at = data.find(b"\ndata: ", start, stop) + 7
        if at < 7:
            return None
    line_end = data.find(b"\n", at, stop)
    if line_end < 0 or data.find(b"\ndata:", line_end, stop) >= 0:
        return None
    value = data[at:line_end]
    return None if value[:1] == b'"' or value[-1:] == b"\r" else value


def sse_field(line: bytes) -> tuple[str, bytes]:
    """An event-stream line's field name and value (``""`` and the text for a comment).

    As the HTML standard parses a line: up to the first ``:`` is the field, one space
    after it is dropped; a line with no ``:`` is a field with an empty value.
    """
    if line[-1:] == b"\r":
        line = line[:-1]
    if line[:1] == b":":
        return "", line[1:]
    name, colon, value = line.partition(b":")
    if colon and value[:1] == b" ":
        value = value[1:]
    return name.decode("utf-8", "replace"), value
