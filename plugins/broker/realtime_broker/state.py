"""Choosing a broker by URL scheme, and where a host keeps it."""

from __future__ import annotations

from importlib.metadata import entry_points

from realtime import Host
from realtime.settings import WORKERS

from .base import Broker, BrokerUnavailable

ENTRY_POINT_GROUP = "realtime.brokers"
EXTENSION_KEY = "realtime_broker.broker"


def broker_classes() -> dict[str, type[Broker]]:
    """Brokers by URL scheme, from the ``realtime.brokers`` entry points."""
    found: dict[str, type[Broker]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Broker)):
            raise TypeError(f"broker entry point {ep.name!r} ({ep.value}) is not a Broker")
        found[ep.name] = cls
    return found


def create_broker(host: Host) -> Broker:
    from .plugin import BROKER  # not at the top: the plugin module imports this one

    url = host.setting(BROKER)
    scheme = url.partition("://")[0].lower()
    classes = broker_classes()
    if scheme not in classes:
        known = ", ".join(f"{name}://" for name in sorted(classes))
        raise ValueError(f"no broker for {scheme!r} URLs (--broker {url}); installed: {known}")
    broker = classes[scheme](url, host.settings)
    workers = host.setting(WORKERS)
    if workers > 1 and not broker.distributed:
        raise ValueError(
            f"--workers {workers} needs a broker shared by every worker, and {scheme}:// "
            "reaches only its own process: pass --broker redis://HOST:6379/0"
        )
    host.app.extensions[EXTENSION_KEY] = broker
    return broker


def get_broker(host: Host) -> Broker:
    """The host's broker; raises :class:`BrokerUnavailable` if the plugin did not create one."""
    broker = host.app.extensions.get(EXTENSION_KEY)
    if not isinstance(broker, Broker):
        raise BrokerUnavailable("no broker is configured (is the broker plugin disabled?)")
    return broker
