"""The pure parts of ``bench/workload.py`` (Centrifugo's workload): no sockets, no clock.

Channels. User ``i`` (0 to clients - 1) is in ``personal:#i`` (one subscriber) and
``group:<i // 10>`` (10 subscribers). Each kind of channel is published to in an
endless round-robin: position ``p`` of kind ``k`` (``g`` groups, ``u`` personal) is
channel ``p % channels`` in round ``p // channels``; a ``broadcast`` call takes the
next ``batch`` (50) positions, and its data is ``<k><p>.<ns>``: the kind, the first
position and the send time. A subscriber of channel ``c`` finds its own position in
the call, hence its channel's round (:func:`round_of`): a channel's rounds go up by
one, so a gap is a publication lost (:class:`Sequence`), with no per-channel state in
the payload. At the end, the last round a channel was sent is known
(:func:`last_round`), so a tail lost is counted too.

Rates. Half the deliveries go to groups, half to personal channels (:func:`plan`);
each kind's calls are spread evenly in time (:func:`due`). Latencies go to a
histogram of 0.1 ms buckets to 100 ms, then 1 ms to 60 s (:class:`Histogram`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

GROUP = "g"
PERSONAL = "u"
GROUP_NAMESPACE = "group"
PERSONAL_NAMESPACE = "personal"


def group_count(clients: int, group_size: int) -> int:
    """How many groups ``clients`` users fill, ``group_size`` each (the last may be short)."""
    return math.ceil(clients / group_size)


def channel_name(kind: str, index: int) -> str:
    """``group:N`` or ``personal:#N`` (user-limited: only user ``N`` may be in it)."""
    if kind == GROUP:
        return f"{GROUP_NAMESPACE}:{index}"
    if kind == PERSONAL:
        return f"{PERSONAL_NAMESPACE}:#{index}"
    raise ValueError(f"unknown kind {kind!r}")


def channel_index(name: str) -> tuple[str, int]:
    """The kind and index of a :func:`channel_name`."""
    space, _, rest = name.partition(":")
    if space == GROUP_NAMESPACE and rest.isdigit():
        return GROUP, int(rest)
    if space == PERSONAL_NAMESPACE and rest[:1] == "#" and rest[1:].isdigit():
        return PERSONAL, int(rest[1:])
    raise ValueError(f"not a workload channel: {name!r}")


# Payload ------------------------------------------------------------------------------


def encode(kind: str, position: int, sent_ns: int) -> str:
    """A call's data: ``g1200.123456789`` (kind, first position, send time in ns)."""
    if kind not in (GROUP, PERSONAL) or position < 0:
        raise ValueError(f"bad publication {kind!r} {position}")
    return f"{kind}{position}.{sent_ns}"


def decode(data: bytes) -> tuple[str, int, int]:
    """(kind, position, sent_ns) of :func:`encode`'s text; ValueError otherwise."""
    kind = data[:1].decode()
    if kind not in (GROUP, PERSONAL):
        raise ValueError(f"not a workload publication: {data[:40]!r}")
    position, dot, sent = data[1:].partition(b".")
    if not dot or not position.isdigit() or not sent.isdigit():
        raise ValueError(f"not a workload publication: {data[:40]!r}")
    return kind, int(position), int(sent)


def batch(position: int, size: int, channels: int) -> list[int]:
    """The channels of the call starting at ``position``: ``size`` in turn, never one twice."""
    if not 0 < size <= channels:
        raise ValueError(f"a batch of {size} over {channels} channels")
    return [(position + j) % channels for j in range(size)]


def round_of(position: int, channel: int, channels: int, size: int) -> int:
    """The round of ``channel`` in the call starting at ``position`` (ValueError if absent)."""
    offset = (channel - position) % channels
    if offset >= size:
        raise ValueError(f"channel {channel} is not in the call at {position}")
    return (position + offset) // channels


def last_round(channel: int, positions: int, channels: int) -> int:
    """The last round ``channel`` was sent, after ``positions`` positions (-1: never)."""
    if positions <= channel:
        return -1
    return (positions - 1 - channel) // channels


def broadcast_body(channels: list[str], data: str) -> bytes:
    """The server API's ``broadcast`` request body."""
    return json.dumps({"channels": channels, "data": data}, separators=(",", ":")).encode()


def api_errors(answer: bytes) -> tuple[int, str]:
    """How many errors a server API answer holds (a ``broadcast`` has one per channel)
    and the distinct ones, as text."""
    try:
        body = json.loads(answer)
    except ValueError:
        return 1, answer[:80].decode(errors="replace")
    found = [body["error"]] if "error" in body else []
    for item in body.get("result", {}).get("responses", []):
        if "error" in item:
            found.append(item["error"])
    distinct = sorted({json.dumps(e, sort_keys=True) for e in found})
    return len(found), ", ".join(distinct)


