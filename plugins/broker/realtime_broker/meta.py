"""What a publication carries besides its data, for protocols that name or address
their messages: an event name, an id, a connection to skip, a few attributes.

One bus serves every protocol, so these travel with the publication through every
broker (and its history) alike. They are neutral: Pusher puts its event name in
``event`` and its excluded ``socket_id`` in ``skip``; Mercure its ``type`` in
``event``, its update id in ``id`` and ``private``/``retry`` in ``attrs``; the
Centrifuge protocol and raw ``/ws`` ignore them. Each is bounded here, once, for
every publisher and for what comes back off the wire.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .base import Publication

#: The longest ``event``, ``id`` or ``skip`` (characters; Pusher's event names are at
#: most 200, Mercure's ids are URIs).
MAX_NAME = 512
#: At most this many ``attrs``, each name at most :data:`MAX_ATTR_NAME` characters and
#: each value at most :data:`MAX_NAME`.
MAX_ATTRS = 16
MAX_ATTR_NAME = 64
#: The largest metadata as it travels (its JSON text, bytes): bounds what a forged
#: message on a distributed broker can make a process parse.
MAX_META_SIZE = 4 * MAX_NAME + MAX_ATTRS * (MAX_ATTR_NAME + MAX_NAME + 8)


def check_meta(publication: Publication) -> None:
    """Refuse metadata no broker could carry: ``TypeError`` or ``ValueError``, saying why."""
    for field in ("event", "id", "skip"):
        value = getattr(publication, field)
        if value is None:
            continue
        if not isinstance(value, str):
            raise TypeError(f"a publication's {field} is a string or None")
        if len(value) > MAX_NAME:
            raise ValueError(f"a publication's {field} is over {MAX_NAME} characters")
    attrs = publication.attrs
    if attrs is None:
        return
    if not isinstance(attrs, Mapping):
        raise TypeError("a publication's attrs is a mapping of strings to strings")
    if len(attrs) > MAX_ATTRS:
        raise ValueError(f"a publication has at most {MAX_ATTRS} attrs")
    for name, value in attrs.items():
        if not (isinstance(name, str) and isinstance(value, str)):
            raise TypeError("a publication's attrs map strings to strings")
        if len(name) > MAX_ATTR_NAME or len(value) > MAX_NAME:
            raise ValueError(
                f"a publication's attr names are at most {MAX_ATTR_NAME} characters "
                f"and values at most {MAX_NAME}"
            )


def has_meta(publication: Publication) -> bool:
    """Whether there is anything to carry (most publications have none)."""
    return (
        publication.event is not None
        or publication.id is not None
        or publication.skip is not None
        or bool(publication.attrs)
    )


def encode_meta(publication: Publication) -> bytes:
    """The metadata as JSON text (checked by :func:`check_meta` before)."""
    fields: dict[str, Any] = {}
    if publication.event is not None:
        fields["e"] = publication.event
    if publication.id is not None:
        fields["i"] = publication.id
    if publication.skip is not None:
        fields["s"] = publication.skip
    if publication.attrs:
        fields["a"] = dict(publication.attrs)
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def decode_meta(raw: bytes) -> dict[str, Any] | None:
    """The keyword arguments of :class:`Publication` that ``raw`` encodes, or None when
    it is not metadata realtime wrote (wrong shape, types or sizes): never raises."""
    if len(raw) > MAX_META_SIZE:
        return None
    try:
        fields = json.loads(raw)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return None
    if not isinstance(fields, dict) or not fields.keys() <= {"e", "i", "s", "a"}:
        return None
    meta: dict[str, Any] = {}
    for key, field in (("e", "event"), ("i", "id"), ("s", "skip")):
        value = fields.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or len(value) > MAX_NAME:
            return None
        meta[field] = value
    attrs = fields.get("a")
    if attrs is not None:
        if not isinstance(attrs, dict) or len(attrs) > MAX_ATTRS:
            return None
        for name, value in attrs.items():
            if not isinstance(value, str) or len(name) > MAX_ATTR_NAME or len(value) > MAX_NAME:
                return None
        meta["attrs"] = attrs
    return meta
