"""Redis Cluster's slots, sans-IO: the broker URL, who serves which slot, and shards.

``redis+cluster://[user:password@]host:port[,host:port...][?option=value...]``
(``rediss+cluster://`` for TLS) names some of the cluster's nodes, any of them: the
rest, and which primary serves which slot, come from ``CLUSTER SLOTS``. A *shard* here
is the set of slots one primary served when the broker started; a shard keeps its
slots when its replica takes over (only its address changes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

SLOTS = REDIS_CLUSTER_HASH_SLOTS
SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


@dataclass(frozen=True)
class ClusterURL:
    """A ``redis+cluster://`` URL taken apart."""

    scheme: str  # redis or rediss, for one node's URL
    nodes: tuple[tuple[str, int], ...]
    userinfo: str  # "user:password@" as given (still quoted), or ""
    query: str  # "?..." as given, or ""

    def node_url(self, host: str, port: int) -> str:
        """A ``redis://`` (or ``rediss://``) URL for one node, with the same credentials
        and options (a cluster has only database 0)."""
        where = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{self.userinfo}{where}:{port}/0{self.query}"

    @property
    def username(self) -> str | None:
        user = self.userinfo[:-1].partition(":")[0]
        return unquote(user) if user else None

    @property
    def password(self) -> str | None:
        _, colon, password = self.userinfo[:-1].partition(":")
        return unquote(password) if colon else None


def parse_url(url: str) -> ClusterURL:
    """The nodes and options of a cluster URL; ``ValueError`` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ValueError(f"not a redis+cluster:// or rediss+cluster:// URL: {url!r}")
    where, _, query = rest.partition("?")
    userinfo, at, hosts = where.rpartition("@")
    hosts, slash, path = hosts.partition("/")
    if slash and path not in ("", "0"):
        raise ValueError("a Redis Cluster has only database 0")
    nodes = []
    for part in hosts.split(","):
        if not part:
            continue
        split = urlsplit(f"//{part}")
        if split.hostname is None or split.port is None:
            raise ValueError(f"a cluster node needs host:port, got {part!r}")
        nodes.append((split.hostname, split.port))
    if not nodes:
        raise ValueError(f"no cluster node in {url!r}")
    return ClusterURL(
        SCHEMES[scheme], tuple(nodes), f"{userinfo}@" if at else "", f"?{query}" if query else ""
    )


def slot_of(name: str) -> int:
    """The slot of a key or shard channel (its hash tag's, if it has one)."""
    return int(key_slot(name.encode("utf-8", "surrogatepass")))


@dataclass(frozen=True)
class SlotRange:
    first: int
    last: int
    host: str
    port: int


def parse_slots(reply: object) -> list[SlotRange]:
    """``CLUSTER SLOTS``' reply: each range of slots with its primary's address."""
    ranges = []
    if not isinstance(reply, list):
        raise ValueError(f"unexpected CLUSTER SLOTS reply: {reply!r}")
    for entry in reply:
        first, last, primary = entry[0], entry[1], entry[2]
        host = primary[0].decode() if isinstance(primary[0], bytes) else str(primary[0])
        ranges.append(SlotRange(int(first), int(last), host, int(primary[1])))
    return sorted(ranges, key=lambda r: r.first)


def shards(ranges: Iterable[SlotRange]) -> list[frozenset[int]]:
    """The slots each primary serves, a set per primary, in slot order. Every slot of
    the cluster must be served: a broker on a partly served cluster would have
    channels nowhere."""
    by_node: dict[tuple[str, int], set[int]] = {}
    for r in ranges:
        by_node.setdefault((r.host, r.port), set()).update(range(r.first, r.last + 1))
    served = set().union(*by_node.values()) if by_node else set()
    if len(served) != SLOTS:
        raise ValueError(f"the cluster serves {len(served)} of its {SLOTS} slots")
    return sorted((frozenset(slots) for slots in by_node.values()), key=min)


def owner(ranges: Sequence[SlotRange], slot: int) -> tuple[str, int] | None:
    """The primary serving ``slot``, if any does."""
    for r in ranges:
        if r.first <= slot <= r.last:
            return (r.host, r.port)
    return None


def first_in(slots: frozenset[int], candidates: Iterable[str], limit: int = 100_000) -> str | None:
    """The first of ``candidates`` (names) whose slot is in ``slots``, within ``limit``."""
    for index, name in enumerate(candidates):
        if index >= limit:
            return None
        if slot_of(name) in slots:
            return name
    return None