def http_request(path: str, body: bytes, api_key: str) -> bytes:
    """One keep-alive HTTP/1.1 POST of JSON with the API key."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {api_key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def http_responses(buf: bytearray) -> list[tuple[int, bytes]]:
    """Whole responses (status, body) taken off the front of ``buf`` (Content-Length only)."""
    out: list[tuple[int, bytes]] = []
    while True:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return out
        head = bytes(buf[:end]).split(b"\r\n")
        status = int(head[0].split()[1])
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(buf) < end + 4 + length:
            return out
        out.append((status, bytes(buf[end + 4 : end + 4 + length])))
        del buf[: end + 4 + length]


# Rates --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What one target rate asks for, per kind: channel publications and calls a second."""

    rate: float  # deliveries a second, all kinds
    group_publications: float  # group channels published to a second
    personal_publications: float
    group_calls: float  # broadcast calls a second
    personal_calls: float


def plan(rate: float, group_size: int, batch_size: int) -> Plan:
    """Half of ``rate`` to groups (``group_size`` deliveries each), half to personal channels."""
    groups = rate / 2 / group_size
    personal = rate / 2
    return Plan(rate, groups, personal, groups / batch_size, personal / batch_size)


def due(elapsed: float, per_second: float) -> int:
    """Calls that should have been started ``elapsed`` s in, spread evenly (the first at 0)."""
    if elapsed < 0 or per_second <= 0:
        return 0
    return math.floor(elapsed * per_second + 1e-9) + 1  # k / rate is call k's time, float and all


def churn_times(seconds: float, per_second: float) -> list[float]:
    """When each disconnect-and-connect happens, evenly over ``seconds``."""
    if per_second <= 0:
        return []
    return [k / per_second for k in range(math.floor(seconds * per_second))]


# Accounts -----------------------------------------------------------------------------


class Sequence:
    """One subscription's rounds: gaps are losses, a round again or back is out of order."""

    __slots__ = ("first", "got", "last", "lost", "ooo")

    def __init__(self) -> None:
        self.first = -1
        self.last = -1
        self.got = 0
        self.lost = 0
        self.ooo = 0

    def add(self, rnd: int) -> None:
        self.got += 1
        if self.last < 0:
            self.first = self.last = rnd
        elif rnd == self.last + 1:
            self.last = rnd
        elif rnd > self.last + 1:
            self.lost += rnd - self.last - 1
            self.last = rnd
        else:
            self.ooo += 1

    def tail(self, final: int) -> int:
        """Rounds sent after the last one seen (at the end: lost at the tail)."""
        return max(0, final - self.last) if self.last >= 0 else 0


class Histogram:
    """Latencies, 0.1 ms buckets below 100 ms, 1 ms buckets to 60 s (the last holds more)."""

    FINE = 1000  # 0.1 ms buckets
    COARSE = 60_000 - 100  # 1 ms buckets from 100 ms

    def __init__(self) -> None:
        self.counts = [0] * (self.FINE + self.COARSE + 1)
        self.total = 0

    @classmethod
    def bucket(cls, ns: int) -> int:
        us = max(0, ns) // 1000
        if us < 100_000:
            return us // 100
        return min(cls.FINE + (us - 100_000) // 1000, cls.FINE + cls.COARSE)

    @classmethod
    def upper_ms(cls, index: int) -> float:
        """The bucket's upper bound, ms (what a percentile reports)."""
        if index < cls.FINE:
            return (index + 1) / 10
        return 100.0 + min(index - cls.FINE + 1, cls.COARSE)  # the last: this or more

    def add(self, ns: int) -> None:
        self.counts[self.bucket(ns)] += 1
        self.total += 1

    def merge(self, other: Histogram) -> None:
        for i, count in enumerate(other.counts):
            if count:
                self.counts[i] += count
        self.total += other.total

    def percentile(self, q: float) -> float | None:
        if not self.total:
            return None
        rank = max(1, math.ceil(q * self.total))
        seen = 0
        for i, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return self.upper_ms(i)
        return self.upper_ms(len(self.counts) - 1)

    def maximum(self) -> float | None:
        for i in range(len(self.counts) - 1, -1, -1):
            if self.counts[i]:
                return self.upper_ms(i)
        return None


def held(
    p99_ms: float | None, lost: int, achieved: float, target: float, bound: float, refused: int = 0
) -> bool:
    """A step is held: nothing lost or refused, p99 within ``bound`` ms, at least 95% of
    the target."""
    if p99_ms is None or p99_ms > bound or lost or refused:
        return False
    return achieved >= 0.95 * target
