"""Who the client is, and until when: connect, refresh, sub_refresh and the server's
``refresh``.

Apart because these are the commands that read tokens
(:mod:`realtime_centrifuge.tokens`) and set expiries; a connect also joins the
server-side subscriptions it grants, so this part builds on
:class:`.subscribe.Subscribing`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..codec import Command
from ..codes import (
    DISCONNECT_BAD_REQUEST,
    DISCONNECT_CHANNEL_LIMIT,
    DISCONNECT_CONNECTION_EXPIRED,
    DISCONNECT_INSUFFICIENT_STATE,
    DISCONNECT_INVALID_TOKEN,
    ERROR_BAD_REQUEST,
    ERROR_EXPIRED,
    ERROR_PERMISSION_DENIED,
    ERROR_TOKEN_EXPIRED,
    ERROR_UNKNOWN_CHANNEL,
    DisconnectError,
    Error,
)
from ..tokens import ExpiredConnection, TokenExpired, TokenInvalid
from ..wire import Frame
from .backend import ConnectAuth
from .state import Result, Subscription
from .subscribe import Subscribing


class Connecting(Subscribing):
    """The commands that set who the client is and when that expires."""

    __slots__ = ()

    def _unknown_channel(self, channels: Mapping[str, Any]) -> Error | None:
        """102 if a server-side subscription is in an unknown namespace."""
        for channel in channels:
            if self.rules.namespace_of(channel) is None:
                return ERROR_UNKNOWN_CHANNEL
        return None

    async def _connect(self, command: Command) -> Result:
        """Token, else the hook, else anonymous if allowed, else 3501 (as Go)."""
        if self._connected:
            raise DisconnectError(DISCONNECT_BAD_REQUEST)
        now = self.clock()
        token = command.get_str("token")
        subs: dict[str, Subscription] = {}
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
                self._auth_refused()
                return ERROR_TOKEN_EXPIRED
            except ExpiredConnection as exc:
                self._auth_refused()
                return self._unknown_channel(exc.claims.subscriptions) or ERROR_EXPIRED
            except TokenInvalid:
                self._auth_refused()
                raise DisconnectError(DISCONNECT_INVALID_TOKEN) from None
            user, info, meta, expire_at = claims.user, claims.info, claims.meta, claims.expire_at
            for channel, grant in claims.subscriptions.items():
                subs[channel] = Subscription("token", info=grant.info)
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
                self._auth_refused()
                return answer
            if isinstance(answer, ConnectAuth):
                user, info, meta, data = answer.user, answer.info, answer.meta, answer.data
                expire_at = answer.expire_at
                subs = {channel: Subscription("server") for channel in answer.channels if channel}
                honour_requested = False  # as Centrifugo after its connect proxy
            elif answer is not None:
                raise TypeError(f"authorize_connect answered {answer!r}")
            elif self.options.allow_anonymous_connect_without_token:
                user = ""
            else:
                self._auth_refused()
                raise DisconnectError(DISCONNECT_BAD_REQUEST)  # Go: no credentials
            if expire_at is not None and expire_at <= now:
                self._auth_refused()
                return ERROR_EXPIRED
        personal = self.options.personal_channel_namespace
        if personal is not None and user:
            # Centrifugo's user_subscribe_to_personal_channel: a server-side subscription
            # to "#USER" (or "NAMESPACE:#USER"), an unknown namespace failing the connect.
            subs.setdefault(self.rules.personal_channel(user, personal), Subscription("server"))
        if error := self._unknown_channel(subs):
            return error
        if honour_requested:
            # What centrifuge-js asks to keep from its last connection: granted where a
            # subscribe without token would be, silently skipped elsewhere (as Centrifugo).
            asked = command.get_map("subs")
            if len(asked) > self.options.max_channels:
                # More than it may hold: refused before any is asked of the hook (a
                # 64 KB connect names thousands, past the rate commands are held to).
                raise DisconnectError(DISCONNECT_CHANNEL_LIMIT)
            for channel in asked:
                if not channel or channel in subs:
                    continue
                if self.rules.namespace_of(channel) is None:
                    raise DisconnectError(DISCONNECT_BAD_REQUEST)
                if await self._may_subscribe(user, meta, channel, False, None) is None:
                    subs[channel] = Subscription("server")
        if len(subs) > self.options.max_channels:
            raise DisconnectError(DISCONNECT_CHANNEL_LIMIT)
        if expire_at is not None:
            expire_at = self._capped(expire_at, now)
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
            "session": self.session_id or None,  # emulated and one-way connections only
        }

    def _auth_refused(self) -> None:
        """Count a connect refused for its credentials (``realtime_handshakes_total``)."""
        metrics = self.options.metrics
        if metrics is not None:
            metrics.auth_refused()

    async def _abandon_connect(self) -> None:
        """A failed connect: out of the channels it joined, and nothing of theirs sent
        (their held publications, their presence)."""
        await self._drop_all()
        self._pushes.clear()
        self._joining.clear()

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
            expire_at = self._capped(expire_at, now)
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
        if claims.expire_at is not None:
            if claims.expire_at < now:
                return ERROR_EXPIRED
            expire_at = self._capped(claims.expire_at, now)
        sub.expire_at, sub.info = expire_at, claims.info
        return {"expires": expire_at is not None, "ttl": self._ttl(expire_at, now)}

    def server_refresh(self, expired: bool, expire_at: int) -> Frame | None:
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
        self._expire_at = self._capped(expire_at, now) if expire_at else None
        body = {"expires": self._expire_at is not None, "ttl": self._ttl(self._expire_at, now)}
        return self.codec.encode_push("", "refresh", body)
