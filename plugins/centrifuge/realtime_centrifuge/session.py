"""One client connection's protocol state, with no transport and no broker.

The transport feeds each text frame to :meth:`Session.handle_frame` (one call at a
time) and sends back the lines it returns, joined by ``\\n`` into one frame; a
:class:`DisconnectError` means: send its ``replies``, then close with its code and
reason. Timers are the transport's too: sleep until :meth:`Session.next_deadline`,
then call :meth:`Session.tick`. Everything the session does outside itself (join a
channel, publish, ask an application hook) goes through a :class:`Backend`.

Semantics follow centrifugal/centrifuge ``client.go`` and Centrifugo's
``internal/client/handler.go``; where this code deliberately differs, the
docstring says so.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from realtime_hub.channels import ChannelRules, HookAnswer, NamespaceOptions

from .budget import (
    COMMAND_BURST,
    COMMAND_RATE,
    MAX_INVALID_TOKENS,
    MAX_JOIN_LEAVE_SUBSCRIBERS,
    CommandBudget,
)
from .codec import (
    Command,
    decode_commands,
    encode_error,
    encode_publication,
    encode_push,
    encode_reply,
)
from .codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_CHANNEL_LIMIT,
    DISCONNECT_CONNECTION_EXPIRED,
    DISCONNECT_INSUFFICIENT_STATE,
    DISCONNECT_INVALID_TOKEN,
    DISCONNECT_NO_PONG,
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_BAD_REQUEST,
    ERROR_EXPIRED,
    ERROR_INTERNAL,
    ERROR_LIMIT_EXCEEDED,
    ERROR_NOT_AVAILABLE,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ERROR_UNKNOWN_CHANNEL,
    ERROR_UNRECOVERABLE_POSITION,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_SERVER,
    Disconnect,
    DisconnectError,
    Error,
    Unsubscribe,
)
from .tokens import (
    ExpiredConnection,
    SubscriptionClaims,
    TokenExpired,
    TokenInvalid,
    TokenMismatch,
    TokenVerifier,
)

logger = logging.getLogger(__name__)

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
class ConnectAuth:
    """An ``authorize_connect`` hook's admission of a client that sent no token."""

    user: str
    #: ``conn_info`` shown to other clients with this client's publications.
    info: Any = None
    #: Unix time the client must refresh by (with a connection token); None: never.
    expire_at: int | None = None
    #: Server-side subscriptions, granted without further checks.
    channels: tuple[str, ...] = ()
    #: Sent to the client in the connect result.
    data: Any = None
    #: For hooks only, never sent.
    meta: Any = None


