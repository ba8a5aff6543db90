"""The Redis broker's envelopes: what travels on its Pub/Sub channels, as bytes.

Sans-IO: encoding and decoding only, so every rule about what is believed can be
tested without a Redis. Three kinds share a channel prefix but not a magic:

- a publication, ``realtime/2 <epoch> <seq> <kind><body>``: the publisher sends
  ``<kind><body>`` (:func:`encode`), the publish script puts the magic, epoch and
  sequence number in front; a publication with metadata (:mod:`..meta`) has
  ``m<length> <meta JSON>`` before its kind;
- a join or leave, ``realtime/2p ...``, made by the presence scripts (:func:`decode_presence`);
- a control message, ``realtime/2c <id> <body>`` on the broker's control channel
  (:func:`encode_control`, :func:`decode_control`), whose ``id`` names the proof the
  control script left in Redis.

Anyone allowed to PUBLISH can send any bytes: decoding never raises, bounds every
length before converting it, and re-encodes JSON so that no foreign bytes reach a
client's frame.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from typing import Any

from ..base import MAX_CONTROL_SIZE, MAX_INFO_SIZE, Publication
from ..meta import MAX_META_SIZE, decode_meta, encode_meta, has_meta
from ..presence import Member, PresenceEvent

#: What every payload starts with; anything else on the channel is not ours. Version
#: 2 added JSON and the publisher's info: version 1 processes ignore version 2's
#: messages as not theirs, and the other way round (their numbering keys differ too).
MAGIC = b"realtime/2 "
#: Kinds of body: text, binary, JSON text; in capitals when the publisher's info
#: comes first, as ``<length> <info>``.
TEXT, BINARY, JSON = b"t", b"b", b"j"
WITH_INFO = {b"T": TEXT, b"B": BINARY, b"J": JSON}
#: What an epoch looks like (realtime makes 8 hex digits; a short token, nothing else).
EPOCH = re.compile(rb"[0-9A-Za-z]{1,32}")
EPOCH_MAX = 32
#: Redis counts in a signed 64-bit integer: a sequence number has at most 19 digits.
SEQ_DIGITS = 19
INFO_DIGITS = len(str(MAX_INFO_SIZE))
#: The envelope around a body at its largest, info aside: magic, epoch, sequence,
#: spaces, kind, the info's length and a space.
#: What comes before the kind when the publication has metadata.
META = b"m"
META_DIGITS = len(str(MAX_META_SIZE))
ENVELOPE_OVERHEAD = (len(MAGIC) + EPOCH_MAX + 1 + SEQ_DIGITS + 1 + 1 + INFO_DIGITS + 1) + (
    1 + META_DIGITS + 1 + MAX_META_SIZE
)

#: What joins and leaves start with on a channel's Pub/Sub channel. Then ``j`` (a join),
#: ``l`` (a leave), in capitals when it is the user's first client to join or last
#: to leave; the client id's length in bytes, ``:``, the client id; then the member as
#: stored (the user's length, ``:``, the user, the info).
PRESENCE_MAGIC = b"realtime/2p "

#: What control messages start with on the control channel, then their id and a space.
CONTROL_MAGIC = b"realtime/2c "
#: A control message's id: random, 16 hex digits, made by the publisher.
CONTROL_ID = re.compile(rb"[0-9a-f]{16}")
CONTROL_ID_SIZE = 16


class Drop(enum.Enum):
    """Why a payload on a channel is not a publication (the value goes in the log)."""

    FOREIGN = "that realtime did not publish"
    OVERSIZED = "over the size limit"


def member_value(member: Member) -> bytes:
    """A member as the presence hash stores it: the user's length, ``:``, user, info."""
    user = member.user.encode()
    return b"%d:%s%s" % (len(user), user, (member.info or "").encode())


def _prefixed(data: bytes) -> tuple[bytes, bytes] | None:
    """``<length>:<that many bytes><rest>`` as (those bytes, rest); None if malformed."""
    length, colon, rest = data.partition(b":")
    if not colon or not length.isdigit() or len(length) > 6 or int(length) > len(rest):
        return None
    n = int(length)
    return rest[:n], rest[n:]


def member_of(client: bytes, value: bytes) -> Member | None:
    """The member stored as ``value``; None if it is not one realtime stored.

    Its info is parsed and encoded again (JSON, as every member's is): whoever can
    PUBLISH on Redis, or write its keys, never gets bytes of their own into a client's
    frame, only a JSON value at most :data:`MAX_INFO_SIZE` bytes long."""
    parts = _prefixed(value)
    if parts is None:
        return None
    user, info = parts
    if len(info) > MAX_INFO_SIZE:
        return None
    try:
        text = info.decode()
        if text:
            text = json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":"))
        return Member(client.decode(), user.decode(), text or None)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None


def decode_presence(raw: bytes) -> PresenceEvent | Drop:
    """A join or leave from a channel's Pub/Sub channel (``raw`` starts with the magic)."""
    start = len(PRESENCE_MAGIC)
    kind = raw[start : start + 1]
    if kind not in (b"j", b"J", b"l", b"L"):
        return Drop.FOREIGN
    parts = _prefixed(raw[start + 1 :])
    member = None if parts is None else member_of(*parts)
    if member is None:
        return Drop.FOREIGN
    return PresenceEvent(kind in (b"j", b"J"), member, kind.isupper())


