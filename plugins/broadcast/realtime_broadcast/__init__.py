"""The seed's ``broadcast`` extension: ``broadcast(message)`` for drop-in scripts.

Scripts get ``broadcast`` (and ``history``, a channel's kept publications, and
``presence`` and ``presence_stats``, who is in it) in their
namespace without an import; editors and linters can see them with ``from
realtime_broadcast import broadcast, history``.
"""

from .functions import (
    Broadcast,
    InvalidChannel,
    MessageNotText,
    MessageTooLarge,
    broadcast,
    history,
    presence,
    presence_stats,
)

__all__ = [
    "Broadcast",
    "InvalidChannel",
    "MessageNotText",
    "MessageTooLarge",
    "broadcast",
    "history",
    "presence",
    "presence_stats",
]
