"""Subscriptions: the subscribe command, server-side subscriptions, and the streams
they join (positioning, recovery, the publications held while one is read).

Apart from the other commands because this is where ordering is won or lost: a
channel's publications must never go before its subscribe reply, a recovery must
give every missed publication once, in order, or fail, and its read waits its turn
(:meth:`Backend.recovery_slot`) only when it has something to read.
"""

from __future__ import annotations

import time
from typing import Any

from realtime_hub.channels import HookAnswer

from ..codec import Command
from ..codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_INVALID_TOKEN,
    ERROR_ALREADY_SUBSCRIBED,
    ERROR_EXPIRED,
    ERROR_INTERNAL,
    ERROR_LIMIT_EXCEEDED,
    ERROR_NOT_AVAILABLE,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ERROR_UNRECOVERABLE_POSITION,
    UNSUBSCRIBE_EXPIRED,
    UNSUBSCRIBE_SERVER,
    DisconnectError,
    Error,
    Unsubscribe,
)
from ..tokens import SubscriptionClaims, TokenExpired, TokenInvalid, TokenMismatch
from ..wire import Frame
from .state import Result, SessionState, Subscription, logger

#: What a server-side ``subscribe`` push says of the channel's stream.
SUBSCRIBE_PUSH_FIELDS = ("recoverable", "epoch", "offset", "positioned")

#: Subscribe flag bit: answer 112 rather than ``recovered: false`` (Go's
#: ``subscriptionFlagRejectUnrecovered``).
FLAG_REJECT_UNRECOVERED = 2


