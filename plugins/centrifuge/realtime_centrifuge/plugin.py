"""The Centrifuge protocol plugin: ``/connection/websocket``, its tokens and its hooks.

Built on the hub (connections, channels, rules) and the broker's public API; it knows
nothing of the raw ``/ws`` plugin, which serves the same channels beside it.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from realtime import ASGIRoute, Host, Option, current_host, hookimpl
from realtime.settings import MAX_BODY_SIZE, WORKERS
from realtime_broker import get_broker
from realtime_broker.plugin import MAX_MESSAGE_SIZE
from realtime_hub import Receive, Send, get_hub
from realtime_hub.plugin import channel_rules

from . import emulation, hooks
from .api import ServerAPI, send_text
from .budget import COMMAND_BURST, COMMAND_RATE, MAX_INVALID_TOKENS, MAX_JOIN_LEAVE_SUBSCRIBERS
from .node import Node
from .session import SessionOptions
from .tokens import TokenSigner, TokenVerifier
from .transport import endpoint
from .uni import uni_routes

log = logging.getLogger("realtime.centrifuge")

EXTENSION_KEY = "realtime_centrifuge.node"
#: Sessions live in the hub; publications, history and presence go through the broker.
REQUIRES = ("hub", "broker")


@hookimpl
def register_hookspecs() -> object:
    return hooks


#: The plugin's settings, declared once: others read them with ``host.setting(...)``.
CENTRIFUGE_PATH = Option(
    "centrifuge_path",
    "/connection/websocket",
    "URL path of the Centrifuge protocol endpoint (centrifuge-js, centrifuge-python...)",
)

CLIENT_CONNECT_TIMEOUT = Option(
    "client_connect_timeout",
    10.0,
    "seconds a Centrifuge client has to send connect before it is closed (3502)",
    type=float,
)

CLIENT_PING_INTERVAL = Option(
    "client_ping_interval",
    25.0,
    "seconds between the Centrifuge protocol's pings (0: none)",
    type=float,
)

CLIENT_PONG_TIMEOUT = Option(
    "client_pong_timeout",
    8.0,
    "seconds a Centrifuge client has to answer a ping before it is closed (3012)",
    type=float,
)

CLIENT_CHANNEL_LIMIT = Option(
    "client_channel_limit",
    128,
    "channels one Centrifuge connection may subscribe to (error 106 past it)",
    type=int,
)

CLIENT_RECOVERY_MAX_PUBLICATION_LIMIT = Option(
    "client_recovery_max_publication_limit",
    300,
    "publications one recovery may replay; more missed gives recovered: false",
    type=int,
)

CLIENT_HISTORY_MAX_PUBLICATION_LIMIT = Option(
    "client_history_max_publication_limit",
    300,
    "publications one history call returns at most (a larger limit is cut)",
    type=int,
)

CLIENT_COMMAND_RATE = Option(
    "client_command_rate",
    COMMAND_RATE,
    "commands a second one Centrifuge connection may send on average (3013 past it; 0: no limit)",
    type=float,
)

CLIENT_COMMAND_BURST = Option(
    "client_command_burst",
    COMMAND_BURST,
    "commands one Centrifuge connection may send at once (never below a full frame)",
    type=int,
)

CLIENT_INVALID_TOKEN_LIMIT = Option(
    "client_invalid_token_limit",
    MAX_INVALID_TOKENS,
    "invalid subscription tokens one Centrifuge connection may send (3500 after)",
    type=int,
)

CLIENT_JOIN_LEAVE_MAX_SUBSCRIBERS = Option(
    "client_join_leave_max_subscribers",
    MAX_JOIN_LEAVE_SUBSCRIBERS,
    "subscribers of a channel in this process above which its joins and leaves "
    "are not pushed (0: no bound)",
    type=int,
)

ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN = Option(
    "allow_anonymous_connect_without_token",
    False,
    "let Centrifuge clients connect with no token and no hook's word, as user ''",
    type=bool,
)

USER_SUBSCRIBE_TO_PERSONAL_CHANNEL = Option(
    "user_subscribe_to_personal_channel",
    False,
    "subscribe each signed-in user's Centrifuge connections server-side to its personal "
    "channel, '#USER' (Centrifugo's option)",
    type=bool,
)

USER_PERSONAL_CHANNEL_NAMESPACE = Option(
    "user_personal_channel_namespace",
    "",
    "namespace of the personal channels ('personal' gives 'personal:#USER'); unset: none",
)

USER_PERSONAL_SINGLE_CONNECTION = Option(
    "user_personal_single_connection",
    False,
    "with personal channels: one connection per user, a new one closing the others "
    "(3504); the personal channel's namespace needs presence",
    type=bool,
)

TOKEN_HMAC_SECRET = Option(
    "token_hmac_secret",
    "",
    "HMAC secret of connection and subscription tokens (HS256/384/512); unset and "
    "no public key: one is made up at start-up, for a single process only",
    secret=True,
)

TOKEN_RSA_PUBLIC_KEY = Option(
    "token_rsa_public_key",
    "",
    "RSA public key (PEM, or a path to a PEM file) verifying RS256/384/512 tokens",
)

TOKEN_ECDSA_PUBLIC_KEY = Option(
    "token_ecdsa_public_key",
    "",
    "ECDSA public key (PEM, or a path to a PEM file) verifying ES256/384/512 tokens",
)

TOKEN_AUDIENCE = Option(
    "token_audience", "", "required aud claim of every token (unset: not checked)"
)

TOKEN_ISSUER = Option("token_issuer", "", "required iss claim of every token (unset: not checked)")

API_KEY = Option(
    "api_key",
    "",
    "key of the server HTTP API (X-API-Key or 'Authorization: apikey KEY'); unset: the API is off",
    secret=True,
)

API_PATH = Option(
    "api_path", "/api", "URL prefix of the server HTTP API: POST {api_path}/publish..."
)


@hookimpl
def register_options() -> list[Option]:
    return [
        CENTRIFUGE_PATH,
        CLIENT_CONNECT_TIMEOUT,
        CLIENT_PING_INTERVAL,
        CLIENT_PONG_TIMEOUT,
        CLIENT_CHANNEL_LIMIT,
        CLIENT_RECOVERY_MAX_PUBLICATION_LIMIT,
        CLIENT_HISTORY_MAX_PUBLICATION_LIMIT,
        CLIENT_COMMAND_RATE,
        CLIENT_COMMAND_BURST,
        CLIENT_INVALID_TOKEN_LIMIT,
        CLIENT_JOIN_LEAVE_MAX_SUBSCRIBERS,
        ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN,
        USER_SUBSCRIBE_TO_PERSONAL_CHANNEL,
        USER_PERSONAL_CHANNEL_NAMESPACE,
        USER_PERSONAL_SINGLE_CONNECTION,
        TOKEN_HMAC_SECRET,
        TOKEN_RSA_PUBLIC_KEY,
        TOKEN_ECDSA_PUBLIC_KEY,
        TOKEN_AUDIENCE,
        TOKEN_ISSUER,
        API_KEY,
        API_PATH,
    ]


def _pem(settings: Mapping[str, Any], option: Option[str]) -> str:
    """A key given inline or as a file path."""
    value = option.get(settings)
    if not value or value.lstrip().startswith("-----BEGIN"):
        return value
    try:
        return Path(value).read_text()
    except OSError as exc:
        raise ValueError(f"{option.flag}: cannot read {value!r}: {exc}") from None


def _configured_keys(settings: Mapping[str, Any]) -> bool:
    keys = (TOKEN_HMAC_SECRET, TOKEN_RSA_PUBLIC_KEY, TOKEN_ECDSA_PUBLIC_KEY)
    return any(option.get(settings) for option in keys)


def _verifier(settings: Mapping[str, Any], secret: str) -> TokenVerifier:
    try:
        return TokenVerifier(
            hmac_secret=secret,
            rsa_public_key=_pem(settings, TOKEN_RSA_PUBLIC_KEY),
            ecdsa_public_key=_pem(settings, TOKEN_ECDSA_PUBLIC_KEY),
            audience=TOKEN_AUDIENCE.get(settings),
            issuer=TOKEN_ISSUER.get(settings),
        )
    except ValueError as exc:
        raise ValueError(f"token keys: {exc}") from None


#: Why tokens are refused when several processes share the broker and no key is set.
SHARED_WITHOUT_SECRET = (
    "no token key is configured, and this process shares its broker with others: a "
    "secret made up here would differ on each of them, so tokens minted by one would fail "
    "on the next. Set token_hmac_secret (REALTIME_TOKEN_HMAC_SECRET), the same everywhere"
)


@hookimpl
def validate(host: Host) -> None:
    settings = host.settings
    if CLIENT_CONNECT_TIMEOUT.get(settings) <= 0:
        raise ValueError("--client-connect-timeout must be positive")
    if CLIENT_CHANNEL_LIMIT.get(settings) < 1:
        raise ValueError("--client-channel-limit must be at least 1")
    floors: tuple[tuple[Option[Any], int], ...] = (
        (CLIENT_COMMAND_RATE, 0),
        (CLIENT_COMMAND_BURST, 1),
        (CLIENT_INVALID_TOKEN_LIMIT, 0),
        (CLIENT_JOIN_LEAVE_MAX_SUBSCRIBERS, 0),
    )
    for option, least in floors:
        if option.get(settings) < least:
            raise ValueError(f"{option.flag} must be at least {least}")
    for limit in (CLIENT_RECOVERY_MAX_PUBLICATION_LIMIT, CLIENT_HISTORY_MAX_PUBLICATION_LIMIT):
        if not 1 <= limit.get(settings) <= 10_000:
            raise ValueError(f"{limit.flag} must be 1 to 10000")
    _session_options(settings)
    _check_personal(settings)
    _verifier(settings, TOKEN_HMAC_SECRET.get(settings))


def _check_personal(settings: Mapping[str, Any]) -> None:
    """Centrifugo's start-up checks: the personal channels' namespace exists, and keeps
    presence for a single connection (its count is how Go tells another is there)."""
    if not USER_SUBSCRIBE_TO_PERSONAL_CHANNEL.get(settings):
        return
    rules = channel_rules(settings)
    namespace = USER_PERSONAL_CHANNEL_NAMESPACE.get(settings)
    options = rules.namespace_of(rules.personal_channel("user", namespace))
    if options is None:
        raise ValueError(f"namespace for user personal channel not found: {namespace}")
    if USER_PERSONAL_SINGLE_CONNECTION.get(settings) and not options.presence:
        raise ValueError("--user-personal-single-connection needs presence in its namespace")


def _session_options(settings: Mapping[str, Any]) -> SessionOptions:
    limit = CLIENT_CHANNEL_LIMIT.get(settings)
    max_commands = max(256, 2 * limit)
    try:
        return SessionOptions(
            max_channels=limit,
            max_commands=max_commands,
            command_rate=CLIENT_COMMAND_RATE.get(settings),
            command_burst=CLIENT_COMMAND_BURST.get(settings),  # at least max_commands
            max_invalid_tokens=CLIENT_INVALID_TOKEN_LIMIT.get(settings),
            max_join_leave_subscribers=CLIENT_JOIN_LEAVE_MAX_SUBSCRIBERS.get(settings),
            ping_interval=CLIENT_PING_INTERVAL.get(settings),
            pong_timeout=CLIENT_PONG_TIMEOUT.get(settings),
            allow_anonymous_connect_without_token=ALLOW_ANONYMOUS_CONNECT_WITHOUT_TOKEN.get(
                settings
            ),
            version=_version(),
            recovery_limit=CLIENT_RECOVERY_MAX_PUBLICATION_LIMIT.get(settings),
            history_limit=CLIENT_HISTORY_MAX_PUBLICATION_LIMIT.get(settings),
            personal_channel_namespace=USER_PERSONAL_CHANNEL_NAMESPACE.get(settings)
            if USER_SUBSCRIBE_TO_PERSONAL_CHANNEL.get(settings)
            else None,
        )
    except ValueError as exc:
        raise ValueError(f"Centrifuge client options: {exc}") from None


def _version() -> str:
    try:
        return version("realtime")
    except PackageNotFoundError:
        return ""


def get_node(host: Host) -> Node:
    """The host's node; LookupError before start-up or after shutdown."""
    node = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(node, Node):
        raise LookupError("the centrifuge plugin is not running")
    return node


