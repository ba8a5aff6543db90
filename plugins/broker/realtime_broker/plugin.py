"""The broker plugin: ``--broker URL`` picks how broadcasts travel between processes."""

from __future__ import annotations

import logging

from realtime import Host, Option, hookimpl

from .base import Broker
from .metrics import BrokerMetrics
from .presence import PRESENCE_TTL as DEFAULT_PRESENCE_TTL
from .presence import PRESENCE_UPDATE_INTERVAL as DEFAULT_PRESENCE_UPDATE_INTERVAL
from .redis import POSITION_CHECK_INTERVAL as DEFAULT_POSITION_CHECK_INTERVAL
from .state import EXTENSION_KEY, create_broker, get_broker

log = logging.getLogger("realtime.broker")


#: The broker's settings, declared once: others read them with ``host.setting(...)``
#: (or ``OPTION.get(settings)`` where they hold the settings, as a broker does).
BROKER = Option(
    "broker",
    "memory://",
    "where broadcasts travel: memory:// (this process only), redis://HOST:PORT/DB, "
    "redis+cluster://, redis+sentinel://, redis+shards:// or nats:// (docs/scaling.md)",
)

BROKER_TIMEOUT = Option(
    "broker_timeout",
    1.0,
    "seconds before broadcast() gives up on the broker and raises (503)",
    type=float,
)

BROKER_PREFIX = Option("broker_prefix", "realtime", "prefix of the broker's channel and key names")

#: Every publisher's limit: broadcast(), the server API and the Redis envelope.
MAX_MESSAGE_SIZE = Option(
    "max_message_size", 64 * 1024, "largest message broadcast() accepts, bytes", type=int
)

POSITION_CHECK_INTERVAL = Option(
    "position_check_interval",
    DEFAULT_POSITION_CHECK_INTERVAL,
    "seconds between two checks, per channel keeping history with subscribers in "
    "this process, that Redis still has the numbering they stand in (a Redis "
    "restarted without persistence): if not, they are told (insufficient state)",
    type=float,
)

PRESENCE_TTL = Option(
    "presence_ttl",
    DEFAULT_PRESENCE_TTL,
    "seconds a client stays in a channel's presence unless its process renews it: "
    "how late the leaves of a host that died are announced",
    type=float,
)

PRESENCE_UPDATE_INTERVAL = Option(
    "presence_update_interval",
    DEFAULT_PRESENCE_UPDATE_INTERVAL,
    "seconds between two renewals of a process's clients in presence (below --presence-ttl)",
    type=float,
)


@hookimpl
def register_options() -> list[Option]:
    return [
        BROKER,
        BROKER_TIMEOUT,
        BROKER_PREFIX,
        MAX_MESSAGE_SIZE,
        POSITION_CHECK_INTERVAL,
        PRESENCE_TTL,
        PRESENCE_UPDATE_INTERVAL,
    ]


@hookimpl
def validate(host: Host) -> None:
    create_broker(host)


@hookimpl
def startup(host: Host) -> None:
    """The broker's instruments (after the exporter's installation and the fork)."""
    BrokerMetrics(host.telemetry, get_broker(host))


@hookimpl
async def connect(host: Host) -> None:
    """After every plugin's ``startup``: they subscribed and registered their callbacks
    on the broker (made in ``validate``), so one subscription covers their channels."""
    broker = get_broker(host)
    await broker.start()
    log.info("broker: %s", broker.describe())


@hookimpl
async def disconnect(host: Host) -> None:
    broker = host.app.extensions.pop(EXTENSION_KEY, None)
    if broker is not None:
        await broker.close()


@hookimpl
def health(host: Host) -> str | None:
    """The broker's problem, if any: a process that hears no broadcasts should get no clients."""
    broker = host.app.extensions.get(EXTENSION_KEY)
    return broker.problem() if isinstance(broker, Broker) else None
