"""Channel presence: who is in a channel, and the joins and leaves that change it.

A channel tracks presence when its namespace says so (``presence`` or ``join_leave``,
Centrifugo's options): the broker asks the :data:`PresencePolicy` it was given. The
state lives in the broker's store, never assembled from each process's memory:
``memory://`` keeps it in the process (:class:`MemoryPresence`), ``redis://`` in
Redis, changed by Lua scripts, so two processes never disagree about who is there
and each join and leave is announced exactly once, by the script that made it.

Each process keeps the members it added (its own clients) and renews them every
``presence_update_interval``; a member not renewed within ``presence_ttl`` (its
process was killed) is pruned by whichever process renews or reads the channel
next, and its leave announced then.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

# Re-exported: it was defined here first.
from .errors import PresenceUnavailable as PresenceUnavailable

#: Centrifugo's defaults: a member not renewed for ``presence_ttl`` seconds is gone;
#: each process renews its own every ``presence_update_interval`` seconds.
PRESENCE_TTL = 60.0
PRESENCE_UPDATE_INTERVAL = 27.0
#: The most members one presence read returns (a bound on what one call can cost).
MAX_PRESENCE_MEMBERS = 10_000


@dataclass(frozen=True, slots=True)
class Member:
    """One client in a channel: who it is, and what others are shown of it.

    ``info`` is JSON text the protocol chose (a Centrifuge ``ClientInfo``), or None.
    """

    client: str
    user: str
    info: str | None = None


@dataclass(frozen=True, slots=True)
class PresenceEvent:
    """A client joined (``joined``) or left a channel.

    ``user_changed`` says that it was the user's first client there to join, or its
    last to leave (user-level presence, as Pusher's ``member_added``/``member_removed``).
    """

    joined: bool
    member: Member
    user_changed: bool = False


@dataclass(frozen=True, slots=True)
class PresenceStats:
    """Clients in the channel, and distinct users among them (anonymous counts as one)."""

    clients: int
    users: int


@dataclass(frozen=True, slots=True)
class PresenceMode:
    """How a channel tracks presence: ``listed`` answers presence reads, ``announced``
    pushes joins and leaves."""

    listed: bool
    announced: bool


#: A channel's :class:`PresenceMode`, or None where it tracks no presence.
PresencePolicy = Callable[[str], PresenceMode | None]
#: Told of a join or leave on a channel this process listens to, on the loop.
PresenceHandler = Callable[[str, PresenceEvent], object]


class PresenceManager(ABC):
    """Who is in each channel: the presence interface, apart from the broker's.

    A broker offers presence by holding one (:attr:`.base.Broker.presence_manager`;
    ``None`` where it offers none), and callers go through the broker's presence
    methods, which check the channel's :class:`PresenceMode` first and bound the
    member's info. A manager changes and reads the store only: where it is told to
    ``announce``, it reports each join and leave it made once, to the handler it was
    given (the broker's :meth:`.base.Broker.report_presence`).
    """

    async def start(self) -> None:  # noqa: B027 (optional: not abstract)
        """Start what runs in the background (renewals), on the serving loop."""

    async def close(self) -> None:  # noqa: B027 (optional: not abstract)
        """Stop; this process's members leave (or expire) with it."""

    def local_members(self) -> int:
        """Members this process put in presence and keeps there (its own clients, a
        client counted once per channel): ``realtime_presence_members``."""
        return 0

    @abstractmethod
    async def join(self, channel: str, member: Member, announce: bool) -> None:
        """Add or renew ``member``; never raises for the store being out of reach."""

    @abstractmethod
    async def leave(self, channel: str, client: str, announce: bool) -> None:
        """Remove ``client`` if it is there; never raises for the store being out of reach."""

    @abstractmethod
    async def members(self, channel: str) -> dict[str, Member]:
        """Every client in ``channel`` by client id (at most :data:`MAX_PRESENCE_MEMBERS`)."""

    @abstractmethod
    async def stats(self, channel: str) -> PresenceStats:
        """How many clients, and distinct users, are in ``channel``."""


class MemoryPresence:
    """Every channel's members in this process (``memory://``): nothing expires, since
    the process that would have to renew them is the one holding them."""

    def __init__(self) -> None:
        self._members: dict[str, dict[str, Member]] = {}
        #: Clients per user, per channel (for the stats and user-level events).
        self._users: dict[str, dict[str, int]] = {}

    def add(self, channel: str, member: Member) -> PresenceEvent | None:
        """The join, or None if the client was there already (its info is updated)."""
        members = self._members.setdefault(channel, {})
        known = members.get(member.client)
        members[member.client] = member
        if known is not None:
            if known.user == member.user:
                return None
            self._count(channel, known.user, -1)
        first = self._count(channel, member.user, 1) == 1
        return PresenceEvent(True, member, first)

    def remove(self, channel: str, client: str) -> PresenceEvent | None:
        """The leave, or None if the client was not there."""
        members = self._members.get(channel)
        if members is None or (member := members.pop(client, None)) is None:
            return None
        if not members:
            del self._members[channel]
        last = self._count(channel, member.user, -1) == 0
        return PresenceEvent(False, member, last)

    def _count(self, channel: str, user: str, step: int) -> int:
        users = self._users.setdefault(channel, {})
        left = users.get(user, 0) + step
        if left > 0:
            users[user] = left
        else:
            users.pop(user, None)
            if not users:
                del self._users[channel]
        return left

    def members(self, channel: str) -> dict[str, Member]:
        return dict(islice(self._members.get(channel, {}).items(), MAX_PRESENCE_MEMBERS))

    def stats(self, channel: str) -> PresenceStats:
        return PresenceStats(len(self._members.get(channel, ())), len(self._users.get(channel, ())))

    def size(self) -> int:
        """Members of every channel (all this process's: nobody else adds any)."""
        return sum(len(members) for members in self._members.values())


class MemoryPresenceManager(PresenceManager):
    """:class:`MemoryPresence` as a :class:`PresenceManager` (``memory://``)."""

    def __init__(self, report: PresenceHandler, decided: PresenceHandler | None = None) -> None:
        self.store = MemoryPresence()
        self._report = report
        #: Told of each user-level join and leave (the only process: it decides them all).
        self._decided = decided

    def _made(self, channel: str, event: PresenceEvent | None, announce: bool) -> None:
        if event is None:
            return
        if announce:
            self._report(channel, event)
        if event.user_changed and self._decided is not None:
            self._decided(channel, event)

    def local_members(self) -> int:
        return self.store.size()

    async def join(self, channel: str, member: Member, announce: bool) -> None:
        self._made(channel, self.store.add(channel, member), announce)

    async def leave(self, channel: str, client: str, announce: bool) -> None:
        self._made(channel, self.store.remove(channel, client), announce)

    async def members(self, channel: str) -> dict[str, Member]:
        return self.store.members(channel)

    async def stats(self, channel: str) -> PresenceStats:
        return self.store.stats(channel)
