"""What every part of a session shares: its options, its state, and the checks that
more than one command makes.

:class:`SessionState` holds every attribute (in ``__slots__``: ten thousand
connections hold a session each); the parts of the protocol (:mod:`.subscribe`,
:mod:`.connect`, :mod:`.commands`, :mod:`.dispatch`) are mixins over it with no
state of their own, so each reads as one job while a session stays one object.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from realtime.rate import Rate
from realtime_hub.channels import ChannelRules, NamespaceOptions

from ..budget import (
    COMMAND_BURST,
    COMMAND_RATE,
    MAX_INVALID_TOKENS,
    MAX_JOIN_LEAVE_SUBSCRIBERS,
    CommandBudget,
)
from ..codec import Command
from ..codes import DISCONNECT_BAD_REQUEST, DisconnectError, Error
from ..tokens import TokenVerifier
from ..wire import JSON, Codec, Frame
from .backend import Backend, SessionMetrics

#: One logger for the whole session, whichever part of it logs.
logger = logging.getLogger("realtime_centrifuge.session")

#: Longest expiry honoured, as in Go (longer is most likely a bug; use none instead).
MAX_TTL_SECONDS = 365 * 24 * 3600

Result = Mapping[str, Any] | Error


def _uuid4() -> str:
    """``str(uuid.uuid4())``, without the UUID object: a client id for every connect."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


#: RFC 4122 variant bits (10xx) set in the clock_seq_hi nibble.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


@dataclass(frozen=True, slots=True)
class SessionOptions:
    """Limits and timers; the defaults are Centrifugo's."""

    #: Subscriptions per connection: the next subscribe gets 106, more server-side
    #: subscriptions at connect close with 3505.
    max_channels: int = 128
    #: Commands per frame (3501 beyond): centrifuge-js sends its pending subscribes
    #: together, so this must exceed ``max_channels``.
    max_commands: int = 256
    #: Seconds between server pings ``{}``; 0: none. Sent to clients in whole seconds.
    ping_interval: float = 25.0
    #: Seconds a client has to answer a ping (3012 "no pong" after); 0: no pongs.
    pong_timeout: float = 10.0
    #: Grace after a connection's expiry for its refresh to arrive (then 3005).
    expired_close_delay: float = 25.0
    #: Grace after a subscription's expiry for its sub_refresh (then unsubscribe 2501).
    expired_sub_close_delay: float = 25.0
    #: Connect without a token as an anonymous user when no hook answers.
    allow_anonymous_connect_without_token: bool = False
    #: Server version, sent in connect results if set.
    version: str = ""
    #: Most publications a recovery replays (more missed: ``recovered: false``);
    #: Centrifugo's ``client.recovery_max_publication_limit``.
    recovery_limit: int = 300
    #: Most publications a ``history`` call returns (Centrifugo's
    #: ``client.history_max_publication_limit``).
    history_limit: int = 300
    #: Most bytes of publications in one reply: a ``history`` reply (fewer
    #: publications then: the client pages on from the last), a subscribe's recovery,
    #: a connect's recoveries together (past it: ``recovered: false``). Centrifugo
    #: bounds only the count; a count of big publications would fill the client's
    #: buffer (``--client-buffer``: no reply is sent past half of it either).
    reply_bytes: int = 256 * 1024
    #: Commands a second and at once, and invalid subscription tokens, per connection
    #: (:mod:`realtime_centrifuge.budget`: 3013, 3500 past them).
    command_rate: float = COMMAND_RATE
    command_burst: int = COMMAND_BURST
    max_invalid_tokens: int = MAX_INVALID_TOKENS
    #: Subscribers of a channel (in this process) above which joins and leaves are
    #: not pushed (:func:`realtime_centrifuge.budget.join_leave_pushed`); 0: no bound.
    max_join_leave_subscribers: int = MAX_JOIN_LEAVE_SUBSCRIBERS
    #: Subscribe each signed-in user's connections server-side to its personal channel
    #: (``user_subscribe_to_personal_channel``), in this namespace ("": none, the
    #: channel is ``#USER``); None: off.
    personal_channel_namespace: str | None = None
    #: Where commands' durations and refused connects are reported; None: not timed
    #: (no exporter installed), so a command costs no clock reading.
    metrics: SessionMetrics | None = field(default=None, repr=False, compare=False)
    #: The command rate every session of these options shares; its burst is at least
    #: ``max_commands``, so a frame of batched subscribes at connect always passes.
    command_limit: Rate = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_channels < 1 or self.max_commands < 1:
            raise ValueError("max_channels and max_commands must be at least 1")
        if self.command_rate < 0 or self.command_burst < 1 or self.max_invalid_tokens < 0:
            raise ValueError("command rate >= 0, burst >= 1, invalid tokens >= 0")
        burst = max(self.command_burst, self.max_commands)
        object.__setattr__(self, "command_limit", Rate(self.command_rate, burst))
        if self.ping_interval != 0 and self.ping_interval < 1:
            raise ValueError("ping_interval is 0 or at least 1 s: clients get whole seconds")
        if min(self.pong_timeout, self.expired_close_delay, self.expired_sub_close_delay) < 0:
            raise ValueError("timeouts cannot be negative")


