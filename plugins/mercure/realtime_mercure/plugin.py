"""The Mercure plugin: a hub at ``/.well-known/mercure`` speaking draft-dunglas-mercure-07
(the protocol of the 0.x Go hub and of today's clients), over the same channels as
every other protocol: a topic is a channel.

Off until a JWT key is configured (``mercure_jwt_key``, or the publisher's and
subscriber's own), as the Go hub will not start without one.
"""

from __future__ import annotations

from typing import Any

from realtime import Host, Option, hookimpl
from realtime.routes import AnyRoute

from .auth import ALGORITHMS, Verifier

#: Subscriptions live in the hub; updates and history go through the broker.
REQUIRES = ("hub", "broker")

EXTENSION_KEY = "realtime_mercure"

MERCURE_JWT_KEY = Option(
    "mercure_jwt_key",
    "",
    "the key of publishers' and subscribers' JWTs (HMAC secret, or a PEM public key "
    "for RS/ES/PS algorithms); turns the Mercure hub at /.well-known/mercure on",
    secret=True,
)
MERCURE_PUBLISHER_JWT_KEY = Option(
    "mercure_publisher_jwt_key", "", "publishers' JWT key (else mercure_jwt_key)", secret=True
)
MERCURE_SUBSCRIBER_JWT_KEY = Option(
    "mercure_subscriber_jwt_key", "", "subscribers' JWT key (else mercure_jwt_key)", secret=True
)
MERCURE_JWT_ALGORITHM = Option(
    "mercure_jwt_algorithm",
    "HS256",
    "the algorithm Mercure JWTs are signed with (never taken from the token)",
    choices=ALGORITHMS,
)
MERCURE_ANONYMOUS = Option(
    "mercure_anonymous",
    False,
    "let subscribers without a JWT receive public updates",
    type=bool,
)
MERCURE_CORS_ORIGINS = Option(
    "mercure_cors_origins",
    "",
    "origins allowed to use the hub from a browser across origins, space-separated "
    "(* for any, answered without credentials); the cookie works across origins, and "
    "authorizes a publish, from origins listed by name only",
)
MERCURE_HEARTBEAT = Option(
    "mercure_heartbeat",
    40.0,
    "seconds between two heartbeat comments on every subscription (0: none)",
    type=float,
)
MERCURE_MAX_TOPICS = Option(
    "mercure_max_topics", 32, "topic selectors one subscription may have", type=int
)
MERCURE_FOREIGN_UPDATES = Option(
    "mercure_foreign_updates",
    "private",
    "how Mercure subscribers see what other protocols publish on a topic's channel "
    "(scripts' broadcast(), the server APIs): private (only to a JWT whose "
    "mercure.subscribe matches the channel) or public",
    choices=("private", "public"),
)
MERCURE_HISTORY_SIZE = Option(
    "mercure_history_size",
    0,
    "updates kept per topic for Last-Event-ID replay, on channels the [channel] rules "
    "know no namespace of (such as URL topics); 0: none kept",
    type=int,
)
MERCURE_HISTORY_TTL = Option(
    "mercure_history_ttl", 300.0, "seconds a kept update stays in history", type=float
)
MERCURE_PUBLISH_RATE = Option(
    "mercure_publish_rate",
    100.0,
    "publishes per second one address may make, in bursts of as many (0: no limit)",
    type=float,
)

OPTIONS: list[Option[Any]] = [
    MERCURE_JWT_KEY,
    MERCURE_PUBLISHER_JWT_KEY,
    MERCURE_SUBSCRIBER_JWT_KEY,
    MERCURE_JWT_ALGORITHM,
    MERCURE_ANONYMOUS,
    MERCURE_CORS_ORIGINS,
    MERCURE_HEARTBEAT,
    MERCURE_MAX_TOPICS,
    MERCURE_FOREIGN_UPDATES,
    MERCURE_HISTORY_SIZE,
    MERCURE_HISTORY_TTL,
    MERCURE_PUBLISH_RATE,
]


