"""The events themselves: a name from a fixed set, an id, a time and a few fields."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Every event, with the fields it carries (besides ``name``, ``id`` and ``time_ms``).
EVENT_FIELDS: Mapping[str, tuple[str, ...]] = {
    "connect": ("client", "user", "protocol"),
    "disconnect": ("client", "user", "protocol", "code", "reason"),
    "subscribe": ("client", "user", "channel"),
    "unsubscribe": ("client", "user", "channel"),
    "channel_occupied": ("channel",),
    "channel_vacated": ("channel",),
    "user_online": ("user",),
    "user_offline": ("user",),
}
EVENT_NAMES: tuple[str, ...] = tuple(EVENT_FIELDS)
#: A field's text is cut to this many characters (a reason, a user id: bounded).
MAX_FIELD = 256


def new_id() -> str:
    """Unique enough to deduplicate on (a retried batch repeats its events' ids)."""
    return os.urandom(12).hex()


@dataclass(frozen=True, slots=True)
class Event:
    """One event: ``fields`` are those :data:`EVENT_FIELDS` lists for ``name``."""

    name: str
    fields: Mapping[str, str | int]
    id: str = field(default_factory=new_id)
    time_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    @classmethod
    def of(cls, name: str, **fields: str | int | None) -> Event:
        """Checked: a known name, only its fields, strings bounded; ``None`` left out."""
        allowed = EVENT_FIELDS.get(name)
        if allowed is None:
            raise ValueError(f"unknown event {name!r}: one of {', '.join(EVENT_NAMES)}")
        extra = set(fields) - set(allowed)
        if extra:
            raise ValueError(f"event {name!r} has no field(s) {', '.join(sorted(extra))}")
        kept: dict[str, str | int] = {}
        for key, value in fields.items():
            if value is None:
                continue
            kept[key] = value[:MAX_FIELD] if isinstance(value, str) else int(value)
        return cls(name, kept)

    def as_json(self) -> dict[str, Any]:
        """The event as a webhook body lists it (Pusher's shape: ``name`` first)."""
        return {"name": self.name, "id": self.id, "time_ms": self.time_ms, **self.fields}
