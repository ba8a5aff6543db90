"""Presence in Redis: the :class:`..presence.PresenceManager` of the Redis broker.

A channel's members live in three keys (see :mod:`.names`): a hash of members (client
id to the user's length, ``:``, the user and the member's info), a sorted set of when
each expires (Redis's clock, milliseconds) and a hash of clients per user. They are
changed only by the presence scripts (``presence_*.lua``), which prune expired
members first and announce joins and leaves on the channel's Pub/Sub channel
themselves (``realtime/2p`` messages): one script makes each change, so each is
announced once. All three expire twice ``presence_ttl`` after the last renewal.

Each process renews the members it added every ``presence_update_interval``. What the
listener hears announced is believed once the store agrees (see :mod:`..presence_check`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Coroutine, Iterable, Mapping
from typing import Any

from redis.asyncio import Redis

from .. import presence as presence_limits
from ..errors import BrokerUnavailable
from ..presence import (
    Member,
    PresenceEvent,
    PresenceHandler,
    PresenceManager,
    PresenceMode,
    PresenceStats,
)
from ..presence_check import PresenceCheck
from ..tracking import is_tracked
from . import scripts
from .connection import UNREACHABLE
from .envelope import PRESENCE_MAGIC, decode_presence, is_member, member_of, member_value
from .names import Names
from .tally import Tally

#: Members renewed, or removed, by one script call...
PRESENCE_CHUNK = 500
#: ...and such calls in flight at once (renewals, and leaving on close).
PRESENCE_CALLS_AT_ONCE = 16


class RedisPresence(PresenceManager):
    """Who is in each channel, kept in Redis; renews this process's own members."""

    def __init__(
        self,
        names: Names,
        *,
        describe: str,
        timeout: float,
        ttl: float,
        update_interval: float,
        mode: Callable[[str], PresenceMode | None],
        report: PresenceHandler,
        listening: Callable[[str], bool],
        tally: Tally,
        decided: PresenceHandler | None = None,
    ) -> None:
        self.names = names
        self.describe = describe
        self.timeout = timeout
        self.ttl = ttl
        self.update_interval = update_interval
        self._mode = mode
        self._report = report
        self._listening = listening
        self.tally = tally
        #: Told of each user-level join and leave a script called from here made.
        self._decided = decided
        self.client: Redis | None = None
        self._scripts: dict[str, Any] = {}
        #: This process's members of each channel tracking presence: it renews them.
        self.present: dict[str, dict[str, Member]] = {}
        #: Joins and leaves heard on the channels, told once the store agrees.
        self.check = PresenceCheck(
            self._values,
            is_member,
            self._confirmed,
            lambda kind, why: tally.add(kind, f"ignored join or leave message(s) {why}"),
        )

    def local_members(self) -> int:
        return sum(len(members) for members in self.present.values())

    def bind(self, client: Redis) -> None:
        """Use ``client`` for the scripts (the broker's publishing connection pool)."""
        self.client = client
        self._scripts = {
            name: client.register_script(scripts.script(f"presence_{name}"))
            for name in scripts.PRESENCE
        }

    def heard(self, channel: str, event: PresenceEvent) -> None:
        """A join or leave arrived on ``channel``'s Pub/Sub channel: checked, then told."""
        self.check.add((channel, event))

    async def _call(self, name: str, channel: str, announce: bool, args: list[Any]) -> Any:
        script = self._scripts.get(name)
        if self.client is None or script is None:
            raise BrokerUnavailable("the broker is not running")
        head = [self.names.announce if announce else 0, self.names.key(channel), PRESENCE_MAGIC]
        try:
            async with asyncio.timeout(self.timeout):
                reply = await script(keys=self.names.presence_keys(channel), args=[*head, *args])
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        result, told = reply
        if told and self._decided is not None and is_tracked(channel):
            # The user-level changes this call made: no other call made them.
            for raw in told:
                event = decode_presence(bytes(raw))
                if isinstance(event, PresenceEvent):
                    self._decided(channel, event)
        return result

    def _ttl_ms(self) -> int:
        return max(1, round(self.ttl * 1000))

    async def join(self, channel: str, member: Member, announce: bool) -> None:
        self.present.setdefault(channel, {})[member.client] = member
        await self.add_members(channel, [member], announce)

    async def add_members(self, channel: str, members: list[Member], announce: bool) -> None:
        args: list[Any] = [self._ttl_ms()]
        for member in members:
            args += [member.client, member_value(member)]
        try:
            await self._call("join", channel, announce, args)
        except BrokerUnavailable as exc:
            # Renewed (so added) once Redis is back.
            self.tally.add("presence", f"adding a client to presence failed ({exc})")
            return
        # A leave sent meanwhile took another connection and may have run first: then
        # the client is in Redis with nobody to renew it. Take it out again (a no-op
        # if the leave came second).
        present = self.present.get(channel, {})
        gone = [member.client for member in members if member.client not in present]
        if gone:
            with contextlib.suppress(BrokerUnavailable):
                await self._call("leave", channel, announce, gone)

    async def leave(self, channel: str, client: str, announce: bool) -> None:
        members = self.present.get(channel)
        if members is None or members.pop(client, None) is None:
            return  # not added here (or already removed)
        if not members:
            del self.present[channel]
        try:
            await self._call("leave", channel, announce, [client])
        except BrokerUnavailable as exc:
            # It expires within presence_ttl instead, and its leave is told then.
            self.tally.add("presence", f"removing a client from presence failed ({exc})")

    def _announces(self, channel: str) -> bool:
        mode = self._mode(channel)
        return mode is not None and mode.announced

    async def members(self, channel: str) -> dict[str, Member]:
        bound = presence_limits.MAX_PRESENCE_MEMBERS
        flat = await self._call("read", channel, self._announces(channel), ["members", bound])
        members: dict[str, Member] = {}
        for client, value in zip(flat[::2], flat[1::2], strict=True):
            member = member_of(client, value)
            if member is not None:
                members[member.client] = member
                if len(members) >= bound:
                    break  # HSCAN's COUNT is only a hint
        return members

    async def stats(self, channel: str) -> PresenceStats:
        announce = self._announces(channel)
        clients, users = await self._call("read", channel, announce, ["stats", 0])
        return PresenceStats(int(clients), int(users))

    async def renew_all(self) -> None:
        """Renew this process's members every ``update_interval`` (pruning, and
        announcing the leaves of, members no process renewed in time), on a fixed
        schedule, PRESENCE_CALLS_AT_ONCE calls at a time. Runs until cancelled."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.update_interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            await _bounded(
                (self.renew_chunk(channel, clients) for channel, clients in _chunks(self.present)),
                PRESENCE_CALLS_AT_ONCE,
            )

    async def renew_chunk(self, channel: str, clients: list[str]) -> None:
        mode = self._mode(channel)
        if mode is None:
            return
        try:
            missing = await self._call("renew", channel, mode.announced, [self._ttl_ms(), *clients])
            # Not in Redis (it lost them, or they were pruned while this process was
            # stalled): added back, with a join, if still here.
            present = self.present.get(channel, {})
            again = [present[c] for c in map(_text, missing) if c in present]
            if again:
                await self.add_members(channel, again, mode.announced)
        except BrokerUnavailable as exc:
            self.tally.add("presence", f"renewing presence failed ({exc})")
        except Exception:
            self.tally.add("presence", "renewing presence failed", exc_info=True)

    async def close(self) -> None:
        await self.stop_checking()
        await self.leave_all()

    async def stop_checking(self) -> None:
        """Tell no more joins or leaves (closing)."""
        await self.check.close()

    async def leave_all(self) -> None:
        """This process's members leave now, not a TTL later (within a few broker
        timeouts: past them, they expire with presence_ttl instead)."""
        present, self.present = self.present, {}
        if self.client is None:
            return
        calls = [
            self._call("leave", channel, self._announces(channel), clients)
            for channel, clients in _chunks(present)
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * self.timeout):
                await _bounded(calls, PRESENCE_CALLS_AT_ONCE)

    async def _values(self, asks: Collection[tuple[str, str]]) -> list[Any]:
        """What Redis's presence hashes hold for each (channel, client id) now."""
        if self.client is None:
            raise BrokerUnavailable("the broker is not running")
        async with asyncio.timeout(self.timeout):
            pipe = self.client.pipeline(transaction=False)
            for channel, client in asks:
                pipe.hget(self.names.presence_keys(channel)[0], client)
            return list(await pipe.execute())

    def _confirmed(self, channel: str, event: PresenceEvent) -> None:
        if self._listening(channel):  # not if unsubscribed here meanwhile
            self._report(channel, event)


def _chunks(present: Mapping[str, Mapping[str, Member]]) -> list[tuple[str, list[str]]]:
    """Each channel's clients, PRESENCE_CHUNK at a time: a Lua call each."""
    chunks = []
    for channel, members in present.items():
        clients = list(members)
        chunks += [
            (channel, clients[start : start + PRESENCE_CHUNK])
            for start in range(0, len(clients), PRESENCE_CHUNK)
        ]
    return chunks


async def _bounded(calls: Iterable[Coroutine[Any, Any, Any]], limit: int) -> None:
    """Await ``calls``, at most ``limit`` at a time; failures are the callers' to log."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Coroutine[Any, Any, Any]) -> None:
        try:
            async with gate:
                with contextlib.suppress(BrokerUnavailable):
                    await call
        finally:
            call.close()  # cancelled before its turn: never started, and no warning

    await asyncio.gather(*(one(call) for call in calls))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