def enabled(host: Host) -> bool:
    return any(
        host.setting(option)
        for option in (MERCURE_JWT_KEY, MERCURE_PUBLISHER_JWT_KEY, MERCURE_SUBSCRIBER_JWT_KEY)
    )


def config_of(host: Host) -> Any:
    from realtime_broker.plugin import MAX_MESSAGE_SIZE

    from .hub import Config

    common = host.setting(MERCURE_JWT_KEY)
    algorithm = host.setting(MERCURE_JWT_ALGORITHM)
    return Config(
        publisher=Verifier(host.setting(MERCURE_PUBLISHER_JWT_KEY) or common, algorithm),
        subscriber=Verifier(host.setting(MERCURE_SUBSCRIBER_JWT_KEY) or common, algorithm),
        anonymous=host.setting(MERCURE_ANONYMOUS),
        cors_origins=tuple(host.setting(MERCURE_CORS_ORIGINS).replace(",", " ").split()),
        heartbeat=host.setting(MERCURE_HEARTBEAT),
        max_topics=host.setting(MERCURE_MAX_TOPICS),
        foreign_private=host.setting(MERCURE_FOREIGN_UPDATES) == "private",
        publish_rate=host.setting(MERCURE_PUBLISH_RATE),
        max_message_size=host.setting(MAX_MESSAGE_SIZE),
    )


@hookimpl
def register_options() -> list[Option[Any]]:
    return OPTIONS


@hookimpl
def validate(host: Host) -> None:
    if host.setting(MERCURE_HEARTBEAT) < 0:
        raise ValueError("--mercure-heartbeat must be 0 (none) or positive")
    if not 1 <= host.setting(MERCURE_MAX_TOPICS) <= 1000:
        raise ValueError("--mercure-max-topics must be 1 to 1000")
    if host.setting(MERCURE_HISTORY_SIZE) < 0 or host.setting(MERCURE_HISTORY_TTL) <= 0:
        raise ValueError("--mercure-history-size must be 0 or more, --mercure-history-ttl positive")
    if host.setting(MERCURE_PUBLISH_RATE) < 0:
        raise ValueError("--mercure-publish-rate must be 0 (no limit) or positive")


@hookimpl
def register_routes(host: Host) -> list[AnyRoute]:
    from realtime import ASGIRoute

    from .hub import PATH

    if not enabled(host):
        return []
    return [ASGIRoute(PATH, _Lazy(host), ("http",))]


class _Lazy:
    """The endpoint before startup made the node (routes are collected first)."""

    def __init__(self, host: Host) -> None:
        self.host = host

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        from .hub import reply

        node = self.host.app.extensions.get(EXTENSION_KEY)
        if node is None:
            await reply(send, 503, "Service Unavailable")
            return
        await node(scope, receive, send)


@hookimpl
def startup(host: Host) -> None:
    if not enabled(host):
        return
    from realtime_broker import get_broker
    from realtime_hub import get_hub

    from .hub import MercureNode
    from .wire import TEMPLATES

    node = MercureNode(host, config_of(host))
    host.app.extensions[EXTENSION_KEY] = node
    node.start()
    size = host.setting(MERCURE_HISTORY_SIZE)
    if size > 0:
        broker = get_broker(host)
        rules = get_hub(host).rules
        ttl = host.setting(MERCURE_HISTORY_TTL)
        before = broker.history_policy
        kept = (size, ttl)

        def history_policy(channel: str) -> tuple[int, float] | None:
            """The [channel] rules' history first; Mercure's for topics they know no
            namespace of (a URL's ``https:``) and for the template channel."""
            found = before(channel) if before is not None else None
            if found is not None:
                return found
            if channel == TEMPLATES or rules.namespace_of(channel) is None:
                return kept
            return None

        broker.history_policy = history_policy


@hookimpl
async def shutdown(host: Host) -> None:
    node = host.app.extensions.pop(EXTENSION_KEY, None)
    if node is not None:
        await node.stop()
