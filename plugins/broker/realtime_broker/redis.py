"""Redis pub/sub as the bus between processes and machines (redis-py's asyncio client).

A process SUBSCRIBEs to a channel's Redis channel while it has a local subscriber for
it, and UNSUBSCRIBEs when the last one leaves (reference-counted, never a pattern), so
it receives only what its own clients want. It delivers what it receives to them, the
publishing process included, so all clients see Redis's one order.

Pub/sub forgets what a disconnected subscriber missed, so each publication carries a
sequence number, stamped by Redis itself (a Lua script: HINCRBY then PUBLISH, atomic)
under an epoch that changes when Redis loses the channel's numbering; each channel is
numbered on its own. A process that finds numbers it never received tells its
subscribers which channel it was (the WebSocket pool then closes that channel's
clients with 1012, so they reconnect knowing they missed something): nothing is lost
silently. A process that stops listening to a channel forgets where it stood in it: a
later subscription starts afresh, and what was published meanwhile is nobody's loss.

Anyone allowed to PUBLISH on the channel can send something that looks like an
envelope, so an envelope is believed without a question only when it carries the next
number in the epoch this process is in (the normal path: no extra round trip). Any
other number (the first after subscribing, a gap, a jump, another epoch, an old
number) is checked against Redis's own counter, the source of truth, before it can
cost anyone a broadcast or a 1012: see :meth:`RedisBroker._settle`. A message that
is malformed, too large, or not numbered by Redis is counted, logged without flooding
the log, and dropped; one message never stops the subscription.

Each process also reports its client count to a hash every second while it is
subscribed, which is how ``broadcast()`` answers "how many clients" cluster-wide.

Names (``NAME`` is the channel's name as given, any characters; ``realtime`` is
``--broker-prefix``):

- ``realtime:channel:NAME``: the Pub/Sub channel (the name it had with one channel).
- ``realtime:{ch:NAME}:meta``: a hash, the channel's numbering (``epoch``, ``seq``).
  The ``{ch:NAME}`` hash tag puts everything of one channel in one Redis Cluster slot
  A publication creates it (a read never does: a channel without one is at offset 0
  in the empty epoch, which the first publication's epoch follows); it expires
  ``META_TTL`` (30 days) after its first publication, renewed every 64th.
- ``realtime:{ch:NAME}:history``: a stream, where the channel's namespace keeps
  history: entry ``N-1`` is publication N, at most ``history_size`` of them
  (``MAXLEN``), the whole stream expiring ``history_ttl`` after the last one. The
  publish script appends to it, so history and live delivery share one numbering;
  a new epoch deletes what an old one left.
- ``realtime:{ch:NAME}:presence``, ``...:presence-expire`` and ``...:presence-users``,
  where the channel tracks presence: a hash of its members (client id to the user's
  length, ``:``, the user and the member's info), a sorted set of when each expires
  (Redis's clock, milliseconds) and a hash of clients per user. Changed only by the
  presence scripts, which prune expired members first and announce joins and leaves
  on the channel's Pub/Sub channel themselves (``realtime/2p `` messages): one
  script makes each change, so each is announced once. All three expire twice
  ``presence_ttl`` after the last renewal.
- ``realtime:nodes``: a hash, each process's client count.
- ``realtime:{node:NODE}:channels``: a hash, the subscribers per channel of one
  process (``NODE`` as in ``realtime:nodes``), and ``realtime:{node:NODE}:info``,
  its ``uid``, ``name``, ``started``, ``channels`` and ``subs``: for the server API's
  cluster-wide ``channels`` and ``info``. Both expire ``NODE_KEYS_TTL`` after the last
  write; a process deletes them when it closes.

Neither a name nor the fixed text around it can make two channels' names meet. The
publish script touches the channel's hash and ``realtime:nodes``: under Redis Cluster
those are two slots, so the count would have to move out of the script (classic
PUBLISH reaches every node of a cluster; sharded pub/sub would rename the channel to
carry its hash tag).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Collection, Coroutine, Iterable, Mapping
from itertools import islice
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .base import (
    MAX_INFO_SIZE,
    Broker,
    BrokerUnavailable,
    HistoryResult,
    Publication,
    StreamPosition,
    UnrecoverablePosition,
    as_publication,
)
from .history import MAX_HISTORY_LIMIT
from .presence import MAX_PRESENCE_MEMBERS, Member, PresenceEvent, PresenceStats
from .presence_check import PresenceCheck
from .sequence import (
    DELIVER,
    NEW_EPOCH,
    Mark,
    Place,
    Queue,
    Sequence,
    Tally,
    Truth,
    Verdict,
    digest,
)

log = logging.getLogger("realtime.broker")

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
ENVELOPE_OVERHEAD = len(MAGIC) + EPOCH_MAX + 1 + SEQ_DIGITS + 1 + 1 + INFO_DIGITS + 1
#: The broadcast plugin's default ``max_message_size``, for when it is not loaded.
DEFAULT_MAX_MESSAGE_SIZE = 64 * 1024
#: A process that has not reported for this long is left out of client counts.
NODE_TTL = 5.0
HEARTBEAT = 1.0
#: Reconnect backoff bounds, seconds (full jitter in between). A process holds one
#: subscription and one publishing connection, not thousands: there is no herd to
#: protect Redis from, so the cap is what bounds how late Redis's return is noticed.
BACKOFF_MIN, BACKOFF_MAX = 0.05, 1.0
#: How many times close() cancels a task that goes on anyway (see close).
CLOSE_ROUNDS = 5
#: How often an idle subscription is pinged (and must answer), so a dead one is noticed.
IDLE_PING = 5.0
#: Messages already received that one question to Redis covers at most.
BATCH = 1024
#: What a command raises when Redis cannot be reached (or answer in time).
UNREACHABLE = (RedisError, OSError, TimeoutError)
#: Most messages held while waiting for a barrier's PONG (the rest are dropped, counted).
BARRIER_LIMIT = 16 * BATCH

#: How long a channel's numbering lives, seconds, renewed by every 64th publication
#: (the first included). Channels come and go (a room, a conversation): their hashes
#: must not pile up for ever. A process still listening when it expires follows the
#: next epoch without a loss.
META_TTL = 30 * 24 * 3600

#: Seconds between two checks of the positions of channels kept here that keep history
#: against Redis (``--position-check-interval``, Centrifugo's default): a numbering Redis
#: lost with nothing published since is found then, and its subscribers told.
POSITION_CHECK_INTERVAL = 40.0

#: Connections to Redis a process opens at most for its commands (the subscription
#: has its own): more commands in flight wait for one.
POOL_SIZE = 64

#: How long a process's channel map and info outlive its last write, seconds. Only
#: GC: readers already skip processes whose client count is older than NODE_TTL.
NODE_KEYS_TTL = 10
#: An unchanged map is only renewed (EXPIRE), once this many seconds passed.
NODE_KEYS_RENEW = NODE_KEYS_TTL / 2
#: Most channel map fields written per heartbeat: a larger change (the first write of
#: a huge map) goes out over several heartbeats, so Redis is never held for long.
MAP_FIELDS_PER_BEAT = 10_000
#: Fields per HSET or HDEL inside the map script (Lua's unpack has a stack limit).
MAP_CHUNK = 1000

#: KEYS: a process's channel map, its info. ARGV: the TTL, "1" to start the map afresh,
#: "1" if the map must already exist (else nothing is written and 0 returned: Redis
#: lost it), the number of info items, of items to set, then the info's field/value
#: pairs, the map's, and the channels to remove. One EVALSHA: atomic, whatever its size.
CHANNELS_SCRIPT = f"""
local ttl = ARGV[1]
if ARGV[2] == '1' then
  redis.call('DEL', KEYS[1])
