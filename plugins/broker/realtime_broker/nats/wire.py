"""What the NATS broker puts on NATS: subjects and payloads, as bytes. Sans-IO.

Subjects (``PREFIX`` is ``--broker-prefix``, ``realtime`` by default):

- ``PREFIX.ch.TOKEN``: one channel's publications, ``TOKEN`` its name escaped
  (:func:`channel_token`): ``A-Z a-z 0-9 -`` as they are, every other byte of its UTF-8
  ``_HH`` (two hex digits, capitals), so any name is one valid subject token (no ``.``,
  ``*``, ``>``, space) and distinct names never share a subject; reversible
  (:func:`channel_of`), at most three times the name's bytes, and names are bounded
  (:data:`MAX_CHANNEL_BYTES`) so a subject fits any server's control line;
- ``PREFIX.control``: control messages, ``realtime/2c ID BODY`` (the Redis broker's
  layout, :func:`..redis.envelope.decode_control`);
- ``PREFIX.nodes``: each process's heartbeat (``realtime/2n JSON``);
- ``PREFIX.channels``: asks every process for its channel map (``realtime/2q UID``),
  each answering on the reply subject (``realtime/2m JSON``, in parts if large).

A publication is the Redis envelope with a fixed stand-in for the epoch and sequence
(``realtime/2 n 0 ``, then what :func:`..redis.envelope.encode` makes): NATS numbers
nothing, so the same decoding (bounded, JSON re-checked) serves, and the stand-in is
taken off on receipt. Whoever may publish on these subjects can send any bytes:
decoding never raises, and what is not ours is dropped (and counted by the broker).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ..base import EMPTY_EPOCH, Publication
from ..redis.envelope import MAGIC, Drop, decode, encode

#: The longest channel name carried, bytes of UTF-8 (the hub's names are at most 255
#: characters, so at most 1020 bytes): its subject is then at most about 3 KB, under
#: nats-server's default control line (4 KB).
MAX_CHANNEL_BYTES = 1024
#: A subject prefix: dot-separated tokens of safe characters.
PREFIX = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_UNSAFE = re.compile(r"[^A-Za-z0-9-]+")
_TOKEN = re.compile(r"(?:[A-Za-z0-9-]|_[0-9A-F]{2})*")
_ESCAPE = re.compile(r"_([0-9A-F]{2})")

#: What every publication starts with: the Redis magic, a stand-in epoch and sequence.
HEADER = MAGIC + b"n 0 "
NODE_MAGIC = b"realtime/2n "
ASK_MAGIC = b"realtime/2q "
MAP_MAGIC = b"realtime/2m "
#: The largest heartbeat taken (its JSON is a few hundred bytes).
MAX_NODE_SIZE = 4096
#: Bounds on what a heartbeat or a map says (JSON's safe integers).
MAX_COUNT = 2**53
MAX_UID = 64
MAX_NAME = 256


def _escape(match: re.Match[str]) -> str:
    return "".join(f"_{byte:02X}" for byte in match.group().encode())


@functools.lru_cache(maxsize=8192)
def channel_token(channel: str) -> str:
    """``channel`` as one subject token; ValueError if over :data:`MAX_CHANNEL_BYTES`.

    The empty name is ``_`` (no escape is a lone ``_``).
    """
    if len(channel) * 4 > MAX_CHANNEL_BYTES and len(channel.encode()) > MAX_CHANNEL_BYTES:
        raise ValueError(f"the channel name is over {MAX_CHANNEL_BYTES} bytes")
    return _UNSAFE.sub(_escape, channel) if channel else "_"


def channel_of(token: str) -> str | None:
    """The channel :func:`channel_token` made ``token`` of; None if it made none such."""
    if token == "_":
        return ""
    if not token or not _TOKEN.fullmatch(token):
        return None
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), token).encode("latin-1")
    try:
        channel = raw.decode()
    except UnicodeDecodeError:
        return None
    # Only the one spelling: an escaped safe byte is somebody else's token.
    return channel if channel_token(channel) == token else None


@dataclasses.dataclass(frozen=True, slots=True)
class Subjects:
    """The broker's subjects under one prefix."""

    prefix: str

    def __post_init__(self) -> None:
        if not PREFIX.fullmatch(self.prefix):
            raise ValueError(
                f"--broker-prefix {self.prefix!r} is not a NATS subject prefix "
                "(dot-separated tokens of A-Z a-z 0-9 _ -)"
            )

    def channel(self, channel: str) -> str:
        return f"{self.prefix}.ch.{channel_token(channel)}"

    @property
    def control(self) -> str:
        return f"{self.prefix}.control"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}.nodes"

    @property
    def channels(self) -> str:
        return f"{self.prefix}.channels"