def encode(publication: Publication, limit: int | None = None) -> bytes:
    """The part the publisher sends; Redis prefixes magic, epoch and sequence.

    Raises ``ValueError`` when the body is over ``limit`` bytes: every process would
    drop it on receipt.
    """
    data = publication.data
    if isinstance(data, str):
        body = data.encode()
        kind = JSON if publication.json else TEXT
    else:
        body = data
        kind = BINARY
    if limit is not None and len(body) > limit:
        raise ValueError(f"the publication is {len(body)} bytes, over the {limit}-byte limit")
    prefix = b""
    if has_meta(publication):
        meta = encode_meta(publication)
        prefix = b"%s%d " % (META, len(meta)) + meta
    if publication.info is None:
        return prefix + kind + body
    info = publication.info.encode()
    return b"%s%s%d %s%s" % (prefix, kind.upper(), len(info), info, body)


def decode(raw: bytes, limit: int | None = None) -> Publication | Drop:
    """The publication, numbered, or why the payload is dropped.

    Never raises: the epoch, sequence and info's length are bounded before anything is
    converted. A body over ``limit`` bytes, or an info over ``MAX_INFO_SIZE``, is
    :attr:`Drop.OVERSIZED`.
    """
    start = len(MAGIC)
    if not raw.startswith(MAGIC):
        return Drop.FOREIGN
    space = raw.find(b" ", start, start + EPOCH_MAX + 1)
    epoch = raw[start:space]
    if space < 0 or not EPOCH.fullmatch(epoch):
        return Drop.FOREIGN
    start = space + 1
    space = raw.find(b" ", start, start + SEQ_DIGITS + 1)
    seq = raw[start:space]
    if space <= start or not seq.isdigit():  # ASCII digits only, for bytes
        return Drop.FOREIGN
    start = space + 1
    meta: dict[str, Any] = {}
    if raw[start : start + 1] == META:
        space = raw.find(b" ", start + 1, start + 2 + META_DIGITS)
        length = raw[start + 1 : space]
        if space <= start + 1 or not length.isdigit() or int(length) > MAX_META_SIZE:
            return Drop.FOREIGN
        end = space + 1 + int(length)
        decoded = decode_meta(raw[space + 1 : end]) if end <= len(raw) else None
        if decoded is None:
            return Drop.FOREIGN
        meta = decoded
        start = end
    kind = raw[start : start + 1]
    start += 1
    info: str | None = None
    if kind in WITH_INFO:
        kind = WITH_INFO[kind]
        space = raw.find(b" ", start, start + INFO_DIGITS + 1)
        length = raw[start:space]
        if space <= start or not length.isdigit():
            return Drop.FOREIGN
        if int(length) > MAX_INFO_SIZE:
            return Drop.OVERSIZED
        start = space + 1 + int(length)
        if start > len(raw):
            return Drop.FOREIGN
        try:
            info = raw[space + 1 : start].decode()
        except UnicodeDecodeError:
            return Drop.FOREIGN
    if limit is not None and len(raw) - start > limit:
        return Drop.OVERSIZED
    body = raw[start:]
    if kind == BINARY:
        return Publication(body, False, info, epoch.decode(), int(seq), **meta)
    if kind != TEXT and kind != JSON:
        return Drop.FOREIGN
    if kind == JSON:
        # Embedded as a value in clients' frames: it must be JSON, whoever sent it.
        json_text = _json_text(body)
        if json_text is None:
            return Drop.FOREIGN
        return Publication(json_text, True, info, epoch.decode(), int(seq), **meta)
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return Drop.FOREIGN
    return Publication(text, False, info, epoch.decode(), int(seq), **meta)


def _json_text(data: bytes) -> str | None:
    """``data`` as text if it is one JSON document (a JSON publication's body, which
    protocols embed as a value in clients' frames), else None."""
    try:
        text = data.decode()
        json.loads(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    return text


def parse_counter(value: Any) -> int | None:
    """Redis's counter as a number, or ``None`` when absent or not one realtime keeps."""
    if isinstance(value, bytes) and 0 < len(value) <= SEQ_DIGITS and value.isdigit():
        return int(value)
    return None


def is_member(event: PresenceEvent, stored: object) -> bool:
    """Whether Redis's presence hash holds the announced member (``stored``: its value)."""
    client = event.member.client
    return isinstance(stored, bytes) and member_of(client.encode(), stored) == event.member


def proof(body: bytes) -> bytes:
    """What the control script stores for a control message's body (``redis.sha1hex``)."""
    return hashlib.sha1(body, usedforsecurity=False).hexdigest().encode()


def encode_control(data: bytes) -> bytes:
    """A control message's body as sent (the script puts magic and id in front).

    Raises ``ValueError`` over :data:`MAX_CONTROL_SIZE` bytes, ``TypeError`` if not bytes.
    """
    if not isinstance(data, bytes):
        raise TypeError("a control message is bytes")
    if len(data) > MAX_CONTROL_SIZE:
        raise ValueError(f"the control message is {len(data)} bytes, over {MAX_CONTROL_SIZE}")
    return data


def decode_control(raw: bytes) -> tuple[bytes, bytes] | Drop:
    """(id, body) of a control message off the control channel, or why it is dropped."""
    if not raw.startswith(CONTROL_MAGIC):
        return Drop.FOREIGN
    start = len(CONTROL_MAGIC)
    ident = raw[start : start + CONTROL_ID_SIZE]
    if raw[start + CONTROL_ID_SIZE : start + CONTROL_ID_SIZE + 1] != b" ":
        return Drop.FOREIGN
    if not CONTROL_ID.fullmatch(ident):
        return Drop.FOREIGN
    body = raw[start + CONTROL_ID_SIZE + 1 :]
    if len(body) > MAX_CONTROL_SIZE:
        return Drop.OVERSIZED
    return ident, body