elseif ARGV[3] == '1' and redis.call('EXPIRE', KEYS[1], ttl) == 0 then
  return 0
end
local first = 6
local last = first + tonumber(ARGV[4]) - 1
redis.call('HSET', KEYS[2], unpack(ARGV, first, last))
first = last + 1
last = first + tonumber(ARGV[5]) - 1
for i = first, last, {2 * MAP_CHUNK} do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + {2 * MAP_CHUNK - 1}, last)))
end
for i = last + 1, #ARGV, {MAP_CHUNK} do
  redis.call('HDEL', KEYS[1], unpack(ARGV, i, math.min(i + {MAP_CHUNK - 1}, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""

#: KEYS: the channel's numbering hash, nodes. ARGV: kind+body, a new epoch if the
#: channel has none, MAGIC, the Pub/Sub channel (not a key), "1" if the publishing
#: process listens to the channel, META_TTL. Returns {receivers, the nodes hash
#: flattened}: one round trip per publication.
PUBLISH_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[2]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
  -- A history left from a numbering Redis lost belongs to another epoch.
  redis.call('DEL', KEYS[3])
end
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
local receivers = redis.call('PUBLISH', ARGV[4], ARGV[3] .. epoch .. ' ' .. seq .. ' ' .. ARGV[1])
if receivers == 0 and ARGV[5] == '1' then
  -- The publisher listens, yet nobody heard it: its own subscription is down, and it
  -- is told the publication failed, so it must leave no gap (nor a new key).
  if seq == 1 then
    redis.call('DEL', KEYS[1])
  else
    redis.call('HINCRBY', KEYS[1], 'seq', -1)
  end
else
  if ARGV[7] ~= '0' then
    -- The channel keeps history: the same number is the entry's id, so history and
    -- live delivery share one order and one numbering.
    redis.call('XADD', KEYS[3], 'MAXLEN', ARGV[7], seq .. '-1', 'p', ARGV[1])
    redis.call('PEXPIRE', KEYS[3], ARGV[8])
  end
  if seq % 64 == 1 then
    -- Heard, or by nobody listening right now: numbered either way, so that a process
    -- whose subscription was down finds the gap. Kept alive now and then (every time
    -- would cost Redis a sixth more per publication).
    redis.call('EXPIRE', KEYS[1], ARGV[6])
  end
end
return {receivers, redis.call('HGETALL', KEYS[2])}
"""

#: KEYS: the channel's numbering hash, its history stream. ARGV: the first id (XRANGE
#: syntax), the last, COUNT (0: none), "1" to read newest first. Returns {epoch, last
#: number, entries}: the position and the entries read together, atomically. Writes
#: nothing: a channel never published in is offset 0 in the empty epoch.
HISTORY_SCRIPT = """
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  return {'', 0, {}}
end
local top = redis.call('HGET', KEYS[1], 'seq') or '0'
local entries = {}
if ARGV[3] ~= '0' then
  if ARGV[4] == '1' then
    entries = redis.call('XREVRANGE', KEYS[2], ARGV[2], ARGV[1], 'COUNT', ARGV[3])
  else
    entries = redis.call('XRANGE', KEYS[2], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
  end
end
return {epoch, top, entries}
"""


#: What joins and leaves start with on a channel's Pub/Sub channel. Then ``j`` (a join),
#: ``l`` (a leave), in capitals when it is the user's first client to join or last
#: to leave; the client id's length in bytes, ``:``, the client id; then the member as
#: stored (the user's length, ``:``, the user, the info).
PRESENCE_MAGIC = b"realtime/2p "
#: Members renewed, or removed, by one script call...
PRESENCE_CHUNK = 500
#: ...and such calls in flight at once (renewals, and leaving on close).
PRESENCE_CALLS_AT_ONCE = 16

#: Shared by the presence scripts. KEYS: members hash, expiry sorted set, users hash.
#: ARGV[1..3]: "1" to announce joins and leaves, the Pub/Sub channel, PRESENCE_MAGIC.
PRESENCE_LUA = """
local announce, pubsub, magic = ARGV[1] == '1', ARGV[2], ARGV[3]
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function user_of(value)
  local n, at = string.match(value, '^(%d+):()')
  return string.sub(value, at, at + tonumber(n) - 1)
end
local function tell(kind, client, value)
  if announce then
    redis.call('PUBLISH', pubsub, magic .. kind .. #client .. ':' .. client .. value)
  end
end
local function remove(client)
  local value = redis.call('HGET', KEYS[1], client)
  redis.call('ZREM', KEYS[2], client)
  if not value then
    return
  end
  redis.call('HDEL', KEYS[1], client)
  local user = user_of(value)
  local left = redis.call('HINCRBY', KEYS[3], user, -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[3], user)
    tell('L', client, value)
  else
    tell('l', client, value)
  end
end
local function keep(ttl)
  -- Twice the TTL after the last renewal: gone once no process is left to prune it.
  for i = 1, 3 do
    redis.call('PEXPIRE', KEYS[i], 2 * ttl)
  end
end
local function prune(now)
  -- Members whose process stopped renewing them: gone, each leave told once.
  local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, 1000)
  for _, client in ipairs(expired) do
    remove(client)
  end
end
"""

#: ARGV[4]: presence_ttl in ms; then client id and member pairs. Adds or renews each,
#: announcing the new ones. Returns how many were new.
PRESENCE_JOIN_SCRIPT = (
    PRESENCE_LUA
    + """
local ttl = tonumber(ARGV[4])
local now = now_ms()
prune(now)
local added = 0
for i = 5, #ARGV, 2 do
  local client, value = ARGV[i], ARGV[i + 1]
  local known = redis.call('HGET', KEYS[1], client)
  redis.call('ZADD', KEYS[2], now + ttl, client)
  if known ~= value then
    redis.call('HSET', KEYS[1], client, value)
    if not known then
      added = added + 1
      if redis.call('HINCRBY', KEYS[3], user_of(value), 1) == 1 then
        tell('J', client, value)
      else
        tell('j', client, value)
      end
    end
  end
end
keep(ttl)
return added
"""
)

#: ARGV[4]: presence_ttl in ms; then client ids. Renews those still there (never adds
#: one: a client that left meanwhile must not come back); returns the others.
PRESENCE_RENEW_SCRIPT = (
    PRESENCE_LUA
    + """
local ttl = tonumber(ARGV[4])
local now = now_ms()
prune(now)
local missing = {}
for i = 5, #ARGV do
  if redis.call('ZSCORE', KEYS[2], ARGV[i]) then
    redis.call('ZADD', KEYS[2], now + ttl, ARGV[i])
  else
    table.insert(missing, ARGV[i])
  end
end
keep(ttl)
return missing
"""
)

#: ARGV[4...]: client ids to remove (each leave announced once).
PRESENCE_LEAVE_SCRIPT = (
    PRESENCE_LUA
    + """
prune(now_ms())
for i = 4, #ARGV do
  remove(ARGV[i])
end
return 0
"""
)

#: ARGV[4]: "stats" for {clients, users}, else the members (flattened, at most
#: ARGV[5] of them), after pruning.
PRESENCE_READ_SCRIPT = (
    PRESENCE_LUA
    + """
prune(now_ms())
if ARGV[4] == 'stats' then
  return {redis.call('HLEN', KEYS[1]), redis.call('HLEN', KEYS[3])}
end
if redis.call('HLEN', KEYS[1]) <= tonumber(ARGV[5]) then
  return redis.call('HGETALL', KEYS[1])
end
local found = redis.call('HSCAN', KEYS[1], 0, 'COUNT', ARGV[5])
return found[2]
"""
)


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
    if publication.info is None:
        return kind + body
    info = publication.info.encode()
    return b"%s%d %s%s" % (kind.upper(), len(info), info, body)


class Drop(enum.Enum):
    """Why a payload on a channel is not a publication (the value goes in the log)."""

    FOREIGN = "that realtime did not publish"
    OVERSIZED = "over the size limit"


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
    kind = raw[space + 1 : space + 2]
    start = space + 2
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
        return Publication(body, False, info, epoch.decode(), int(seq))
    if kind != TEXT and kind != JSON:
        return Drop.FOREIGN
    if kind == JSON:
        # Embedded as a value in clients' frames: it must be JSON, whoever sent it.
        json_text = _json_text(body)
        if json_text is None:
            return Drop.FOREIGN
        return Publication(json_text, True, info, epoch.decode(), int(seq))
    try:
        text = body.decode()
    except UnicodeDecodeError:
        return Drop.FOREIGN
    return Publication(text, False, info, epoch.decode(), int(seq))


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


class RedisBroker(Broker):
    """``redis://[user:password@]host:port/db`` (or ``rediss://``).

    Channels that keep history keep it in a Redis stream beside their numbering,
    written by the same script that publishes: one numbering for both.

    :meth:`ready` returns once Redis confirmed the channel's subscription and this
    process knows where the channel's numbering stands: from then on, every
    publication on it reaches this process, or its loss is reported.
    """

    history_supported = True
    recovers_atomically = False  # the subscribe's round trips: the hub holds meanwhile
    presence_supported = True

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        super().__init__(url, settings)
        self.timeout: float = settings["broker_timeout"]
        self.prefix: str = settings["broker_prefix"]
        limit = settings.get("max_message_size")
        self.max_message_size = limit if isinstance(limit, int) else DEFAULT_MAX_MESSAGE_SIZE
        self.node = ""  # set in start(): workers are forked after this object is made
        self.nodes_key = f"{self.prefix}:nodes"
        self._channel_prefix = f"{self.prefix}:channel:".encode()
        self.sequence = Sequence()
        self.missed = 0
        self.subscription_losses = 0
        #: Dropped messages and listener errors by kind, logged without flooding.
        self.tally = Tally(log)
        self._script: Any = None
        self._history_script: Any = None
        #: Subscribers waiting for a channel's publications up to a position.
        self._catching_up: dict[str, list[tuple[StreamPosition, asyncio.Future[None]]]] = {}
        self._channels_script: Any = None
        self._presence_scripts: dict[str, Any] = {}
        #: This process's members of each channel tracking presence: it renews them.
        self._present: dict[str, dict[str, Member]] = {}
        #: What this process's channel map in Redis holds, as far as it knows (``None``:
        #: unknown, so the next heartbeat starts it afresh)...
        self._published: dict[str, int] | None = None
        #: ...and when it (or its TTL) was last written, monotonic seconds.
        self._published_at = 0.0
        #: Counts the times the map was forgotten because Redis may have lost it.
        self._map_resets = 0
        self._publisher: Redis | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._listener: asyncio.Task[None] | None = None
        self._subscribed: asyncio.Event | None = None
        self._beat_now: asyncio.Event | None = None
        self._down_since = time.monotonic()
        #: When Redis last answered this process (a command, or a ping while unsubscribed).
        self._redis_answered = time.monotonic()
        #: The subscription's connection while it is up: where SUBSCRIBEs go.
        self._pubsub: PubSub | None = None
        #: Channels to SUBSCRIBE (True) or UNSUBSCRIBE (False) on it, not sent yet.
        self._changes: dict[str, bool] = {}
        self._flush_task: asyncio.Task[None] | None = None
        #: Channels Redis confirmed on this connection (and has not unsubscribed since)...
        self._live: set[str] = set()
        #: ...of which those whose numbering this process has not looked up yet.
        self._fresh: set[str] = set()
        #: Per channel subscribed here: set once Redis confirmed it and it is looked up.
        self._ready: dict[str, asyncio.Event] = {}
        self.position_check_interval = float(
            settings.get("position_check_interval", POSITION_CHECK_INTERVAL)
        )
        if self.position_check_interval <= 0:
            raise ValueError("--position-check-interval must be above 0")
        #: Channels whose position the next settle checks against Redis, and when next.
        self._checking: set[str] = set()
        self._next_check = 0.0
        #: Numberings Redis lost under this process's subscribers (epoch changes).
        self.epochs_lost = 0
        self.presence_check = PresenceCheck(
            self._presence_values,
            _is_member,
            self._confirmed_presence,
            lambda kind, why: self.tally.add(kind, f"ignored join or leave message(s) {why}"),
        )

    def key(self, channel: str) -> str:
        """The Pub/Sub channel carrying ``channel``'s publications."""
        return f"{self.prefix}:channel:{channel}"

    def meta_key(self, channel: str) -> str:
        """The hash numbering ``channel``'s publications (``epoch``, ``seq``)."""
        return f"{self.prefix}:{{ch:{channel}}}:meta"

    def history_key(self, channel: str) -> str:
        """The stream keeping ``channel``'s history: entry ``N-1`` is publication N."""
        return f"{self.prefix}:{{ch:{channel}}}:history"

    def presence_keys(self, channel: str) -> list[str]:
        """The hashes and sorted set holding ``channel``'s presence."""
        base = f"{self.prefix}:{{ch:{channel}}}:presence"
        return [base, f"{base}-expire", f"{base}-users"]

    def channels_key(self, node: str) -> str:
        """The hash of ``node``'s subscribers per channel."""
        return f"{self.prefix}:{{node:{node}}}:channels"

    def info_key(self, node: str) -> str:
        """The hash describing ``node`` for :meth:`cluster_nodes`."""
        return f"{self.prefix}:{{node:{node}}}:info"

    def _client(self, retries: int, **options: Any) -> Redis:
        """A client without redis-py's default retries: ten, with backoff, they would
        stretch a failing call past ``broker_timeout`` and renew a lost subscription
        behind this broker's back (missing what was published meanwhile, unnoticed).

        Its pool holds at most POOL_SIZE connections and makes a command wait for one
        (within the broker's timeout) rather than fail: redis-py's default pool
        refuses the 101st command in flight ("Too many connections"), which a burst
        of clients resubscribing or publishing at once reaches.
        """
        pool = BlockingConnectionPool.from_url(
            self.url,
            max_connections=POOL_SIZE,
            timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), retries),
            **options,
        )
        return Redis.from_pool(pool)

    async def start(self) -> None:
        if self._listener is not None:
            raise RuntimeError("this broker is already started")
        await super().start()
        self.node = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        # One immediate retry on a new connection: after an outage the pooled one is
        # stale, and without it the first broadcast after Redis is back would fail.
        self._publisher = self._client(1, socket_timeout=self.timeout)
        self._script = self._publisher.register_script(PUBLISH_SCRIPT)
        self._history_script = self._publisher.register_script(HISTORY_SCRIPT)
        self._channels_script = self._publisher.register_script(CHANNELS_SCRIPT)
        self._presence_scripts = {
            name: self._publisher.register_script(script)
            for name, script in (
                ("join", PRESENCE_JOIN_SCRIPT),
                ("renew", PRESENCE_RENEW_SCRIPT),
                ("leave", PRESENCE_LEAVE_SCRIPT),
                ("read", PRESENCE_READ_SCRIPT),
            )
        }
        self._published = None
        self._subscribed = asyncio.Event()
        self._beat_now = asyncio.Event()
        self._down_since = time.monotonic()
        self._listener = self._spawn(self._listen(), "redis listener")
        self._spawn(self._heartbeat(), "redis heartbeat")
        self._spawn(self._renew_presence(), "redis presence")
        try:
            async with asyncio.timeout(self.timeout * 3):
                await self._subscribed.wait()
        except TimeoutError:
            log.warning(
                "redis at %s is not answering; serving anyway, broadcasts fail with 503 "
                "until it is back",
                self.describe(),
            )

    async def close(self) -> None:
        await super().close()
        await self.presence_check.close()
        tasks, self._tasks = self._tasks, []
        if self._flush_task is not None:
            tasks.append(self._flush_task)
        # Whatever they ended with was logged when they ended (see _spawn). Cancelled
        # again if need be: redis-py (8.1) sometimes lets a command finish normally
        # although its task was cancelled meanwhile, and the task would go on for ever.
        for _ in range(CLOSE_ROUNDS):
            pending = [task for task in tasks if not task.done()]
            if not pending:
                break
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=self.timeout)
        if stuck := [task.get_name() for task in tasks if not task.done()]:
            log.error("redis broker tasks did not stop: %s", ", ".join(stuck))
        self._listener = None
        if self._publisher is not None:
            await self._leave_all_presence()
            with contextlib.suppress(RedisError, OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    pipe = self._publisher.pipeline(transaction=False)
                    pipe.hdel(self.nodes_key, self.node)
                    pipe.delete(self.channels_key(self.node), self.info_key(self.node))
                    await pipe.execute()
            self._published = None
            await self._publisher.aclose()
            self._publisher = None

    @property
    def subscribed(self) -> bool:
        return self._subscribed is not None and self._subscribed.is_set()

    def problem(self) -> str | None:
        """Unhealthy while this process hears no broadcasts: its clients would miss them."""
        listener = self._listener
        if listener is None:
            return "the redis broker is not running"
        if listener.done():
            return "the redis subscription task stopped (see the log); restart this process"
        if not self.subscribed:
            now = time.monotonic()
            if now - self._redis_answered > HEARTBEAT * 3:
                # Redis is down for every process alike: sending new clients elsewhere
                # would only take the page away from them too. Broadcasts answer 503.
                return None
            return f"not subscribed to the redis broker for {now - self._down_since:.1f} s"
        return None

    async def publish(self, channel: str, data: str | bytes | Publication) -> int:
        if self._publisher is None or self._script is None:
            raise BrokerUnavailable("the broker is not running")
        payload = encode(as_publication(data), self.max_message_size)
        listening = channel in self.subscribers
        keys = [self.meta_key(channel), self.nodes_key, self.history_key(channel)]
        size, ttl = self.keeps_history(channel) or (0, 0.0)
        args = [payload, os.urandom(4).hex(), MAGIC, self.key(channel), int(listening), META_TTL,
                size, max(1, round(ttl * 1000))]  # fmt: skip
        try:
            async with asyncio.timeout(self.timeout):
                # EVALSHA, loading the script only when Redis says it does not know it.
                receivers, flat = await self._script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                "message not sent"
            ) from exc
        if not receivers:
            if listening:
                # This process listens to the channel, so its own subscription is down:
                # its clients did not get it either, and Redis left no gap for it.
                raise BrokerUnavailable(
                    "no server process is subscribed to the broker right now; message not sent"
                )
            # Nobody listens right now; a process whose subscription is down finds the
            # gap when it is back, and tells its clients.
            return 0
        return self._count(dict(zip(flat[::2], flat[1::2], strict=True)))

    async def _read_history(
        self, channel: str, limit: int, since: StreamPosition | None, reverse: bool
    ) -> HistoryResult:
        if self._publisher is None or self._history_script is None:
            raise BrokerUnavailable("the broker is not running")
        count = MAX_HISTORY_LIMIT if limit < 0 or limit > MAX_HISTORY_LIMIT else limit
        if since is None:
            first, last = "-", "+"
        elif reverse:
            first, last = "-", f"({since.offset}-1"
        else:
            first, last = f"({since.offset}-1", "+"
        keys = [self.meta_key(channel), self.history_key(channel)]
        args = [first, last, count, int(reverse)]
        try:
            async with asyncio.timeout(self.timeout):
                epoch, top, entries = await self._history_script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc
        epoch = epoch.decode()
        if since is not None and since.epoch and since.epoch != epoch:
            raise UnrecoverablePosition("that position is in another epoch of the stream")
        publications = []
        for entry_id, fields in entries:
            number = entry_id.split(b"-", 1)[0]
            raw = b"%s%s %s %s" % (MAGIC, epoch.encode(), number, fields[1])
            publication = decode(raw, self.max_message_size)
            if isinstance(publication, Publication):
                publications.append(publication)
        return HistoryResult(tuple(publications), StreamPosition(int(top), epoch))

    async def caught_up(self, channel: str, position: StreamPosition) -> None:
        if position.offset <= 0 or channel not in self.subscribers:
            return  # nothing to wait for, or nobody here to wait for it (gone meanwhile)
        if self._delivered_up_to(channel, position):
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (position, waiter)
        self._catching_up.setdefault(channel, []).append(entry)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            raise BrokerUnavailable(
                f"publications up to {position.offset} on {channel!r} did not arrive in time"
            ) from None
        finally:
            waiting = self._catching_up.get(channel)
            if waiting is not None and entry in waiting:
                waiting.remove(entry)
                if not waiting:
                    del self._catching_up[channel]

    def _delivered_up_to(self, channel: str, position: StreamPosition) -> bool:
        known = self.sequence.position.get(channel)
        return known is not None and known[0] == position.epoch and known[1] >= position.offset

    def _wake_catching_up(self, channel: str) -> None:
        for position, waiter in self._catching_up.get(channel, ()):
            if not waiter.done() and self._delivered_up_to(channel, position):
                waiter.set_result(None)

    async def _remove_history(self, channel: str) -> None:
        if self._publisher is None:
            raise BrokerUnavailable("the broker is not running")
        try:
            async with asyncio.timeout(self.timeout):
                await self._publisher.delete(self.history_key(channel))
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc

    # Presence ---------------------------------------------------------------------

    async def _presence_call(self, name: str, channel: str, announce: bool, args: list[Any]) -> Any:
        script = self._presence_scripts.get(name)
        if self._publisher is None or script is None:
            raise BrokerUnavailable("the broker is not running")
        head = [int(announce), self.key(channel), PRESENCE_MAGIC]
        try:
            async with asyncio.timeout(self.timeout):
                return await script(keys=self.presence_keys(channel), args=[*head, *args])
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc})"
            ) from exc

    def _ttl_ms(self) -> int:
        return max(1, round(self.presence_ttl * 1000))

    async def _join_presence(self, channel: str, member: Member, announce: bool) -> None:
        self._present.setdefault(channel, {})[member.client] = member
        await self._add_members(channel, [member], announce)

    async def _add_members(self, channel: str, members: list[Member], announce: bool) -> None:
        args: list[Any] = [self._ttl_ms()]
        for member in members:
            args += [member.client, member_value(member)]
        try:
            await self._presence_call("join", channel, announce, args)
        except BrokerUnavailable as exc:
            # Renewed (so added) once Redis is back.
            self.tally.add("presence", f"adding a client to presence failed ({exc})")
            return
        # A leave sent meanwhile took another connection and may have run first: then
        # the client is in Redis with nobody to renew it. Take it out again (a no-op
        # if the leave came second).
        present = self._present.get(channel, {})
        gone = [member.client for member in members if member.client not in present]
        if gone:
            with contextlib.suppress(BrokerUnavailable):
                await self._presence_call("leave", channel, announce, gone)

    async def _leave_presence(self, channel: str, client: str, announce: bool) -> None:
        members = self._present.get(channel)
        if members is None or members.pop(client, None) is None:
            return  # not added here (or already removed)
        if not members:
            del self._present[channel]
        try:
            await self._presence_call("leave", channel, announce, [client])
        except BrokerUnavailable as exc:
            # It expires within presence_ttl instead, and its leave is told then.
            self.tally.add("presence", f"removing a client from presence failed ({exc})")

    def _announces(self, channel: str) -> bool:
        mode = self.presence_mode(channel)
        return mode is not None and mode.announced

    async def _read_presence(self, channel: str) -> dict[str, Member]:
        flat = await self._presence_call(
            "read", channel, self._announces(channel), ["members", MAX_PRESENCE_MEMBERS]
        )
        members: dict[str, Member] = {}
        for client, value in zip(flat[::2], flat[1::2], strict=True):
            member = member_of(client, value)
            if member is not None:
                members[member.client] = member
                if len(members) >= MAX_PRESENCE_MEMBERS:
                    break  # HSCAN's COUNT is only a hint
        return members

    async def _read_presence_stats(self, channel: str) -> PresenceStats:
        announce = self._announces(channel)
        clients, users = await self._presence_call("read", channel, announce, ["stats", 0])
        return PresenceStats(int(clients), int(users))

    async def _renew_presence(self) -> None:
        """Renew this process's members every ``presence_update_interval`` (pruning,
        and announcing the leaves of, members no process renewed in time), on a fixed
        schedule, PRESENCE_CALLS_AT_ONCE calls at a time."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += self.presence_update_interval
            await asyncio.sleep(max(0.0, due - loop.time()))
            chunks = _chunks(self._present)
            await _bounded(
                (self._renew_chunk(channel, clients) for channel, clients in chunks),
                PRESENCE_CALLS_AT_ONCE,
            )

    async def _renew_chunk(self, channel: str, clients: list[str]) -> None:
        mode = self.presence_mode(channel)
        if mode is None:
            return
        try:
            missing = await self._presence_call(
                "renew", channel, mode.announced, [self._ttl_ms(), *clients]
            )
            # Not in Redis (it lost them, or they were pruned while this process was
            # stalled): added back, with a join, if still here.
            present = self._present.get(channel, {})
            again = [present[c] for c in map(_text, missing) if c in present]
            if again:
                await self._add_members(channel, again, mode.announced)
        except BrokerUnavailable as exc:
            self.tally.add("presence", f"renewing presence failed ({exc})")
        except Exception:
            self.tally.add("presence", "renewing presence failed", exc_info=True)

    async def _leave_all_presence(self) -> None:
        """On close: this process's members leave now, not a TTL later (within a few
        broker timeouts: past them, they expire with presence_ttl instead)."""
        present, self._present = self._present, {}
        calls = [
            self._presence_call("leave", channel, self._announces(channel), clients)
            for channel, clients in _chunks(present)
        ]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(3 * self.timeout):
                await _bounded(calls, PRESENCE_CALLS_AT_ONCE)

    def _count(self, nodes: Mapping[bytes, bytes]) -> int:
        """This process's clients now, plus every other live process's last report."""
        total = sum(counter() for counter in self.counters)
        return total + sum(self._others(nodes).values())

    def _others(self, nodes: Mapping[bytes, bytes]) -> dict[str, int]:
        """Every other process that reported within NODE_TTL, with its client count."""
        now = time.time()
        me = self.node.encode()
        live: dict[str, int] = {}
        for node, value in nodes.items():
            if node == me:
                continue
            with contextlib.suppress(ValueError):
                count, seen = value.split()
                if now - float(seen) < NODE_TTL:
                    live[node.decode(errors="replace")] = int(count)
        return live

    # The cluster-wide view --------------------------------------------------------

    async def cluster_channels(self) -> dict[str, int]:
        """This process's channels now, plus every other live process's last map.

        Two round trips (the nodes hash, then every live map in one pipeline); the cost
        grows with the number of (process, channel) pairs in the cluster.
        """
        total = self.local_channels()
        async with self._asking("the cluster's channels"):
            others = await self._read_nodes()
            maps = await self._read_each(self.channels_key(node) for node in others)
        for channels in maps:
            for name, value in channels.items():
                n = parse_counter(value)
                if n:
                    channel = name.decode(errors="replace")
                    total[channel] = total.get(channel, 0) + n
        return total

    async def cluster_nodes(self) -> list[dict[str, Any]]:
        """This process now, and every other live process as it last reported.

        A process that reports its client count but no info (an older version, or
        one that just started) is listed under its node name with zeros.
        """
        async with self._asking("the cluster's nodes"):
            others = await self._read_nodes()
            infos = await self._read_each(self.info_key(node) for node in others)
        now = time.time()
        result = [self.local_node()]
        for (node, clients), info in zip(others.items(), infos, strict=True):
            fields = {key.decode(errors="replace"): value for key, value in info.items()}
            try:
                started = float(fields.get("started", b""))
            except ValueError:
                started = now
            result.append(
                {
                    "uid": _text(fields.get("uid", node)),
                    "name": _text(fields.get("name", node)),
                    "num_clients": clients,
                    "num_channels": parse_counter(fields.get("channels")) or 0,
                    "num_subs": parse_counter(fields.get("subs")) or 0,
                    "uptime": max(0, int(now - started)),
                }
            )
        return result

    @contextlib.asynccontextmanager
    async def _asking(self, what: str) -> AsyncIterator[None]:
        """Within the broker's timeout, or :class:`BrokerUnavailable` (503)."""
        if self._publisher is None:
            raise BrokerUnavailable("the broker is not running")
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except UNREACHABLE as exc:
            raise BrokerUnavailable(
                f"broker {self.describe()} is unavailable ({type(exc).__name__}: {exc}); "
                f"cannot tell {what}"
            ) from exc

    async def _read_nodes(self) -> dict[str, int]:
        assert self._publisher is not None
        nodes: Any = await self._publisher.hgetall(self.nodes_key)  # bytes: no decoding
        return self._others(nodes)

    async def _read_each(self, keys: Iterable[str]) -> list[dict[bytes, bytes]]:
        """HGETALL of each of ``keys``, in one round trip."""
        assert self._publisher is not None
        pipe = self._publisher.pipeline(transaction=False)
        for key in keys:
            pipe.hgetall(key)
        replies: list[dict[bytes, bytes]] = await pipe.execute()
        return replies

    async def _report_channels(self) -> None:
        """Bring this process's channel map and info in Redis up to date (heartbeat).

        Sends nothing while the map is unchanged, but an EXPIRE-only renewal every
        NODE_KEYS_RENEW seconds. A change goes out as one EVALSHA holding only what
        changed (at most MAP_FIELDS_PER_BEAT fields; the rest next heartbeat), so an
        idle process with 10,000 channels costs Redis nothing per second.
        """
        assert self._channels_script is not None
        base, resets = self._published, self._map_resets
        current = self.local_channels()
        if base is None:
            changed, removed = list(current.items()), []
        else:
            changed = [(c, n) for c, n in current.items() if base.get(c) != n]
            removed = [c for c in base if c not in current]
            due = time.monotonic() - self._published_at >= NODE_KEYS_RENEW
            if not changed and not removed and not due:
                return
        changed = changed[:MAP_FIELDS_PER_BEAT]
        removed = removed[: MAP_FIELDS_PER_BEAT - len(changed)]
        target = dict(base or {})
        target.update(changed)
        for channel in removed:
            del target[channel]
        info: dict[str, str | int] = {
            "uid": self.uid,
            "name": self.name,
            "started": f"{self.started:.3f}",
            "channels": len(target),
            "subs": sum(target.values()),
        }
        items: list[str | int] = [f for pair in info.items() for f in pair]
        items += [f for pair in changed for f in pair]
        head = [NODE_KEYS_TTL, int(base is None), int(bool(base)), 2 * len(info), 2 * len(changed)]
        keys = [self.channels_key(self.node), self.info_key(self.node)]
        try:
            async with asyncio.timeout(self.timeout):
                written = await self._channels_script(keys=keys, args=[*head, *items, *removed])
        except BaseException:
            self._published = None  # what Redis holds now is anyone's guess
            raise
        if self._map_resets != resets:
            return  # forgotten meanwhile (Redis came back): written afresh next time
        if not written:
            self._published = None  # Redis lost it (restarted, evicted): afresh next time
            self._beat_now_set()
            return
        self._published = target
        self._published_at = time.monotonic()

    def _beat_now_set(self) -> None:
        if self._beat_now is not None:
            self._beat_now.set()

    # Subscriptions ----------------------------------------------------------------

    async def ready(self, channel: str) -> None:
        event = self._ready.get(channel)
        if event is None:
            raise ValueError(f"this process is not subscribed to channel {channel!r}")
        if not event.is_set():
            try:
                async with asyncio.timeout(self.timeout):
                    await event.wait()
            except TimeoutError:
                raise BrokerUnavailable(
                    f"redis did not confirm the subscription to {channel!r} in time"
                ) from None
            if self._ready.get(channel) is not event:
                raise ValueError(f"channel {channel!r} was unsubscribed meanwhile")

    def _listen_to(self, channel: str) -> None:
        self._ready[channel] = asyncio.Event()
        self._request(channel, True)

    def _stop_listening(self, channel: str) -> None:
        event = self._ready.pop(channel, None)
        if event is not None:
            event.set()  # its waiters find it gone
        # Whatever arrives for it from now on is dropped unseen (see _step), and a
        # later subscription starts afresh: nobody here missed anything meanwhile.
        self.sequence.drop(channel)
        self._fresh.discard(channel)
        self._request(channel, False)

    def _request(self, channel: str, wanted: bool) -> None:
        """Have Redis (un)subscribe ``channel`` soon, in the order asked, batched.

        Only the last wish per channel is sent: one given up and wanted again is
        SUBSCRIBEd again, which Redis confirms again, and the listener starts afresh.
        """
        if self._pubsub is None:
            return  # no subscription now: the next one subscribes the current set
        self._changes[channel] = wanted
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._flush_task is None and self._changes and self._pubsub is not None:
            self._flush_task = asyncio.get_running_loop().create_task(
                self._flush(), name="redis subscriptions"
            )

    async def _flush(self) -> None:
        """Send the subscription changes asked for, on the listener's connection.

        Only on a connection that is up: redis-py would otherwise connect again behind
        the listener's back. Whatever is not sent is not lost: the listener subscribes
        to every channel wanted at that moment whenever it connects. The confirmations
        come back through the listener, in order with the messages.
        """
        pubsub = self._pubsub
        try:
            while self._changes:
                pubsub = self._pubsub
                connection = pubsub.connection if pubsub is not None else None
                if connection is None or not connection.is_connected:
                    return
                changes, self._changes = self._changes, {}
                stop = [self.key(c) for c, wanted in changes.items() if not wanted]
                start = [self.key(c) for c, wanted in changes.items() if wanted]
                if stop:
                    await connection.send_command("UNSUBSCRIBE", *stop, check_health=False)
                if start:
                    await connection.send_command("SUBSCRIBE", *start, check_health=False)
        except (RedisError, OSError) as exc:
            # The connection is failing: its listener notices and subscribes afresh.
            log.debug("sending subscriptions failed: %s", exc)
        except Exception:
            self.tally.add("flush", "sending subscriptions to redis failed", exc_info=True)
        finally:
            self._flush_task = None
            if self._pubsub is not pubsub:
                # The listener connected again meanwhile: what was asked since is its.
                self._schedule_flush()

    # Background tasks -----------------------------------------------------------

    def _spawn(self, coroutine: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a background task that cannot end unnoticed: an end other than being
        cancelled is logged (and, for the listener, reported by ``/-/health``)."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.append(task)

        def ended(done: asyncio.Task[None]) -> None:
            if done in self._tasks:
                self._tasks.remove(done)
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                log.critical("%s died", name, exc_info=error)
            else:
                log.critical("%s ended", name)

        task.add_done_callback(ended)
        return task

    async def _listen(self) -> None:
        """Subscribe and handle messages; on any failure, reconnect with backoff and jitter."""
        assert self._subscribed is not None
        delay = BACKOFF_MIN
        while True:
            client = self._client(0)
            pubsub = client.pubsub()
            queue: Queue = deque()
            try:
                await pubsub.connect()  # type: ignore[no-untyped-call]
                # Every channel wanted now, in one SUBSCRIBE; later changes go through
                # _flush, on this connection, after it.
                self._changes.clear()
                self._pubsub = pubsub
                if self.subscribers:
                    await pubsub.execute_command("SUBSCRIBE", *map(self.key, self.subscribers))
                await self._serve(pubsub, queue)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._salvage(queue)
                why = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, RedisError | OSError | TimeoutError):
                    # Not a connection problem: a bug or a surprise, worth a traceback.
                    self.tally.add(
                        "listener", f"the redis listener failed and restarts ({why})", exc_info=True
                    )
                elif self._subscribed.is_set():
                    log.warning("lost the redis subscription: %s", why)
                else:
                    self.tally.add(
                        f"retry {type(exc).__name__}", f"cannot subscribe to redis yet ({why})"
                    )
                if self._subscribed.is_set():
                    self._subscribed.clear()
                    self._down_since = time.monotonic()
                    self.subscription_losses += 1
                    delay = BACKOFF_MIN  # it worked until now: retry soon
            finally:
                # Positions stay: the next connection compares them with Redis.
                self._pubsub = None
                self._live.clear()
                self._fresh.clear()
                for event in self._ready.values():
                    event.clear()
                # Through Any: redis-py types aclose() from 8.2 on and not before.
                close_pubsub: Any = pubsub.aclose
                with contextlib.suppress(Exception):
                    await close_pubsub()
                with contextlib.suppress(Exception):
                    await client.aclose()
            # Reached only after a failure (_serve never returns normally).
            await asyncio.sleep(random.uniform(BACKOFF_MIN, delay))
            delay = min(delay * 2, BACKOFF_MAX)

    async def _serve(self, pubsub: PubSub, queue: Queue) -> None:
        """One subscription's life: catch up with Redis, then handle messages in order."""
        assert self._subscribed is not None
        # Redis answers in order: past the PONG, every channel asked for at connect is
        # confirmed, and the first _settle looks them all up.
        await self._barrier(pubsub, queue)
        await self._settle(pubsub, queue)
        if self.subscription_losses:
            log.info("resubscribed to redis at %s", self.describe())
        self._subscribed.set()
        # A restarted Redis has no counts yet, and maybe an old channel map.
        self._published = None
        self._map_resets += 1
        self._beat_now_set()
        self._next_check = time.monotonic() + self.position_check_interval
        while True:
            message = await self._read(pubsub, min(IDLE_PING, self.position_check_interval))
            if message is None:
                # Idle: the subscription must answer a PING, or it is dead.
                await self._barrier(pubsub, queue)
            else:
                self._enqueue(message, queue)
            while queue:
                if self._step(*queue[0]):
                    queue.popleft()
                else:
                    await self._settle(pubsub, queue)
            if self._fresh or self._check_due():
                await self._settle(pubsub, queue)

    def _salvage(self, queue: Queue) -> None:
        """The subscription failed with messages received but not handled: deliver those
        that need no question, in order, up to the first that does; count the rest.
        (Genuine ones among the rest are found missing when resubscribing.)
        """
        while queue and self._step(*queue[0]):
            queue.popleft()
        for channel, item in queue:
            if item is Mark.UNSUBSCRIBED:
                self.sequence.drop(channel)  # what it heard before that means nothing now
            elif isinstance(item, Publication) and channel in self.subscribers:
                self._drop("unverified", self.key(channel), "Redis could not be asked about")
        queue.clear()

    async def _read(self, pubsub: PubSub, wait: float | None) -> dict[str, Any] | None:
        """The next thing on the subscription (``None`` after ``wait`` seconds; forever if None)."""
        message: dict[str, Any] | None = await pubsub.get_message(timeout=wait)
        return message

    def _enqueue(self, message: Mapping[str, Any], queue: Queue) -> None:
        """Queue a message or a confirmation from the subscription, or count and drop it."""
        kind = message.get("type")
        try:
            if kind == "message":
                self._enqueue_message(message, queue)
            elif kind in ("subscribe", "unsubscribe"):
                channel = self._channel_of(message.get("channel"))
                if channel is not None:
                    queue.append((channel, Mark(kind)))
            # Anything else is a PONG no barrier waits for.
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)

    def _enqueue_message(self, message: Mapping[str, Any], queue: Queue) -> None:
        name = message.get("channel")
        channel = self._channel_of(name)
        raw = message.get("data")
        if channel is None or not isinstance(raw, bytes):
            self._drop("foreign", _text(name), Drop.FOREIGN.value)
        elif channel not in self.subscribers:
            return  # unsubscribed here since: nobody wants it, and its numbering is forgotten
        elif len(raw) > self.max_message_size + MAX_INFO_SIZE + ENVELOPE_OVERHEAD:
            self._oversized(channel)
        else:
            publication = decode(raw, self.max_message_size)
            if publication is Drop.FOREIGN:
                # A join or leave (checked only here: publications come first)?
                event = decode_presence(raw) if raw.startswith(PRESENCE_MAGIC) else None
                if isinstance(event, PresenceEvent):
                    queue.append((channel, event))
                else:
                    self._drop("foreign", self.key(channel), Drop.FOREIGN.value)
            elif publication is Drop.OVERSIZED:
                self._oversized(channel)
            else:
                queue.append((channel, publication))

    def _channel_of(self, name: Any) -> str | None:
        """The channel whose Pub/Sub channel is ``name``, or ``None`` if it is none of ours."""
        if not isinstance(name, bytes) or not name.startswith(self._channel_prefix):
            return None
        try:
            return name[len(self._channel_prefix) :].decode()
        except UnicodeDecodeError:
            return None

    def _oversized(self, channel: str) -> None:
        # The body's limit, or MAX_INFO_SIZE for the info (not said: a forger's choice).
        limit = self.max_message_size
        self._drop("oversized", self.key(channel), f"over the {limit}-byte size limit")

    def _drop(self, kind: str, name: str, why: str) -> None:
        self.tally.add(kind, f"ignored message(s) on redis channel {name} {why}")

    def _step(
        self,
        channel: str,
        item: Publication | PresenceEvent | Mark,
        truth: Truth | None = None,
        later: Iterable[tuple[str, Publication | PresenceEvent | Mark]] = (),
    ) -> bool:
        """Handle one queued item; ``False`` when it needs Redis's word first.

        Whatever goes wrong with one message is counted and logged, never fatal.
        """
        if isinstance(item, Mark):
            self._confirmed(channel, item)
            return True
        if channel not in self.subscribers:
            return True  # unsubscribed here since it arrived: nobody wants it
        if isinstance(item, PresenceEvent):
            self.presence_check.add(channel, item)  # told once Redis's presence agrees
            return True
        publication = item
        try:
            place = self.sequence.place(channel, publication.epoch, publication.offset)
            if place is Place.NEXT:
                self._deliver(channel, publication, digest(publication))
                return True
            if place is Place.AGAIN:
                mark = digest(publication)
                if self.sequence.again(channel, publication.offset, mark):
                    self.tally.add(
                        "second",
                        f"delivered message(s) on redis channel {self.key(channel)} under a "
                        "sequence number that already carried another one: someone else "
                        "publishes on the channel",
                    )
                    self._deliver(channel, publication, mark)
                else:
                    self._drop("replayed", self.key(channel), "repeating one already delivered")
                return True
            if truth is None:
                return False
            verdict, missed = self.sequence.judge(
                channel, publication.epoch, publication.offset, truth, later
            )
            if verdict not in DELIVER:
                self._drop(verdict.name.lower(), self.key(channel), verdict.value)
                return True
            if verdict is Verdict.BEHIND:
                self.tally.add(
                    "behind",
                    f"delivered message(s) on redis channel {self.key(channel)} numbered "
                    "behind this process, which forged numbers had pushed ahead: someone "
                    "else publishes on the channel",
                )
            elif verdict is Verdict.RENUMBERED:
                self.tally.add(
                    "renumbered",
                    f"redis's counter for {self.key(channel)} went back (its key was reset "
                    "or evicted): following its new numbering",
                )
            before = self.sequence.position.get(channel)
            renumbered = verdict is Verdict.RENUMBERED
            self._deliver(channel, publication, digest(publication), renumbered=renumbered)
            if missed:
                self._lost(channel, missed)
            elif renumbered:
                self._epoch_changed(channel, before, renumbered=True)
            else:
                self._epoch_changed(channel, before)
        except Exception:
            self.tally.add("failed", "handling a message from redis failed", exc_info=True)
        return True

    def _confirmed(self, channel: str, mark: Mark) -> None:
        """Redis (un)subscribed ``channel``: what arrives from here on is heard under it."""
        if mark is Mark.UNSUBSCRIBED:
            self._live.discard(channel)
            self._fresh.discard(channel)
            self.sequence.drop(channel)  # a later SUBSCRIBE starts afresh
            event = self._ready.get(channel)
            if event is not None:
                event.clear()  # subscribed here again: its SUBSCRIBE follows
            return
        if channel in self._live:
            # Confirmed again without an UNSUBSCRIBE in between: the channel was given
            # up here and wanted again before Redis was told. Start afresh all the same.
            self.sequence.drop(channel)
        self._live.add(channel)
        if channel in self.subscribers:
            self._fresh.add(channel)

    async def _settle(self, pubsub: PubSub, queue: Queue) -> None:
        """Ask Redis, then handle the queue (whose head looked off, or which confirmed a
        subscription) in that light; look up every channel newly subscribed.

        Each round: take what has already arrived, ask Redis for the epoch and counter of
        each channel concerned, then PING through the subscription and read up to the
        PONG. Every message taken before the question was here before Redis answered, so
        one numbered beyond the counter was not stamped by Redis. Redis delivers in
        order, so after the PONG everything it numbered up to the counter has arrived:
        numbers that did not were missed (while unsubscribed), and a message that came
        before lower numbers was not Redis's either. A channel is looked up only once
        its confirmation had arrived before the question (then every later publication
        on it reaches this process); a message that arrived after the question and
        looks off, or a later confirmation, waits for the next round. One round costs
        two round trips, covers up to BATCH messages, and happens only when something
        looks off or a channel was subscribed.
        """
        while True:
            while len(queue) < BATCH and (message := await self._read(pubsub, 0.0)) is not None:
                self._enqueue(message, queue)
            covered = len(queue)
            confirmed = set(self._fresh)
            checking, self._checking = self._checking, set()
            asked = set(self._fresh) | checking
            for channel, item in islice(queue, covered):
                asked.add(channel)
                if item is Mark.SUBSCRIBED:
                    confirmed.add(channel)
            truth = await self._truth(asked)
            await self._barrier(pubsub, queue)
            index = 0
            while queue:
                channel, item = queue[0]
                if index < covered:
                    self._step(channel, item, truth, islice(queue, 1, None))
                elif not self._step(channel, item):
                    break
                queue.popleft()
                index += 1
            else:
                settled = [
                    channel
                    for channel in asked
                    if channel in self._live
                    and channel in self.subscribers
                    and (channel not in self._fresh or channel in confirmed)
                ]
                for channel in settled:
                    before = self.sequence.position.get(channel)
                    missed = self.sequence.check(channel, *truth.get(channel, (None, None)))
                    if missed:
                        self._lost(channel, missed)
                    else:
                        self._epoch_changed(channel, before)
                # Only now has everything Redis had numbered been handled (not before a
                # round that stopped early: what it left queued is judged by the next).
                self.sequence.confirm(truth, settled)
                for channel in settled:
                    self._fresh.discard(channel)
                    event = self._ready.get(channel)
                    if event is not None:
                        event.set()
                if not self._fresh:
                    return

    async def _presence_values(self, asks: Collection[tuple[str, str]]) -> list[Any]:
        """What Redis's presence hashes hold for each (channel, client id) now."""
        if self._publisher is None:
            raise BrokerUnavailable("the broker is not running")
        async with asyncio.timeout(self.timeout):
            pipe = self._publisher.pipeline(transaction=False)
            for channel, client in asks:
                pipe.hget(self.presence_keys(channel)[0], client)
            return list(await pipe.execute())

    def _confirmed_presence(self, channel: str, event: PresenceEvent) -> None:
        if channel in self.subscribers:  # not if unsubscribed here meanwhile
            self.report_presence(channel, event)

    def _check_due(self) -> bool:
        """Whether the positions of this process's channels keeping history are due to be
        checked against Redis (one counter read each, not one per client); if so, which."""
        now = time.monotonic()
        if now < self._next_check:
            return False
        self._next_check = now + self.position_check_interval
        known = self.sequence.position
        self._checking = {
            channel
            for channel in self._live
            if channel in known
            and channel in self.subscribers
            and self.keeps_history(channel) is not None
        }
        return bool(self._checking)

    def _epoch_changed(
        self, channel: str, before: tuple[str, int] | None, *, renumbered: bool = False
    ) -> None:
        """Tell ``channel``'s subscribers if the numbering they stood in is gone (Redis
        restarted without persistence, was flushed, or evicted the key) though no
        publication was missed: their positions mean nothing now. Only where the
        channel keeps history: elsewhere nobody holds a position."""
        if before is None or before[0] == NEW_EPOCH or self.keeps_history(channel) is None:
            return
        after = self.sequence.position.get(channel)
        if not renumbered and after is not None and after[0] == before[0]:
            return
        self.epochs_lost += 1
        log.warning(
            "redis lost the numbering of %r (epoch %s at %d): telling its subscribers",
            channel,
            before[0],
            before[1],
        )
        try:
            self.report_loss(channel, 1)
        except Exception:
            log.exception("telling subscribers about a lost numbering failed")

    async def _truth(self, channels: Collection[str]) -> Truth:
        """Redis's epoch and counter for each of ``channels`` (one pipelined round trip)."""
        assert self._publisher is not None
        if not channels:
            return {}
        names = list(channels)
        async with asyncio.timeout(self.timeout):
            pipe = self._publisher.pipeline(transaction=False)
            for channel in names:
                pipe.hmget(self.meta_key(channel), ["epoch", "seq"])
            replies = await pipe.execute()
        truth: dict[str, tuple[str | None, int | None]] = {}
        for channel, (epoch, seq) in zip(names, replies, strict=True):
            valid = isinstance(epoch, bytes) and EPOCH.fullmatch(epoch)
            truth[channel] = (epoch.decode() if valid else None, parse_counter(seq))
        return truth

    async def _barrier(self, pubsub: PubSub, queue: Queue) -> None:
        """PING through the subscription and queue what arrives until its PONG.

        Redis answers in order, so everything it published, and every subscription it
        confirmed, before the PING has then arrived. No PONG within the time allowed
        means the connection is dead.
        """
        token = uuid.uuid4().hex.encode()
        await pubsub.ping(token)
        async with asyncio.timeout(max(3 * self.timeout, 1.0)):
            while True:
                message = await self._read(pubsub, None)
                if message is None:
                    continue
                if message.get("type") == "pong" and message.get("data") == token:
                    return
                if len(queue) >= BARRIER_LIMIT and message.get("type") == "message":
                    # A flood while Redis is asked: bounded here; genuine ones among
                    # what is dropped show as a gap, a loss told to their channel.
                    self._drop("unverified", _text(message.get("channel")), "in a flood")
                    continue
                self._enqueue(message, queue)

    def _deliver(
        self, channel: str, publication: Publication, mark: int, *, renumbered: bool = False
    ) -> None:
        self.sequence.delivered(
            channel, publication.epoch, publication.offset, mark, renumbered=renumbered
        )
        if self._catching_up:
            self._wake_catching_up(channel)
        try:
            self.deliver_locally(channel, publication)
        except Exception:
            log.exception("delivering a broadcast failed")

    def _lost(self, channel: str, missed: int) -> None:
        self.missed += missed
        log.error(
            "this process missed %d broadcast(s) on %r while its redis subscription was down",
            missed,
            channel,
        )
        try:
            self.report_loss(channel, missed)
        except Exception:
            log.exception("telling subscribers about missed broadcasts failed")

    async def _heartbeat(self) -> None:
        """Report this process's client count, and forget processes long gone."""
        assert self._publisher is not None
        assert self._beat_now is not None
        while True:
            self._beat_now.clear()
            try:
                self.tally.flush()
                count = sum(counter() for counter in self.counters)
                if not self.subscribed:
                    # Whether Redis answers at all: if it does, this process alone cannot
                    # hear broadcasts, and /-/health says so.
                    async with asyncio.timeout(self.timeout):
                        await self._publisher.ping()
                    self._redis_answered = time.monotonic()
                    raise ConnectionError("not subscribed: not counted as reachable")
                async with asyncio.timeout(self.timeout):
                    await self._publisher.hset(
                        self.nodes_key, self.node, f"{count} {time.time():.3f}"
                    )
                    self._redis_answered = time.monotonic()
                    if random.random() < 0.05:
                        await self._forget_stale_nodes()
                await self._report_channels()
            except UNREACHABLE:
                pass  # the listener logs connection trouble; reports resume when it is back
            except Exception:
                self.tally.add("heartbeat", "reporting the client count failed", exc_info=True)
            # Not wait_for: in Python 3.11 it can swallow the cancellation close() sends
            # when the event is set at the same moment, and close() then waits for ever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT):
                    await self._beat_now.wait()

    async def _forget_stale_nodes(self) -> None:
        assert self._publisher is not None
        nodes = await self._publisher.hgetall(self.nodes_key)
        now = time.time()
        stale = []
        for node, value in nodes.items():
            try:
                seen = float(value.split()[1])
            except (ValueError, IndexError):
                seen = 0.0
            if now - seen > NODE_TTL * 12:
                stale.append(node)
        if stale:
            await self._publisher.hdel(self.nodes_key, *stale)


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


def _is_member(event: PresenceEvent, stored: object) -> bool:
    """Whether Redis's presence hash holds the announced member (``stored``: its value)."""
    client = event.member.client
    return isinstance(stored, bytes) and member_of(client.encode(), stored) == event.member


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
