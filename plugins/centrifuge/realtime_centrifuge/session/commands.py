"""The commands that neither connect nor subscribe: publish, presence, presence_stats,
history, rpc and send.

Apart because each is one permission check (the namespace's options, a hook) and
one call to the backend: no state of the session changes.
"""

from __future__ import annotations

from ..codec import Command
from ..codes import ERROR_BAD_REQUEST, ERROR_NOT_AVAILABLE, ERROR_PERMISSION_DENIED, Error
from .state import Result, SessionState


class Commands(SessionState):
    """Publish, presence, history, rpc and send."""

    __slots__ = ()

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
        await self.backend.publish(channel, command.published_data(), self._client_info(channel))
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
