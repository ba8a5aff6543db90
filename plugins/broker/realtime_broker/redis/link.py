"""One Pub/Sub connection of the Redis broker's subscription, and what rides on it.

A plain Redis has one: every channel and the control channel. Under Redis Cluster
(:mod:`.clustered`) there is one per shard, each holding the channels whose slots that
shard serves (SSUBSCRIBE), so a shard failing costs only its own channels: the others'
links never notice. Everything here is bookkeeping; the listener does the I/O.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub


class Regroup(Exception):
    """A link's slots are no longer one shard's: the links must be made again."""


class Link:
    """One subscription connection's state (see :class:`.listener.RedisListener`)."""

    def __init__(self, name: str, *, control: bool, slots: frozenset[int] = frozenset()) -> None:
        #: For the log: which Redis (or shard) this is.
        self.name = name
        #: Whether the control channel rides on this one.
        self.control = control
        #: The cluster slots whose channels it holds (empty: all, on a plain Redis).
        self.slots = slots
        #: The connection while it is up: where (S)SUBSCRIBEs go.
        self.pubsub: PubSub | None = None
        #: Where its questions to Redis go (the numbering of its channels): the node it
        #: is subscribed on, so that what the subscription carried before the answer came
        #: from the same server. ``None``: the broker's publishing client.
        self.commands: Redis | None = None
        #: Channels to subscribe (True) or unsubscribe (False) on it, not sent yet.
        self.changes: dict[str, bool] = {}
        self.flush_task: asyncio.Task[None] | None = None
        #: Channels Redis confirmed on this connection (and has not unsubscribed since)...
        self.live: set[str] = set()
        #: ...of which those whose numbering this process has not looked up yet.
        self.fresh: set[str] = set()
        #: Channels whose position the next settle checks against Redis, and when next.
        self.checking: set[str] = set()
        self.next_check = 0.0
        #: Unsubscribes sent and not confirmed yet, per Pub/Sub channel: one confirmed
        #: without (a shard that lost the slot) means the channel must be found elsewhere.
        self.unsubscribing: Counter[bytes] = Counter()
        #: Whether it is subscribed now, and since when it is not.
        self.up = False
        self.down_since = time.monotonic()
        #: Times it was lost after having been up.
        self.losses = 0
        #: Anything the connection needs to be reached again (the cluster's node, etc.).
        self.extra: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"<Link {self.name} {'up' if self.up else 'down'}>"
