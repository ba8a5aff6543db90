"""The Redis broker (``redis://``, ``rediss://``): see :mod:`.broker` for how its parts fit.

The names below were importable from ``realtime_broker.redis`` when it was one module,
and stay so.
"""

from ..presence import MAX_PRESENCE_MEMBERS
from .broker import META_TTL, RedisBroker
from .cluster import MAP_FIELDS_PER_BEAT, NODE_KEYS_RENEW, NODE_KEYS_TTL, NODE_TTL
from .envelope import (
    CONTROL_MAGIC,
    MAGIC,
    PRESENCE_MAGIC,
    Drop,
    decode,
    decode_control,
    decode_presence,
    encode,
    member_of,
    member_value,
)
from .listener import POSITION_CHECK_INTERVAL
from .sequence import Place, Sequence, Verdict
from .tally import Tally

__all__ = [
    "CONTROL_MAGIC",
    "MAGIC",
    "MAP_FIELDS_PER_BEAT",
    "MAX_PRESENCE_MEMBERS",
    "META_TTL",
    "NODE_KEYS_RENEW",
    "NODE_KEYS_TTL",
    "NODE_TTL",
    "POSITION_CHECK_INTERVAL",
    "PRESENCE_MAGIC",
    "Drop",
    "Place",
    "RedisBroker",
    "Sequence",
    "Tally",
    "Verdict",
    "decode",
    "decode_control",
    "decode_presence",
    "encode",
    "member_of",
    "member_value",
]
