"""Hooks an application implements to decide instead of a token, as Centrifugo's proxies do.

Implement any of them in a plugin module (``@realtime.hookimpl``), taking only the
arguments you need. Implementations may be ``async``. They are asked in plugin order
(``tryfirst`` first) and the first that answers anything but ``None`` decides; the
others are not asked. ``host`` is the :class:`realtime.Host`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from realtime import hookspec


@hookspec
def authorize_connect(
    host: Any, client: str, data: Any, name: str, version: str, headers: Mapping[str, str]
) -> Any:
    """Admit a client that connects without a token (Centrifugo's connect proxy).

    ``headers`` are the WebSocket handshake's (lower-case names, cookies included),
    with the connect command's own ``headers`` over them. Answer a
    :class:`realtime_centrifuge.ConnectAuth` to admit, an
    :class:`realtime_centrifuge.Error` to refuse with it, or ``None`` for no opinion.
    """


@hookspec
def authorize_subscribe(
    host: Any, client: str, user: str, meta: Any, channel: str, data: Any
) -> Any:
    """Decide a subscribe no token decided: True, False (103), an Error, or None.

    Asked only where the hub's channel policy leaves the decision open (a decision
    that is not ``final``, docs/channels.md): not for ``$`` channels, user-limited
    channels or subscriptions with a valid token.
    """


@hookspec
def authorize_publish(host: Any, client: str, user: str, meta: Any, channel: str, data: Any) -> Any:
    """Decide a client's publish before the namespace options: True, False, an Error, or None.

    Asked once the channel's name and namespace are fine, as Centrifugo does.
    """


@hookspec
def rpc(host: Any, client: str, user: str, meta: Any, method: str, data: Any) -> Any:
    """Answer a client's ``rpc``: the result's ``data``; None if ``method`` is not yours.

    With no answer the client gets 104 "method not found". Raise an Error (codes
    400-1999 for your own) to refuse.
    """


@hookspec
def client_message(host: Any, client: str, user: str, meta: Any, data: Any) -> Any:
    """A client's asynchronous ``send`` (no reply expected); every implementation is told."""