def encode_publication(publication: Publication, limit: int) -> bytes:
    """The payload for a publication; ValueError if its body is over ``limit`` bytes."""
    return HEADER + encode(publication, limit)


def decode_publication(raw: bytes, limit: int) -> Publication | Drop:
    """The publication (unnumbered), or why the payload is dropped. Never raises."""
    if not raw.startswith(HEADER):
        return Drop.FOREIGN
    decoded = decode(raw, limit)
    if isinstance(decoded, Drop):
        return decoded
    return dataclasses.replace(decoded, epoch=EMPTY_EPOCH, offset=0)


def _count(value: object) -> bool:
    return type(value) is int and 0 <= value < MAX_COUNT


def _json(raw: bytes, magic: bytes) -> Any:
    if not raw.startswith(magic):
        return None
    try:
        return json.loads(raw[len(magic) :])
    except (ValueError, RecursionError):
        return None


#: What a heartbeat says of its process (Centrifugo's NodeResult fields).
NODE_FIELDS = ("num_clients", "num_channels", "num_subs", "uptime")


def encode_node(node: Mapping[str, Any], *, gone: bool = False) -> bytes:
    """A heartbeat: ``node`` is :meth:`..base.Broker.local_node`'s; ``gone`` at close."""
    body = {"uid": node["uid"], "gone": True} if gone else dict(node)
    return NODE_MAGIC + json.dumps(body, separators=(",", ":")).encode()


def decode_node(raw: bytes) -> dict[str, Any] | Drop:
    """A heartbeat's node (``{"uid", "gone": True}`` for a farewell), or why not."""
    if len(raw) > MAX_NODE_SIZE:
        return Drop.OVERSIZED
    body = _json(raw, NODE_MAGIC)
    if not isinstance(body, dict):
        return Drop.FOREIGN
    uid = body.get("uid")
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_UID:
        return Drop.FOREIGN
    if body.get("gone") is True:
        return {"uid": uid, "gone": True}
    name = body.get("name")
    if not isinstance(name, str) or len(name) > MAX_NAME:
        return Drop.FOREIGN
    if not all(_count(body.get(field)) for field in NODE_FIELDS):
        return Drop.FOREIGN
    return {"uid": uid, "name": name, **{field: body[field] for field in NODE_FIELDS}}


def encode_ask(uid: str) -> bytes:
    return ASK_MAGIC + uid.encode()


def decode_ask(raw: bytes) -> str | None:
    """The asking process's uid, or None if not an ask of ours."""
    if not raw.startswith(ASK_MAGIC) or len(raw) > len(ASK_MAGIC) + MAX_UID:
        return None
    try:
        uid = raw[len(ASK_MAGIC) :].decode()
    except UnicodeDecodeError:
        return None
    return uid or None


def encode_maps(uid: str, channels: Mapping[str, int], budget: int) -> Iterator[bytes]:
    """A process's channel map in parts of at most about ``budget`` bytes each."""
    parts: list[dict[str, int]] = [{}]
    size = 0
    for channel, count in channels.items():
        cost = len(json.dumps(channel)) + 24
        if size + cost > budget and parts[-1]:
            parts.append({})
            size = 0
        parts[-1][channel] = count
        size += cost
    for index, part in enumerate(parts):
        body = {"uid": uid, "part": index, "parts": len(parts), "channels": part}
        yield MAP_MAGIC + json.dumps(body, separators=(",", ":")).encode()


def decode_map(raw: bytes) -> tuple[str, int, int, dict[str, int]] | None:
    """(uid, part, parts, channels) of one part of a map, or None if not one of ours."""
    body = _json(raw, MAP_MAGIC)
    if not isinstance(body, dict):
        return None
    uid, part, parts, channels = (body.get(k) for k in ("uid", "part", "parts", "channels"))
    if not isinstance(uid, str) or not 0 < len(uid) <= MAX_UID or not isinstance(channels, dict):
        return None
    if not (_count(part) and _count(parts)) or not part < parts:  # type: ignore[operator]
        return None
    if not all(_count(n) for n in channels.values()):
        return None
    return uid, int(part), int(parts), channels  # type: ignore[arg-type]