def server_api(host: Host) -> ServerAPI | None:
    """The running node's server API, for trusted in-process callers (the admin page):
    its ``call(name, body)`` runs a method with no key check. None while the plugin
    is not started (before start-up, after shutdown, or disabled)."""
    node = host.app.extensions.get(EXTENSION_KEY)
    return node.api if isinstance(node, Node) else None


@hookimpl
def register_routes(host: Host) -> list[ASGIRoute]:
    websocket = endpoint(lambda: get_node(host))

    async def server_api(scope: Any, receive: Receive, send: Send) -> None:
        try:
            node = get_node(host)
        except LookupError:
            await send_text(send, 503, "the server is starting or stopping")
            return
        await node.api(scope, receive, send)

    prefix = host.setting(API_PATH).rstrip("/")
    return [
        ASGIRoute(host.setting(CENTRIFUGE_PATH), websocket, scope_types=("websocket",)),
        *uni_routes(host, lambda: get_node(host)),
        *(ASGIRoute(f"{prefix}/{name}", server_api, ("http",)) for name in ServerAPI.METHODS),
        *emulation.routes(host, lambda: get_node(host)),
    ]


@hookimpl
def startup(host: Host) -> None:
    settings = host.settings
    broker = get_broker(host)
    secret: str = TOKEN_HMAC_SECRET.get(settings)
    refusal = ""
    if not _configured_keys(settings):
        if broker.distributed or WORKERS.get(settings) > 1:
            # Refused where it would bite, not at start-up: the raw /ws needs no token.
            refusal = SHARED_WITHOUT_SECRET
            log.warning("Centrifuge connection tokens are refused: %s", refusal)
        else:
            secret = secrets.token_urlsafe(32)
            log.warning(
                "no token key configured: made up an HMAC secret for this process "
                "(tokens from connection_token() work here only; set token_hmac_secret)"
            )
    node = Node(
        host,
        get_hub(host),
        broker,
        verifier=_verifier(settings, secret),
        signer=TokenSigner(secret) if secret else None,
        signer_missing=refusal
        or "tokens are minted with token_hmac_secret, and only public keys are configured: "
        "mint them where the private key is",
        options=_session_options(host.settings),
        connect_timeout=host.setting(CLIENT_CONNECT_TIMEOUT),
        version=_version(),
        api_key=host.setting(API_KEY),
        max_body_size=host.setting(MAX_BODY_SIZE),
        max_message_size=host.setting(MAX_MESSAGE_SIZE),
        single_connection=host.setting(USER_SUBSCRIBE_TO_PERSONAL_CHANNEL)
        and host.setting(USER_PERSONAL_SINGLE_CONNECTION),
    )
    node.start()
    host.app.extensions[EXTENSION_KEY] = node


