"""What the Centrifuge protocol and its server API measure, made once per node.

Why a class of its own: every label value comes from a fixed set (the protocol's
:data:`~.codec.METHODS`, the API's methods, ``"unknown"`` for anything else), so
each labelled child is looked up once here, at start-up, and a command costs one
dict lookup and one ``observe``. Nothing is measured per delivered socket.
"""

from __future__ import annotations

from collections.abc import Iterable

from realtime import Instrument, Telemetry

from .codec import METHODS

#: The label value of a method outside the fixed sets (never a client's own string).
UNKNOWN = "unknown"


def _children(instrument: Instrument, names: Iterable[str]) -> dict[str, Instrument]:
    return {name: instrument.labels(name) for name in (*names, UNKNOWN)}


class CentrifugeMetrics:
    """One node's instruments; no-ops while no exporter is installed."""

    __slots__ = ("_api", "_commands", "auth_refusals", "enabled", "published_api",
                 "published_client")  # fmt: skip

    def __init__(self, telemetry: Telemetry, api_methods: Iterable[str]) -> None:
        #: Whether an exporter is installed: sessions time nothing when not.
        self.enabled = telemetry.enabled
        commands = telemetry.histogram(
            "realtime_command_duration_seconds",
            "Centrifuge client commands, from decoded to reply encoded, by method",
            ("method",),
        )
        self._commands = _children(commands, METHODS)
        api = telemetry.histogram(
            "realtime_api_duration_seconds",
            "server API calls, from request to response, by method",
            ("method",),
        )
        self._api = _children(api, api_methods)
        publications = telemetry.counter(
            "realtime_publications_total", "publications made, by who made them", ("source",)
        )
        #: A server API publish, or one channel of a broadcast.
        self.published_api = publications.labels("api")
        #: A client's publish command.
        self.published_client = publications.labels("client")
        handshakes = telemetry.counter(
            "realtime_handshakes_total", "WebSocket handshakes, by outcome", ("result",)
        )
        #: A Centrifuge connect refused for its token or by the connect hook.
        self.auth_refusals = handshakes.labels("auth")

    def command(self, method: str, seconds: float) -> None:
        """A client command took ``seconds``."""
        commands = self._commands
        (commands.get(method) or commands[UNKNOWN]).observe(seconds)

    def auth_refused(self) -> None:
        """A connect was refused for its credentials."""
        self.auth_refusals.inc()

    def api(self, method: str, seconds: float) -> None:
        """A server API call took ``seconds``."""
        api = self._api
        (api.get(method) or api[UNKNOWN]).observe(seconds)