@dataclass(slots=True)
class Subscription:
    """One channel this connection is subscribed to."""

    #: "client" (subscribe command), "token" (connection token) or "server" (other
    #: server-side subscriptions).
    source: str
    expire_at: float | None = None
    info: Any = None
    #: The client tracks this channel's offsets (a recoverable or positioned stream).
    positioned: bool = False


class SessionState:
    """The attributes of a session, its public read-outs, and the shared checks."""

    # Ten thousand connections hold one each: no per-instance __dict__ (the mixins
    # over this class declare empty slots).
    __slots__ = (
        "_budget", "_commands", "_connected", "_expire_at", "_joining", "_last_ping", "_next_ping",
        "_pong_deadline", "_pushes", "_rand", "_recovering", "_rejected", "_subs", "backend",
        "client_id", "clock", "codec", "info", "meta", "options", "rules", "session_id", "user",
        "verifier",
    )  # fmt: skip

    def __init__(
        self,
        rules: ChannelRules,
        verifier: TokenVerifier,
        backend: Backend,
        *,
        options: SessionOptions | None = None,
        client_id: str | None = None,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        codec: Codec = JSON,
        session_id: str = "",
    ) -> None:
        self.rules = rules
        #: The session id of an emulated or one-way connection (Go gives one to those
        #: only): the connect result's ``session``, and what the server API's
        #: ``session`` targets. "" for a WebSocket, which no ``session`` targets.
        self.session_id = session_id
        #: The wire format this connection speaks: every reply and push goes through it.
        self.codec = codec
        self.verifier = verifier
        self.backend = backend
        self.options = options or SessionOptions()
        self.client_id = client_id or _uuid4()
        #: Unix time, the tokens' clock; the transport converts deadlines with it.
        self.clock = clock
        self._rand = rand
        self.user = ""
        #: ``conn_info`` of this client.
        self.info: Any = None
        self.meta: Any = None
        self._connected = False
        self._rejected = False
        self._commands = CommandBudget(
            self.options.command_limit, max_invalid_tokens=self.options.max_invalid_tokens
        )
        self._expire_at: float | None = None
        self._subs: dict[str, Subscription] = {}
        #: Pushes that follow the reply being made (held publications after a subscribe).
        self._pushes: list[Frame] = []
        #: Channels to enter in presence once the replies went out (``after_reply``).
        self._joining: list[str] = []
        #: When the recovery being answered started (perf_counter), to time it.
        self._recovering: float | None = None
        #: Bytes of publications the command being answered may still send.
        self._budget = self.options.reply_bytes
        self._next_ping: float | None = None
        self._last_ping: float | None = None
        self._pong_deadline: float | None = None

    @property
    def connected(self) -> bool:
        """True once connect succeeded; the transport enforces the connect timeout."""
        return self._connected

    @property
    def rejected(self) -> bool:
        """Connect was refused with an error reply (or the session closed).

        Go then stops reading and gives the client 5 s to close; any further frame
        closes it with 3501.
        """
        return self._rejected

    @property
    def channels(self) -> frozenset[str]:
        """Channels this connection is subscribed to."""
        return frozenset(self._subs)

    @property
    def expire_at(self) -> float | None:
        """Unix time the connection must be refreshed by; None: never."""
        return self._expire_at

    # -- checks more than one command makes ---------------------------------------------

    def _channel(self, command: Command) -> str:
        """The command's channel; Go closes with 3501 when it is empty."""
        channel = command.get_str("channel")
        if not channel:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        return channel

    def _client_info(self, channel: str) -> dict[str, Any]:
        sub = self._subs.get(channel)
        return {
            "user": self.user,
            "client": self.client_id,
            "conn_info": self.info,
            "chan_info": sub.info if sub else None,
        }

    @staticmethod
    def _ttl(expire_at: float | None, now: float) -> int:
        """Whole seconds left, as Go counts them (``exp - now.Unix()``): never 0 while
        ``expires`` is true, or the field is left out and centrifuge-python fails."""
        return 0 if expire_at is None else max(int(expire_at) - int(now), 1)

    @staticmethod
    def _capped(expire_at: int, now: float) -> int:
        """An expiry no later than :data:`MAX_TTL_SECONDS` from now."""
        return min(expire_at, int(now) + MAX_TTL_SECONDS)

    def _presence_access(
        self, options: NamespaceOptions, channel: str, *, subscribing: bool = False
    ) -> bool:
        """Centrifugo's presence permission: as any client, or as a subscriber (a signed-in
        one unless anonymous users are allowed too)."""
        if not (self.user or options.allow_presence_for_anonymous):
            return False
        if options.allow_presence_for_client:
            return True
        return options.allow_presence_for_subscriber and (subscribing or channel in self._subs)

    def _history_access(self, options: NamespaceOptions, channel: str) -> bool:
        """Centrifugo's history permission: as a subscriber, or as any (signed-in) client."""
        if options.allow_history_for_subscriber and channel in self._subs:
            return True
        return options.allow_history_for_client and bool(
            self.user or options.allow_history_for_anonymous
        )

    @staticmethod
    def _keeps_history(options: NamespaceOptions | None) -> bool:
        return options is not None and options.history_size > 0 and options.history_ttl > 0

    async def _drop_all(self) -> None:
        """Leave every channel (a failed connect, a closed connection)."""
        channels, self._subs = list(self._subs), {}
        for channel in channels:
            try:
                await self.backend.unsubscribe(channel)
            except Exception:
                logger.exception("unsubscribing client %s from %s", self.client_id, channel)