class Backend(Protocol):
    """What a session needs from outside; one per connection.

    The ``authorize_*`` methods are application hooks (pluggy, first result wins):
    None means no opinion. Any method may raise :class:`Error` (answered to the
    client) or :class:`DisconnectError` (the connection is closed).
    """

    async def authorize_connect(
        self, *, client: str, data: Any, name: str, version: str, headers: Mapping[str, str]
    ) -> ConnectAuth | Error | None:
        """Admit a client without a token (Centrifugo's connect proxy)."""

    async def authorize_subscribe(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        """Decide a subscription no token or user-limited channel decided."""

    async def authorize_publish(
        self, *, client: str, user: str, meta: Any, channel: str, data: Any
    ) -> HookAnswer:
        """Decide a publication before the namespace's options do."""

    async def rpc(self, *, client: str, user: str, meta: Any, method: str, data: Any) -> Any:
        """The ``data`` of the rpc result; raise ``Error(104)`` if no one has ``method``."""

    async def on_send(self, *, client: str, user: str, meta: Any, data: Any) -> None:
        """An asynchronous message from the client (no reply); may be ignored."""

    async def subscribe(self, channel: str, join_leave: bool = False) -> list[str] | None:
        """Start delivering ``channel``'s publications to this connection (and its
        joins and leaves with ``join_leave``); the pushes of those that came while
        joining, to send after the reply (they must not go before it)."""

    async def unsubscribe(self, channel: str) -> None:
        """Stop delivering ``channel``'s publications to this connection (and take it
        out of the channel's presence)."""

    async def join_presence(self, channel: str, info: Mapping[str, Any]) -> None:
        """Put this connection in ``channel``'s presence, shown as ``info`` (ClientInfo)."""

    async def presence(self, channel: str, max_bytes: int | None = None) -> dict[str, Any]:
        """The channel's members as ``ClientInfo`` objects, by client id; with
        ``max_bytes``, ``Error(106)`` when they would take more in the reply."""

    async def presence_stats(self, channel: str) -> tuple[int, int]:
        """Clients and distinct users in the channel."""

    def recovered(self, seconds: float) -> None:
        """A recovery took ``seconds``: from its turn (:meth:`recovery_slot`) to its
        encoded reply (join, read, merge, encode)."""

    def recovery_slot(self) -> AbstractAsyncContextManager[Any]:
        """Held while a subscription joins its stream (a few at a time per process)."""

    async def publish(self, channel: str, data: Any, info: Mapping[str, Any]) -> None:
        """Publish ``data`` to ``channel``'s subscribers; ``info`` is the publisher."""

    async def history(
        self,
        channel: str,
        *,
        limit: int,
        since: tuple[int, str] | None,
        reverse: bool,
        max_bytes: int | None = None,
    ) -> HistoryPage:
        """The channel's stream (as the broker's ``history``); raise ``Error(108)``
        where it keeps none, ``Error(112)`` when ``since`` is in another epoch.

        With ``max_bytes``, the publications stop before the one that would take them
        past it (the first is always in): a reply never grows with what a channel
        keeps."""

    def recovers(self) -> bool:
        """Whether joining then reading the stream gives every publication once."""

    async def subscribe_held(self, channel: str) -> Any:
        """Join ``channel`` with its publications kept aside (see :meth:`release`)."""

    async def release(
        self, channel: str, held: Any, top: tuple[int, str] | None, join_leave: bool = False
    ) -> tuple[list[dict[str, Any]], int]:
        """Go live, once every publication up to ``top`` (the stream's position when
        read) has arrived; the publications kept aside meanwhile (protocol objects,
        with their offsets), and how many this process missed meanwhile."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Publications as the protocol sends them (each a ``Publication`` object with its
    ``offset``), and the stream's position: its last offset and its epoch."""

    publications: list[dict[str, Any]]
    offset: int
    epoch: str
    #: About how many bytes the publications take on the wire.
    size: int = 0


#: What a server-side ``subscribe`` push says of the channel's stream.
SUBSCRIBE_PUSH_FIELDS = ("recoverable", "epoch", "offset", "positioned")

#: Subscribe flag bit: answer 112 rather than ``recovered: false`` (Go's
#: ``subscriptionFlagRejectUnrecovered``).
FLAG_REJECT_UNRECOVERED = 2


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
    #: (:mod:`.budget`: 3013, 3500 past them).
    command_rate: float = COMMAND_RATE
    command_burst: int = COMMAND_BURST
    max_invalid_tokens: int = MAX_INVALID_TOKENS
    #: Subscribers of a channel (in this process) above which joins and leaves are
    #: not pushed (:func:`.budget.join_leave_pushed`); 0: no bound.
    max_join_leave_subscribers: int = MAX_JOIN_LEAVE_SUBSCRIBERS

    def __post_init__(self) -> None:
        if self.max_channels < 1 or self.max_commands < 1:
            raise ValueError("max_channels and max_commands must be at least 1")
        if self.ping_interval != 0 and self.ping_interval < 1:
            raise ValueError("ping_interval is 0 or at least 1 s: clients get whole seconds")
        if min(self.pong_timeout, self.expired_close_delay, self.expired_sub_close_delay) < 0:
            raise ValueError("timeouts cannot be negative")


@dataclass(slots=True)
class _Subscription:
    #: "client" (subscribe command), "token" (connection token) or "server" (other
    #: server-side subscriptions).
    source: str
    expire_at: float | None = None
    info: Any = None
    #: The client tracks this channel's offsets (a recoverable or positioned stream).
    positioned: bool = False


class Session:
    """The protocol state of one connection."""

    # Ten thousand connections hold one each: no per-instance __dict__.
    __slots__ = (
        "_budget", "_commands", "_connected", "_expire_at", "_joining", "_last_ping", "_next_ping",
        "_pong_deadline", "_pushes", "_rand", "_recovering", "_rejected", "_subs", "backend",
        "client_id", "clock", "info", "meta", "options", "rules", "user", "verifier",
    )  # fmt: skip

    #: Each method's handler, by name: one table for every session, not one each.
    _HANDLERS: ClassVar[Mapping[str, str]] = MappingProxyType(
        {
            "connect": "_connect",
            "subscribe": "_subscribe",
            "unsubscribe": "_unsubscribe",
            "publish": "_publish",
            "presence": "_presence",
            "presence_stats": "_presence_stats",
            "history": "_history",
            "rpc": "_rpc",
            "send": "_send",
            "refresh": "_refresh",
            "sub_refresh": "_sub_refresh",
        }
    )

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
    ) -> None:
        self.rules = rules
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
            self.options.command_rate, self.options.command_burst, self.options.max_invalid_tokens
        )
        self._expire_at: float | None = None
        self._subs: dict[str, _Subscription] = {}
        #: Pushes that follow the reply being made (held publications after a subscribe).
        self._pushes: list[str] = []
        #: Channels to enter in presence once the replies went out (:meth:`after_reply`).
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

    # -- frames ---------------------------------------------------------------------

    async def handle_frame(self, text: str, emit: Callable[[str], bool] | None = None) -> list[str]:
        """Run a frame's commands in order; the reply lines to send, in order.

        With ``emit``, each command's reply (and the pushes right after it) goes out
        through it as the command finishes, as Centrifuge in Go does: a channel's
        publications then never go before its subscribe reply, and no frame's replies
        pile up. ``emit`` answering False (the client is closing: its buffer
        overflowed, say) ends the frame: nothing more is worked out for it.

        Raises DisconnectError (carrying the replies not sent yet) when the connection
        must close. After a refused connect the rest of the frame is skipped, as Go
        stops reading then.
        """
        if self._rejected:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        commands = decode_commands(text, self.options.max_commands)
        self._commands.spend(len(commands))  # 3013 past the connection's command budget
        replies: list[str] = []
        for command in commands:
            try:
                reply = await self._dispatch(command)
            except DisconnectError as exc:
                raise DisconnectError(exc.disconnect, [*replies, *exc.replies]) from None
            if reply is not None:
                replies.append(reply)
            if self._pushes:  # publications that go right after that reply
                replies.extend(self._pushes)
                self._pushes.clear()
            if emit is not None and replies:
                lines, replies = replies, []
                if not emit("\n".join(lines)):
                    break
            if self._rejected:
                break
        return replies

    async def _dispatch(self, command: Command) -> str | None:
        if not self._connected and command.method != "connect":
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        if command.method == "":
            self._pong()
            return None
        result: Result
        self._budget = self.options.reply_bytes
        try:
            handler: Callable[[Command], Awaitable[Result]]
            handler = getattr(self, self._HANDLERS[command.method])
            result = await handler(command)
        except Error as exc:
            result = exc
        except DisconnectError:
            raise
        except Exception:
            logger.exception("%s failed for client %s", command.method, self.client_id)
            result = ERROR_INTERNAL
        if command.method == "send":
            return None
        if isinstance(result, Error):
            if command.method == "connect":
                self._rejected = True
            reply = encode_error(command.id, result)
        else:
            reply = encode_reply(command.id, command.method, result)
        if self._recovering is not None:
            if not isinstance(result, Error):  # the time of recoveries, not of failures
                self.backend.recovered(time.perf_counter() - self._recovering)
            self._recovering = None
        return reply

    def _pong(self) -> None:
        if self._last_ping is None:
            # Go: a pong nobody asked for is a client bug.
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        self._last_ping = self._pong_deadline = None

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

    def _unknown_channel(self, channels: Mapping[str, Any]) -> Error | None:
        """102 if a server-side subscription is in an unknown namespace."""
        for channel in channels:
            if self.rules.namespace_of(channel) is None:
                return ERROR_UNKNOWN_CHANNEL
        return None

    async def _may_subscribe(
        self, user: str, meta: Any, channel: str, has_token: bool, data: Any
    ) -> Error | None:
        """The rules' decision, with the hook's answer where the rules ask for it."""
        rules = self.rules
        gate = rules.subscribe_gate(user, channel, has_token)  # once: then the hook, maybe
        answer: HookAnswer = None
        if gate is False:
            answer = await self.backend.authorize_subscribe(
                client=self.client_id, user=user, meta=meta, channel=channel, data=data
            )
        return rules.subscribe_verdict(gate, user, channel, answer)

    @staticmethod
    def _ttl(expire_at: float | None, now: float) -> int:
        """Whole seconds left, as Go counts them (``exp - now.Unix()``): never 0 while
        ``expires`` is true, or the field is left out and centrifuge-python fails."""
        return 0 if expire_at is None else max(int(expire_at) - int(now), 1)

    # -- commands ---------------------------------------------------------------------

    async def _connect(self, command: Command) -> Result:
        """Token, else the hook, else anonymous if allowed, else 3501 (as Go)."""
        if self._connected:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        now = self.clock()
        token = command.get_str("token")
        subs: dict[str, _Subscription] = {}
        sub_data: dict[str, Any] = {}
        user, data = "", None
        expire_at: int | None = None
        info: Any = None
        meta: Any = None
        honour_requested = True  # the client's own list of server-side subscriptions
        if token:
            try:
                claims = self.verifier.verify_connection(token, now)
            except TokenExpired:
                return ERROR_TOKEN_EXPIRED
            except ExpiredConnection as exc:
                return self._unknown_channel(exc.claims.subscriptions) or ERROR_EXPIRED
            except TokenInvalid:
                raise DisconnectError(DISCONNECT_INVALID_TOKEN) from None
            user, info, meta, expire_at = claims.user, claims.info, claims.meta, claims.expire_at
            for channel, grant in claims.subscriptions.items():
                subs[channel] = _Subscription("token", info=grant.info)
                sub_data[channel] = grant.data
        else:
            answer = await self.backend.authorize_connect(
                client=self.client_id,
                data=command.params.get("data"),
                name=command.get_str("name"),
                version=command.get_str("version"),
                headers=command.get_map("headers"),
            )
            if isinstance(answer, Error):
                return answer
            if isinstance(answer, ConnectAuth):
                user, info, meta, data = answer.user, answer.info, answer.meta, answer.data
                expire_at = answer.expire_at
                subs = {channel: _Subscription("server") for channel in answer.channels if channel}
                honour_requested = False  # as Centrifugo after its connect proxy
            elif answer is not None:
                raise TypeError(f"authorize_connect answered {answer!r}")
            elif self.options.allow_anonymous_connect_without_token:
                user = ""
            else:
                raise DisconnectError(DISCONNECT_BAD_REQUEST)  # Go: no credentials
            if expire_at is not None and expire_at <= now:
                return ERROR_EXPIRED
        if error := self._unknown_channel(subs):
            return error
        if honour_requested:
            # What centrifuge-js asks to keep from its last connection: granted where a
            # subscribe without token would be, silently skipped elsewhere (as Centrifugo).
            for channel in command.get_map("subs"):
                if not channel or channel in subs:
                    continue
                if self.rules.namespace_of(channel) is None:
                    raise DisconnectError(DISCONNECT_BAD_REQUEST)
                if await self._may_subscribe(user, meta, channel, False, None) is None:
                    subs[channel] = _Subscription("server")
        if len(subs) > self.options.max_channels:
            raise DisconnectError(DISCONNECT_CHANNEL_LIMIT)
        if expire_at is not None:
            expire_at = min(expire_at, int(now) + MAX_TTL_SECONDS)
        # What the client knew of each (its stream position, to recover from).
        requested = command.get_map("subs")
        streams: dict[str, dict[str, Any]] = {}
        try:
            for channel, sub in subs.items():
                request = Command(0, "subscribe", requested.get(channel) or {})
                joined = await self._join_server_side(channel, sub, request)
                if isinstance(joined, Error):
                    await self._abandon_connect()
                    return joined  # as Go: the connect fails, and the client tries again
                streams[channel] = joined
                self._join_later(channel)
        except Exception:
            await self._abandon_connect()
            raise
        self._connected = True
        self.user, self.info, self.meta, self._expire_at = user, info, meta, expire_at
        interval = self.options.ping_interval
        if interval > 0:
            # The first ping at a random point in [interval/2, interval], as Go does,
            # so clients that reconnected together do not ping together.
            self._next_ping = now + interval * (0.5 + 0.5 * self._rand())
        return {
            "client": self.client_id,
            "version": self.options.version,
            "expires": expire_at is not None,
            "ttl": self._ttl(expire_at, now),
            "data": data,
            "subs": {
                channel: {"data": sub_data.get(channel), **streams[channel]} for channel in subs
            },
            "ping": int(interval),
            "pong": interval > 0 and self.options.pong_timeout > 0,
        }

    async def _abandon_connect(self) -> None:
        """A failed connect: out of the channels it joined, and nothing of theirs sent
        (their held publications, their presence)."""
        await self._drop_all()
        self._pushes.clear()
        self._joining.clear()

    async def _subscribe(self, command: Command) -> Result:
        """Go's checks (name, 105, 106), then Centrifugo's decision order."""
        channel = self._channel(command)
        if command.get_int("type"):
            return ERROR_NOT_AVAILABLE  # map and shared-poll subscriptions
        if command.get_str("delta") not in ("", "fossil"):
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        if error := self.rules.validate_name(channel):
            return error
        if channel in self._subs:
            return ERROR_ALREADY_SUBSCRIBED
        if len(self._subs) >= self.options.max_channels:
            return ERROR_LIMIT_EXCEEDED
        if error := self.rules.check_channel(channel):
            return error
        now = self.clock()
        claims: SubscriptionClaims | None = None
        if token := command.get_str("token"):
            try:
                claims = self.verifier.verify_subscription(
                    token, self.user, channel, self.client_id, now
                )
            except TokenExpired:
                return ERROR_TOKEN_EXPIRED
            except TokenMismatch:
                raise DisconnectError(DISCONNECT_INVALID_TOKEN) from None
            except TokenInvalid:
                self._commands.invalid_token()  # 3500 past a few
                return ERROR_PERMISSION_DENIED
        has_token, data = claims is not None, command.params.get("data")
        if error := await self._may_subscribe(self.user, self.meta, channel, has_token, data):
            return error
        expire_at = claims.expire_at if claims else None
        if expire_at is not None:
            if expire_at <= now:
                return ERROR_EXPIRED
            expire_at = min(expire_at, int(now) + MAX_TTL_SECONDS)
        recovery = self._stream_features(channel, command)
        join_leave = self._pushes_join_leave(channel, command)
        subscription = _Subscription(
            "client", expire_at=expire_at, info=claims.info if claims else None
        )
        stream: dict[str, Any] = {}
        if recovery is None:
            self._pushes.extend(await self.backend.subscribe(channel, join_leave) or ())
            self._subs[channel] = subscription
        else:
            if command.get_bool("recover"):
                self._recovering = time.perf_counter()  # timed up to the encoded reply
            if (
                recovery
                and command.get_bool("recover")
                and not await self._at_top(channel, command)
            ):
                # A real recovery read: it waits its turn (a few at a time).
                async with self.backend.recovery_slot():
                    joined = await self._join_stream(
                        channel, command, recovery, join_leave, subscription
                    )
            else:  # only where the stream stands (or nothing missed): no turn taken
                joined = await self._join_stream(
                    channel, command, recovery, join_leave, subscription
                )
            if isinstance(joined, Error):
                return joined
            stream = joined
        self._join_later(channel)
        return {
            "expires": expire_at is not None,
            "ttl": self._ttl(expire_at, now),
            "data": claims.data if claims else None,
            "was_recovering": command.get_bool("recover") or None,
            **stream,
        }

    async def _join_server_side(
        self, channel: str, subscription: _Subscription, request: Command
    ) -> dict[str, Any] | Error:
        """A server-side subscription: positioned and recovering where the namespace
        forces it (Centrifugo's rule), from ``request``'s ``recover``, ``epoch`` and
        ``offset`` (the connect command's ``subs``); its stream fields. The caller
        enters it in presence once its reply or push is out."""
        options = self.rules.namespace_of(channel)
        recovery: bool | None = None
        forced = options is not None and (options.force_recovery or options.force_positioning)
        if options is not None and forced and self._keeps_history(options):
            recovery = options.force_recovery
        join_leave = self._pushes_join_leave(channel)
        if recovery is None:
            self._pushes.extend(await self.backend.subscribe(channel, join_leave) or ())
            self._subs[channel] = subscription
            return {}
        if recovery and request.get_bool("recover") and not await self._at_top(channel, request):
            async with self.backend.recovery_slot():
                joined = await self._join_stream(
                    channel, request, recovery, join_leave, subscription
                )
        else:
            joined = await self._join_stream(channel, request, recovery, join_leave, subscription)
        if isinstance(joined, Error):
            return joined
        if request.get_bool("recover"):
            joined["was_recovering"] = True
        return joined

    async def _join_stream(
        self,
        channel: str,
        request: Command,
        recovery: bool,
        join_leave: bool,
        subscription: _Subscription,
    ) -> dict[str, Any] | Error:
        """Subscribe where the channel keeps a stream: the result's stream fields (its
        position; with ``recover`` in ``request``, what was missed), or the Error
        that leaves the channel unsubscribed.

        The stream is read after joining. Where joining and reading happen with no
        wait between (one process), every publication is either live or in what is
        read; across processes the publications arriving meanwhile are held aside and
        merged (Centrifuge's PubSubSync). A recovering caller holds a
        :meth:`Backend.recovery_slot` (a plain subscribe reads only the top).
        """
        if self._rejected:
            # Closed while waiting for its turn: nothing to join, nobody to answer.
            return ERROR_INTERNAL
        held = None
        if not self.backend.recovers():
            held = await self.backend.subscribe_held(channel)
        else:
            self._pushes.extend(await self.backend.subscribe(channel, join_leave) or ())
        self._subs[channel] = subscription
        stream: dict[str, Any] | Error = {}
        top = None  # the stream's position as read (offset, epoch)
        try:
            stream, top = await self._stream_state(channel, request, recovery=recovery)
        except Error as error:
            stream = error  # the broker failed on a second read: not subscribed either
        finally:
            released = None
            if held is not None:
                released = await self.backend.release(channel, held, top, join_leave)
        if not isinstance(stream, Error) and released is not None:
            stream = self._merge_held(channel, stream, *released)
        if isinstance(stream, Error):
            self._subs.pop(channel, None)
            await self.backend.unsubscribe(channel)
            return stream
        if stream.get("positioned"):
            subscription.positioned = True
        return stream

    async def _at_top(self, channel: str, request: Command) -> bool:
        """Whether a recovering client missed nothing (its epoch and offset are the
        stream's top): its recovery then reads nothing and waits no turn behind those
        that do. One read of the top; a failure leaves the answer to the real read."""
        try:
            page = await self.backend.history(channel, limit=0, since=None, reverse=False)
        except Error:
            return False
        return page.offset == request.get_int("offset") and page.epoch == request.get_str("epoch")

    @property
    def positioned(self) -> bool:
        """Whether any subscription tracks its stream's offsets (a hole must be told)."""
        return any(sub.positioned for sub in self._subs.values())

    def _merge_held(
        self, channel: str, stream: dict[str, Any], held: list[dict[str, Any]], lost: int
    ) -> dict[str, Any] | Error:
        """Join what arrived while the stream was read to what was read: each once, in
        order, no hole (a hole, or a loss meanwhile, fails the subscribe with 100, and
        the SDK tries again)."""
        if not stream.get("positioned"):
            return stream  # this broker keeps no history after all
        if lost:
            return ERROR_INTERNAL
        recovered = bool(stream.get("recovered"))
        pubs = list(stream.get("publications") or ())
        position = pubs[-1]["offset"] if pubs else stream["offset"]
        later = []
        for pub in sorted(held, key=lambda p: p["offset"]):
            if pub["offset"] <= position:
                continue  # read already, or before where the client stands
            if pub["offset"] != position + 1:
                return ERROR_INTERNAL
            later.append(pub)
            position = pub["offset"]
        if recovered:
            stream["publications"] = pubs + later or None
        else:
            self._pushes.extend(
                encode_publication(channel, pub["data"], pub.get("info"), pub["offset"])
                for pub in later
            )
        return stream

    def _pushes_join_leave(self, channel: str, command: Command | None = None) -> bool:
        """Whether joins and leaves reach this subscriber: Centrifugo's rule (all with
        ``force_push_join_leave``, else those asking ``join_leave`` who may see presence;
        server-side subscriptions only with the force)."""
        options = self.rules.namespace_of(channel)
        if options is None or not options.join_leave:
            return False
        if options.force_push_join_leave:
            return True
        return (
            command is not None
            and command.get_bool("join_leave")
            and self._presence_access(options, channel, subscribing=True)
        )

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

    def _join_later(self, channel: str) -> None:
        if self.rules.presence_of(channel) is not None:
            self._joining.append(channel)

    @property
    def joining(self) -> bool:
        """Whether :meth:`after_reply` has something to do."""
        return bool(self._joining)

    async def after_reply(self) -> None:
        """Enter the channels just subscribed in presence, after the replies were sent:
        the subscriber's own join then follows its subscribe reply (as in Centrifuge)."""
        channels, self._joining = self._joining, []
        for channel in channels:
            await self.enter_presence(channel)

    async def enter_presence(self, channel: str) -> None:
        """Put this client in ``channel``'s presence, if it still is subscribed and the
        channel keeps presence."""
        if channel not in self._subs or self.rules.presence_of(channel) is None:
            return  # unsubscribed since, or nothing to enter
        try:
            await self.backend.join_presence(channel, self._client_info(channel))
        except Exception:
            logger.exception("entering %r in presence for client %s", channel, self.client_id)

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

    def _stream_features(self, channel: str, command: Command) -> bool | None:
        """Whether this subscription recovers (else it is only positioned); None when
        it is neither.

        Centrifuge's rules: a namespace keeping history forces recovery or positioning,
        or allows what the client asks (``recoverable``, ``positioned``), as history
        access does.
        """
        options = self.rules.namespace_of(channel)
        if options is None or not self._keeps_history(options):
            return None
        access = self._history_access(options, channel)
        recovery = options.force_recovery or (
            command.get_bool("recoverable") and (options.allow_recovery or access)
        )
        positioning = options.force_positioning or (
            command.get_bool("positioned") and (options.allow_positioning or access)
        )
        if not (recovery or positioning):
            return None
        return recovery

    async def _stream_state(
        self, channel: str, command: Command, *, recovery: bool
    ) -> tuple[dict[str, Any] | Error, tuple[int, str] | None]:
        """The subscribe result's stream fields (position, what was missed), and the
        stream's position as read.

        A recovery is complete or nothing: the publications after the client's offset
        up to the top, at most ``recovery_limit`` of them, else ``recovered: false``.
        """
        wants_recovery = command.get_bool("recover")
        state: dict[str, Any] = {}
        since = (command.get_int("offset"), command.get_str("epoch"))
        recovered = False
        try:
            if recovery and wants_recovery:
                limit = self.options.recovery_limit
                page = await self.backend.history(
                    channel,
                    limit=limit if limit > 0 else -1,
                    since=since,
                    reverse=False,
                    max_bytes=max(self._budget, 0),
                )
                self._budget -= page.size  # cut short: not all of it, not recovered
                pubs = page.publications
                if not pubs:
                    recovered = page.offset == since[0]
                else:
                    recovered = (
                        pubs[0]["offset"] == since[0] + 1 and pubs[-1]["offset"] == page.offset
                    )
            else:
                page = await self.backend.history(channel, limit=0, since=None, reverse=False)
        except Error as error:
            if error.code == ERROR_NOT_AVAILABLE.code:
                return state, None  # no history here after all: nothing to position by
            if error.code != ERROR_UNRECOVERABLE_POSITION.code:
                return error, None  # the broker failed: the subscribe too (the SDK retries)
            page = await self.backend.history(channel, limit=0, since=None, reverse=False)
        rejected = command.get_int("flag") & FLAG_REJECT_UNRECOVERED
        top = (page.offset, page.epoch)
        if recovery and wants_recovery and not recovered and rejected:
            return ERROR_UNRECOVERABLE_POSITION, top
        state.update(
            positioned=True,
            recoverable=recovery or None,
            epoch=page.epoch,
            offset=since[0] if recovered else page.offset,
        )
        if recovery and wants_recovery:
            state["recovered"] = recovered or None
            state["publications"] = page.publications if recovered else None
        return state, top

    async def _unsubscribe(self, command: Command) -> Result:
        """``{}`` even when not subscribed: clients reconnect on any unsubscribe error."""
        channel = self._channel(command)
        if self._subs.pop(channel, None) is not None:
            await self.backend.unsubscribe(channel)
        return {}

    async def _publish(self, command: Command) -> Result:
        channel = self._channel(command)
        if command.get_int("type"):
            return ERROR_NOT_AVAILABLE  # map publications
        if error := self.rules.validate_name(channel):
            return error  # Go does not check the length here; nobody could read it
        if "data" not in command.params:
            return ERROR_BAD_REQUEST  # Centrifugo refuses empty publications
        if error := self.rules.check_channel(channel):
            return error
        data = command.params["data"]
        answer = await self.backend.authorize_publish(
            client=self.client_id, user=self.user, meta=self.meta, channel=channel, data=data
        )
        if error := self.rules.can_publish(self.user, channel, channel in self._subs, answer):
            return error
        await self.backend.publish(channel, data, self._client_info(channel))
        return {}

    async def _history(self, command: Command) -> Result:
        """A page of the channel's stream, for a client the namespace lets read it."""
        channel = self._channel(command)
        if error := self.rules.check_channel(channel):
            return error
        options = self.rules.namespace_of(channel)
        if options is None or not self._keeps_history(options):
            return ERROR_NOT_AVAILABLE
        if not self._history_access(options, channel):
            return ERROR_PERMISSION_DENIED
        reverse = command.get_bool("reverse")
        raw_since = command.params.get("since")
        since = None
        if isinstance(raw_since, dict):
            offset = raw_since.get("offset")
            epoch = raw_since.get("epoch")
            since = (
                offset if isinstance(offset, int) else 0,
                epoch if isinstance(epoch, str) else "",
            )
            if reverse and since[0] == 0:
                return ERROR_BAD_REQUEST
        limit = command.get_int("limit")
        most = self.options.history_limit
        if most > 0 and (limit < 0 or limit > most):
            limit = most
        page = await self.backend.history(
            channel, limit=limit, since=since, reverse=reverse, max_bytes=self._budget
        )
        return {"publications": page.publications, "epoch": page.epoch, "offset": page.offset}

    def _presence_check(self, command: Command) -> tuple[str, Error | None]:
        channel = self._channel(command)
        if error := self.rules.check_channel(channel):
            return channel, error
        options = self.rules.namespace_of(channel)
        if options is None or not options.presence:
            return channel, ERROR_NOT_AVAILABLE
        if not self._presence_access(options, channel):
            return channel, ERROR_PERMISSION_DENIED
        return channel, None

    async def _presence(self, command: Command) -> Result:
        """Who is in the channel, across processes (ClientInfo by client id)."""
        channel, error = self._presence_check(command)
        if error is not None:
            return error
        return {"presence": await self.backend.presence(channel, self._budget)}

    async def _presence_stats(self, command: Command) -> Result:
        channel, error = self._presence_check(command)
        if error is not None:
            return error
        clients, users = await self.backend.presence_stats(channel)
        return {"num_clients": clients, "num_users": users}

    async def _rpc(self, command: Command) -> Result:
        result = await self.backend.rpc(
            client=self.client_id,
            user=self.user,
            meta=self.meta,
            method=command.get_str("method"),
            data=command.params.get("data"),
        )
        return {"data": result}

    async def _send(self, command: Command) -> Result:
        """Handed to the backend; Go closes with 3508 when no one listens, we don't."""
        await self.backend.on_send(
            client=self.client_id, user=self.user, meta=self.meta, data=command.params.get("data")
        )
        return {}

    async def _refresh(self, command: Command) -> Result:
        """A new connection token: Centrifugo's OnRefresh, then Go's expiry update."""
        token = command.get_str("token")
        if not token:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        now = self.clock()
        expired = False
        try:
            claims = self.verifier.verify_connection(token, now)
        except TokenExpired:
            raise DisconnectError(DISCONNECT_CONNECTION_EXPIRED) from None
        except ExpiredConnection as exc:
            claims, expired = exc.claims, True
        except TokenInvalid:
            raise DisconnectError(DISCONNECT_INVALID_TOKEN) from None
        if claims.user != self.user:
            raise DisconnectError(DISCONNECT_INVALID_TOKEN)
        granted = claims.subscriptions
        if error := self._unknown_channel(granted):
            return error
        from_token = {ch for ch, sub in self._subs.items() if sub.source == "token"}
        if any(ch not in self._subs for ch in granted) or any(
            ch not in granted for ch in from_token
        ):
            # Centrifugo: reconnect to take the token's new server-side subscriptions.
            raise DisconnectError(DISCONNECT_INSUFFICIENT_STATE)
        if expired:
            return ERROR_EXPIRED
        expire_at = claims.expire_at
        if expire_at is not None:
            expire_at = min(expire_at, int(now) + MAX_TTL_SECONDS)
        # A token without expiry ends the expiry (Go keeps the old one: a bug).
        self._expire_at = expire_at
        if claims.info is not None:
            self.info = claims.info
        if claims.meta is not None:
            self.meta = claims.meta
        return {
            "client": self.client_id,  # centrifuge-js takes it from here when expires
            "version": self.options.version,
            "expires": expire_at is not None,
            "ttl": self._ttl(expire_at, now),
        }

    async def _sub_refresh(self, command: Command) -> Result:
        """A new subscription token for a client-side subscription."""
        channel = self._channel(command)
        sub = self._subs.get(channel)
        if sub is None:
            return ERROR_PERMISSION_DENIED
        if sub.source != "client":
            raise DisconnectError(DISCONNECT_BAD_REQUEST)  # Go: server-side refresh expected
        token = command.get_str("token")
        if not token:
            return ERROR_BAD_REQUEST
        now = self.clock()
        try:
            claims = self.verifier.verify_subscription(
                token, self.user, channel, self.client_id, now
            )
        except TokenExpired:
            # Go's SubRefreshReply.Expired: "connection will be closed with
            # DisconnectExpired" (its code path drops it; we keep the contract).
            raise DisconnectError(DISCONNECT_CONNECTION_EXPIRED) from None
        except TokenInvalid:
            raise DisconnectError(DISCONNECT_INVALID_TOKEN) from None
        expire_at: float | None = claims.expire_at
        if expire_at is not None:
            if expire_at < now:
                return ERROR_EXPIRED
            expire_at = min(expire_at, int(now) + MAX_TTL_SECONDS)
        sub.expire_at, sub.info = expire_at, claims.info
        return {"expires": expire_at is not None, "ttl": self._ttl(expire_at, now)}

    # -- the server's own changes -------------------------------------------------------

    async def server_subscribe(
        self, channel: str, *, info: Any = None, data: Any = None
    ) -> str | None:
        """Subscribe on the server's word (server API): the ``subscribe`` push to send.

        None if not connected, already subscribed or at the channel limit (a server
        asking for more than a client may hold is told nothing: it is logged).
        """
        if not self._connected or channel in self._subs:
            return None
        if len(self._subs) >= self.options.max_channels:
            logger.warning("client %s is at its channel limit: not subscribed to %r",
                           self.client_id, channel)  # fmt: skip
            return None
        subscription = _Subscription("server", info=info)
        # Its presence is entered by the caller once the push is out (enter_presence):
        # not through after_reply, which a frame being handled meanwhile may run.
        joined = await self._join_server_side(channel, subscription, Command(0, "subscribe"))
        if isinstance(joined, Error):
            logger.warning("client %s not subscribed to %r: %r", self.client_id, channel, joined)
            return None
        # The Subscribe push: where the stream stands, where the channel keeps one.
        stream = {key: joined[key] for key in SUBSCRIBE_PUSH_FIELDS if key in joined}
        return encode_push(channel, "subscribe", {"data": data, **stream})

    def take_pushes(self) -> list[str]:
        """Pushes that follow a server-side subscribe push (held publications)."""
        pushes, self._pushes = self._pushes, []
        return pushes

    def server_refresh(self, expired: bool, expire_at: int) -> str | None:
        """The server sets this connection's expiry (server API ``refresh``).

        ``expired`` closes it now with 3005 (the SDK reconnects with a new token);
        ``expire_at`` in the future re-arms the expiry, 0 ends it. The ``refresh`` push
        tells the client; None if not connected.
        """
        if not self._connected:
            return None
        now = self.clock()
        if expired or (expire_at and expire_at <= now):
            raise DisconnectError(DISCONNECT_CONNECTION_EXPIRED)
        self._expire_at = min(expire_at, int(now) + MAX_TTL_SECONDS) if expire_at else None
        body = {"expires": self._expire_at is not None, "ttl": self._ttl(self._expire_at, now)}
        return encode_push("", "refresh", body)

    async def server_unsubscribe(
        self, channel: str, reason: Unsubscribe = UNSUBSCRIBE_SERVER
    ) -> str | None:
        """Drop a subscription on the server's word: the ``unsubscribe`` push; None if none.

        ``reason`` 2000 (server API) ends it for the client; 2500 and above make the SDK
        subscribe again (insufficient state: this process missed publications).
        """
        if self._subs.pop(channel, None) is None:
            return None
        await self.backend.unsubscribe(channel)
        return encode_push(channel, "unsubscribe", {"code": reason.code, "reason": reason.reason})

    # -- timers ---------------------------------------------------------------------

    def ping_due(self, now: float) -> str | None:
        """``"{}"`` when a ping is due (and marks it sent), else None.

        Pings go out on their timer whatever the traffic: centrifuge-python only
        counts pings as a sign of life.
        """
        if not self._connected or self._next_ping is None or now < self._next_ping:
            return None
        self._last_ping = now
        self._next_ping = now + self.options.ping_interval
        if self.options.pong_timeout > 0:
            self._pong_deadline = now + self.options.pong_timeout
        return "{}"

    def pong_overdue(self, now: float) -> Disconnect | None:
        """3012 "no pong" once a ping went unanswered for ``pong_timeout``."""
        if self._pong_deadline is not None and now >= self._pong_deadline:
            return DISCONNECT_NO_PONG
        return None

    def expired(self, now: float) -> Disconnect | None:
        """3005 once the connection expired and no refresh came within the grace."""
        if (
            self._connected
            and self._expire_at is not None
            and now >= self._expire_at + self.options.expired_close_delay
        ):
            return DISCONNECT_CONNECTION_EXPIRED
        return None

    async def expire_subscriptions(self, now: float) -> list[str]:
        """Unsubscribe pushes (2501, the client subscribes again) for expired subscriptions."""
        pushes = []
        delay = self.options.expired_sub_close_delay
        for channel, sub in list(self._subs.items()):
            if sub.expire_at is not None and now >= sub.expire_at + delay:
                del self._subs[channel]
                await self.backend.unsubscribe(channel)
                body = {"code": UNSUBSCRIBE_EXPIRED.code, "reason": UNSUBSCRIBE_EXPIRED.reason}
                pushes.append(encode_push(channel, "unsubscribe", body))
        return pushes

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do (Unix time); None: never."""
        if not self._connected:
            return None
        deadlines = [self._next_ping, self._pong_deadline]
        if self._expire_at is not None:
            deadlines.append(self._expire_at + self.options.expired_close_delay)
        delay = self.options.expired_sub_close_delay
        deadlines.extend(
            sub.expire_at + delay for sub in self._subs.values() if sub.expire_at is not None
        )
        return min((d for d in deadlines if d is not None), default=None)

    async def tick(self, now: float) -> list[str]:
        """Run what is due: lines to send, or DisconnectError (3012, 3005)."""
        if disconnect := self.pong_overdue(now) or self.expired(now):
            raise DisconnectError(disconnect)
        lines = await self.expire_subscriptions(now)
        if ping := self.ping_due(now):
            lines.append(ping)
        return lines

    async def close(self) -> None:
        """The connection is gone: leave every channel; later frames get 3501."""
        self._connected, self._rejected = False, True
        self._next_ping = self._last_ping = self._pong_deadline = None
        await self._drop_all()

    async def _drop_all(self) -> None:
        channels, self._subs = list(self._subs), {}
        for channel in channels:
            try:
                await self.backend.unsubscribe(channel)
            except Exception:
                logger.exception("unsubscribing client %s from %s", self.client_id, channel)