@hookimpl
async def shutdown(host: Host) -> None:
    node = host.app.extensions.pop(EXTENSION_KEY, None)
    if isinstance(node, Node):
        await node.close()


# Native functions for drop-in scripts ------------------------------------------------


def _signer() -> TokenSigner:
    node = get_node(current_host())
    if node.signer is None:
        raise RuntimeError(node.signer_missing)
    return node.signer


def connection_token(
    user: str,
    *,
    expire_in: float | None = 3600,
    info: Any = None,
    channels: Sequence[str] = (),
) -> str:
    """A connection JWT for ``user`` ("" for anonymous), for a login script to hand out.

    ``expire_in`` seconds (None: never; the SDK refreshes it through ``getToken``),
    ``info`` shown to others with the user's publications, ``channels`` subscribed
    by the server at connect.
    """
    return _signer().connection_token(
        user, now=time.time(), expire_in=expire_in, info=info, channels=channels
    )


def subscription_token(
    user: str,
    channel: str,
    *,
    expire_in: float | None = 3600,
    info: Any = None,
    data: Any = None,
) -> str:
    """A subscription JWT letting ``user`` into ``channel`` (``$private`` ones included)."""
    return _signer().subscription_token(
        user, channel, now=time.time(), expire_in=expire_in, info=info, data=data
    )


@hookimpl
def register_functions() -> Mapping[str, Callable[..., Any]]:
    return {"connection_token": connection_token, "subscription_token": subscription_token}
