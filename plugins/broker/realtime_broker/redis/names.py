"""The Redis broker's key and Pub/Sub channel names (``realtime`` is ``--broker-prefix``).

- ``realtime:channel:NAME``: a channel's Pub/Sub channel (``NAME`` as given, any
  characters): its publications, joins and leaves.
- ``realtime:control``: the Pub/Sub channel of control messages, and
  ``realtime:control:ID`` the proof the control script leaves for each (see
  :mod:`.control`).
- ``realtime:{ch:NAME}:meta``, ``...:history``, ``...:presence``,
  ``...:presence-expire``, ``...:presence-users``: a channel's numbering, history and
  presence; ``...:result:DIGEST`` the first result of an idempotent publish (the key's
  digest, so no key can name another channel's keys). The ``{ch:NAME}`` hash tag
  puts everything of one channel in one Redis Cluster slot.
- ``realtime:nodes``, ``realtime:{node:NODE}:channels`` and ``...:info``: each
  process's client count, channel map and description (see :mod:`.cluster`).

Neither a name nor the fixed text around it can make two channels' names meet.
"""

from __future__ import annotations

import hashlib


class Names:
    """Every name the broker uses in Redis, from its prefix. Sans-IO."""

    #: The command the scripts publish with, and presence's announce flag for it.
    publish_command = "PUBLISH"
    announce = "1"

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = f"{prefix}:nodes"
        self.control = f"{prefix}:control"
        self.control_bytes = self.control.encode()
        self.channel_prefix = f"{prefix}:channel:".encode()

    def key(self, channel: str) -> str:
        """The Pub/Sub channel carrying ``channel``'s publications."""
        return f"{self.prefix}:channel:{channel}"

    def channel_of(self, name: object) -> str | None:
        """The channel whose Pub/Sub channel is ``name``, or ``None`` if it is none of ours."""
        if not isinstance(name, bytes) or not name.startswith(self.channel_prefix):
            return None
        try:
            return name[len(self.channel_prefix) :].decode()
        except UnicodeDecodeError:
            return None

    def meta_key(self, channel: str) -> str:
        """The hash numbering ``channel``'s publications (``epoch``, ``seq``)."""
        return f"{self.prefix}:{{ch:{channel}}}:meta"

    def history_key(self, channel: str) -> str:
        """The stream keeping ``channel``'s history: entry ``N-1`` is publication N."""
        return f"{self.prefix}:{{ch:{channel}}}:history"

    def result_key(self, channel: str, idempotency_key: str) -> str:
        """Where ``channel`` keeps the first result of a publish with that key.

        The key's digest, of fixed length and in hex: a key chosen as ``x}:meta``
        could otherwise name another channel's numbering."""
        raw = idempotency_key.encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
        return f"{self.prefix}:{{ch:{channel}}}:result:{digest}"

    def presence_keys(self, channel: str) -> list[str]:
        """The hashes and sorted set holding ``channel``'s presence."""
        base = f"{self.prefix}:{{ch:{channel}}}:presence"
        return [base, f"{base}-expire", f"{base}-users"]

    def control_key(self, ident: bytes) -> str:
        """Where the control script leaves the proof of control message ``ident``."""
        return f"{self.control}:{ident.decode()}"

    def channels_key(self, node: str) -> str:
        """The hash of ``node``'s subscribers per channel."""
        return f"{self.prefix}:{{node:{node}}}:channels"

    def info_key(self, node: str) -> str:
        """The hash describing ``node`` for the cluster's view."""
        return f"{self.prefix}:{{node:{node}}}:info"


class ClusterNames(Names):
    """The names under Redis Cluster (``redis+cluster://``): every Pub/Sub channel is a
    shard channel (SPUBLISH/SSUBSCRIBE) in the slot of the keys it goes with.

    - ``realtime:{ch:NAME}:channel``: a channel's shard channel, in the slot of its
      numbering, history and presence, so each script publishes in its own slot.
    - ``realtime:{control}``: the control shard channel, and ``realtime:{control}:ID``
      the proofs, all in one slot.
    """

    publish_command = "SPUBLISH"
    announce = "s"

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.control = f"{prefix}:{{control}}"
        self.control_bytes = self.control.encode()
        self.channel_prefix = f"{prefix}:{{ch:".encode()
        self.channel_suffix = b"}:channel"

    def key(self, channel: str) -> str:
        return f"{self.prefix}:{{ch:{channel}}}:channel"

    def channel_of(self, name: object) -> str | None:
        if (
            not isinstance(name, bytes)
            or not name.startswith(self.channel_prefix)
            or not name.endswith(self.channel_suffix)
            or len(name) < len(self.channel_prefix) + len(self.channel_suffix)
        ):
            return None
        try:
            return name[len(self.channel_prefix) : -len(self.channel_suffix)].decode()
        except UnicodeDecodeError:
            return None

    def beacon(self, index: int) -> str:
        """A shard channel nobody publishes on, the ``index``-th candidate: a shard's
        subscription holds one in its slots, so it is a subscription even with no
        channel of its own (its PINGs are answered in Pub/Sub form)."""
        return f"{self.prefix}:{{beacon:{index}}}"