class Subscribing(SessionState):
    """Joining and leaving channels, on the client's word or the server's."""

    __slots__ = ()

    @property
    def positioned(self) -> bool:
        """Whether any subscription tracks its stream's offsets (a hole must be told)."""
        return any(sub.positioned for sub in self._subs.values())

    @property
    def joining(self) -> bool:
        """Whether :meth:`after_reply` has something to do."""
        return bool(self._joining)

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
            expire_at = self._capped(expire_at, now)
        recovery = self._stream_features(channel, command)
        join_leave = self._pushes_join_leave(channel, command)
        subscription = Subscription(
            "client", expire_at=expire_at, info=claims.info if claims else None
        )
        stream: dict[str, Any] = {}
        if recovery is None:
            self._pushes.extend(await self.backend.subscribe(channel, join_leave) or ())
            self._subs[channel] = subscription
        else:
            if self._wants_recovery(channel, command):
                self._recovering = time.perf_counter()  # timed up to the encoded reply
            joined = await self._join_in_turn(channel, command, recovery, join_leave, subscription)
            if isinstance(joined, Error):
                return joined
            stream = joined
        self._join_later(channel)
        return {
            "expires": expire_at is not None,
            "ttl": self._ttl(expire_at, now),
            "data": claims.data if claims else None,
            # Go's: the client asked, or the namespace recovers for it (auto_cache_recover).
            "was_recovering": command.get_bool("recover")
            or (bool(recovery) and self._wants_recovery(channel, command))
            or None,
            **stream,
        }

    async def _join_server_side(
        self, channel: str, subscription: Subscription, request: Command
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
        joined = await self._join_in_turn(channel, request, recovery, join_leave, subscription)
        if isinstance(joined, Error):
            return joined
        if request.get_bool("recover") or (recovery and self._wants_recovery(channel, request)):
            joined["was_recovering"] = True
        return joined

    async def _join_in_turn(
        self,
        channel: str,
        request: Command,
        recovery: bool,
        join_leave: bool,
        subscription: Subscription,
    ) -> dict[str, Any] | Error:
        """:meth:`_join_stream`, in a recovery slot when it reads what was missed (a
        few at a time); only where the stream stands, or nothing missed: no turn."""
        reads_missed = recovery and self._wants_recovery(channel, request)
        if (
            reads_missed
            and not self._cache_mode(channel)
            and not await self._at_top(channel, request)
        ):
            # (A cache recovery reads one publication: no turn to wait for.)
            async with self.backend.recovery_slot():
                return await self._join_stream(channel, request, recovery, join_leave, subscription)
        return await self._join_stream(channel, request, recovery, join_leave, subscription)

    async def _join_stream(
        self,
        channel: str,
        request: Command,
        recovery: bool,
        join_leave: bool,
        subscription: Subscription,
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
        if not isinstance(stream, Error) and self._cache_mode(channel):
            stream = self._latest_only(stream)
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
                self.codec.encode_publication(channel, pub["data"], pub.get("info"), pub["offset"])
                for pub in later
            )
        return stream

    def _cache_mode(self, channel: str) -> bool:
        """Whether the channel recovers in Centrifugo's cache mode (the latest only)."""
        options = self.rules.namespace_of(channel)
        return options is not None and options.cache_recovery

    def _wants_recovery(self, channel: str, command: Command) -> bool:
        """The client asks to recover (``recover``), or the namespace recovers every
        subscription in cache mode (``auto_cache_recover``)."""
        if command.get_bool("recover"):
            return True
        options = self.rules.namespace_of(channel)
        return options is not None and options.auto_cache_recover

    @staticmethod
    def _latest_only(stream: dict[str, Any]) -> dict[str, Any]:
        """A cache recovery gives the latest publication only (publications held while
        it was read may have followed it), and its offset as the position (Go's)."""
        pubs = stream.get("publications")
        if pubs:
            latest = pubs[-1]
            stream["publications"] = [latest]
            stream["offset"] = max(stream.get("offset") or 0, latest["offset"])
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
        wants_recovery = self._wants_recovery(channel, command)
        state: dict[str, Any] = {}
        since = (command.get_int("offset"), command.get_str("epoch"))
        if recovery and wants_recovery and self._cache_mode(channel):
            return await self._cache_state(channel, since)
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

    async def _cache_state(
        self, channel: str, since: tuple[int, str]
    ) -> tuple[dict[str, Any] | Error, tuple[int, str] | None]:
        """A cache recovery (Centrifugo's ``isCacheRecovered``): the latest
        publication, unless the client already stands there; ``recovered`` when the
        latest kept is the stream's top (nothing kept: when the client is at the top).
        Never 112: a position in another epoch just gets the latest."""
        try:
            page = await self.backend.history(
                channel, limit=1, since=None, reverse=True, max_bytes=max(self._budget, 0)
            )
        except Error as error:
            if error.code == ERROR_NOT_AVAILABLE.code:
                return {}, None
            return error, None
        self._budget -= page.size
        top = (page.offset, page.epoch)
        same = since[0] > 0 and since == top
        latest = page.publications[0] if page.publications else None
        recovered = same if latest is None else latest["offset"] == page.offset
        state: dict[str, Any] = {
            "positioned": True,
            "recoverable": True,
            "epoch": page.epoch,
            "offset": page.offset,
            "recovered": recovered or None,
            "publications": [latest] if latest is not None and recovered and not same else None,
        }
        return state, top

    # -- presence, once the reply is out --------------------------------------------------

    def _join_later(self, channel: str) -> None:
        if self.rules.presence_of(channel) is not None:
            self._joining.append(channel)

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

    # -- leaving ----------------------------------------------------------------------------

    async def _unsubscribe(self, command: Command) -> Result:
        """``{}`` even when not subscribed: clients reconnect on any unsubscribe error."""
        channel = self._channel(command)
        if self._subs.pop(channel, None) is not None:
            await self.backend.unsubscribe(channel)
        return {}

    async def expire_subscriptions(self, now: float) -> list[Frame]:
        """Unsubscribe pushes (2501, the client subscribes again) for expired subscriptions."""
        pushes: list[Frame] = []
        delay = self.options.expired_sub_close_delay
        for channel, sub in list(self._subs.items()):
            if sub.expire_at is not None and now >= sub.expire_at + delay:
                del self._subs[channel]
                await self.backend.unsubscribe(channel)
                body = {"code": UNSUBSCRIBE_EXPIRED.code, "reason": UNSUBSCRIBE_EXPIRED.reason}
                pushes.append(self.codec.encode_push(channel, "unsubscribe", body))
        return pushes

    # -- the server's word --------------------------------------------------------------------

    async def server_subscribe(
        self,
        channel: str,
        *,
        info: Any = None,
        data: Any = None,
        recover_since: tuple[int, str] | None = None,
    ) -> Frame | None:
        """Subscribe on the server's word (server API): the ``subscribe`` push to send.

        None if not connected, already subscribed or at the channel limit (a server
        asking for more than a client may hold is told nothing: it is logged). With
        ``recover_since`` (offset, epoch) where the channel recovers, what was missed
        since follows the push as ``pub`` pushes (:meth:`take_pushes`); Go's push
        carries the position only.
        """
        if not self._connected or channel in self._subs:
            return None
        if len(self._subs) >= self.options.max_channels:
            logger.warning("client %s is at its channel limit: not subscribed to %r",
                           self.client_id, channel)  # fmt: skip
            return None
        subscription = Subscription("server", info=info)
        # Its presence is entered by the caller once the push is out (enter_presence):
        # not through after_reply, which a frame being handled meanwhile may run.
        request = {}
        if recover_since is not None:
            request = {"recover": True, "offset": recover_since[0], "epoch": recover_since[1]}
        joined = await self._join_server_side(
            channel, subscription, Command(0, "subscribe", request)
        )
        if isinstance(joined, Error):
            logger.warning("client %s not subscribed to %r: %r", self.client_id, channel, joined)
            return None
        if recovered := joined.get("publications"):
            # Before what arrived while joining, which came after them.
            self._pushes[:0] = [
                self.codec.encode_publication(channel, pub["data"], pub.get("info"), pub["offset"])
                for pub in recovered
            ]
        # The Subscribe push: where the stream stands, where the channel keeps one.
        stream = {key: joined[key] for key in SUBSCRIBE_PUSH_FIELDS if key in joined}
        return self.codec.encode_push(channel, "subscribe", {"data": data, **stream})

    def take_pushes(self) -> list[Frame]:
        """Pushes that follow a server-side subscribe push (held publications)."""
        pushes, self._pushes = self._pushes, []
        return pushes

    async def server_unsubscribe(
        self, channel: str, reason: Unsubscribe = UNSUBSCRIBE_SERVER
    ) -> Frame | None:
        """Drop a subscription on the server's word: the ``unsubscribe`` push; None if none.

        ``reason`` 2000 (server API) ends it for the client; 2500 and above make the SDK
        subscribe again (insufficient state: this process missed publications).
        """
        if self._subs.pop(channel, None) is None:
            return None
        await self.backend.unsubscribe(channel)
        body = {"code": reason.code, "reason": reason.reason}
        return self.codec.encode_push(channel, "unsubscribe", body)
