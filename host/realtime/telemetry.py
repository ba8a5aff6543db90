"""Instruments any plugin counts and times with; the metrics plugin exports them, or nothing.

Why a neutral layer: the hub, the protocols and the broker declare what they measure
without importing prometheus-client (whose single- or multi-process mode is chosen
when it is first imported, which must happen in each worker after the fork), and with
no exporter installed every instrument is a no-op costing one method call.

Each host has its own :class:`Telemetry` (``host.telemetry``): nothing is shared
between two apps in one process. A plugin makes its instruments in ``startup`` (the
exporter is installed earlier, in ``validate``), keeps them, and calls them where its
work happens: per fan-out or per command, never per delivered socket. Counts a plugin
already keeps (the hub's stats) are better read by a :meth:`Telemetry.sampler`, which
runs before every export and about once a second, off every hot path.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from .limits import LogThrottle

log = logging.getLogger("realtime.telemetry")

Kind = Literal["counter", "gauge", "histogram"]

#: Seconds, for durations from a fraction of a millisecond (a command) to a script's 30 s.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class Instrument(Protocol):
    """prometheus-client's calling convention, so its metrics are instruments as they are."""

    def labels(self, *values: str) -> Instrument: ...
    def inc(self, amount: float = 1) -> None: ...
    def dec(self, amount: float = 1) -> None: ...
    def set(self, value: float) -> None: ...
    def observe(self, amount: float) -> None: ...


@dataclass(frozen=True)
class Spec:
    """What a plugin declares: a kind, a Prometheus name, help text and label names."""

    kind: Kind
    name: str
    help: str
    labels: tuple[str, ...] = ()
    #: Histograms only; ``None``: :data:`DURATION_BUCKETS`.
    buckets: tuple[float, ...] | None = None
    #: Gauges with several worker processes: how their values combine
    #: (prometheus-client's multiprocess modes: ``livesum``, ``liveall``, ``max``...).
    aggregate: str = "livesum"


class Exporter(Protocol):
    """Makes real instruments (the metrics plugin's is backed by prometheus-client)."""

    def make(self, spec: Spec) -> Instrument: ...


class _Noop:
    """Every instrument while no exporter is installed."""

    __slots__ = ()

    def labels(self, *values: str) -> Instrument:
        return self

    def inc(self, amount: float = 1) -> None:
        pass

    def dec(self, amount: float = 1) -> None:
        pass

    def set(self, value: float) -> None:
        pass

    def observe(self, amount: float) -> None:
        pass


NOOP: Instrument = _Noop()


class Telemetry:
    """One host's instruments: declared by name once, shared by whoever declares the same."""

    def __init__(self) -> None:
        self._exporter: Exporter | None = None
        self._made: dict[str, tuple[Spec, Instrument]] = {}
        self._samplers: list[Callable[[], None]] = []
        self._throttle = LogThrottle()

    @property
    def enabled(self) -> bool:
        """Whether an exporter is installed (else instruments are no-ops)."""
        return self._exporter is not None

    def install(self, exporter: Exporter) -> None:
        """Export from now on; before any instrument is made (in a ``validate`` hook)."""
        if self._exporter is not None:
            raise RuntimeError("an exporter is installed already")
        if self._made:
            raise RuntimeError(
                f"install the exporter before instruments are made ({next(iter(self._made))})"
            )
        self._exporter = exporter

    def specs(self) -> list[Spec]:
        """Every instrument declared so far, for listings and tests."""
        return [spec for spec, _ in self._made.values()]

    def counter(self, name: str, help: str, labels: tuple[str, ...] = ()) -> Instrument:
        """A count that only grows: ``name`` ends in ``_total``."""
        return self.make(Spec("counter", name, help, labels))

    def gauge(
        self, name: str, help: str, labels: tuple[str, ...] = (), aggregate: str = "livesum"
    ) -> Instrument:
        """A value that goes up and down (set it from a :meth:`sampler`)."""
        return self.make(Spec("gauge", name, help, labels, aggregate=aggregate))

    def histogram(
        self,
        name: str,
        help: str,
        labels: tuple[str, ...] = (),
        buckets: tuple[float, ...] | None = None,
    ) -> Instrument:
        """A distribution, durations in seconds: ``name`` ends in ``_seconds``."""
        return self.make(Spec("histogram", name, help, labels, buckets))

    def make(self, spec: Spec) -> Instrument:
        """The instrument for ``spec``; the same one for a second identical declaration
        (two plugins counting handshakes), a ``ValueError`` for a conflicting one."""
        if spec.kind == "counter" and not spec.name.endswith("_total"):
            raise ValueError(f"counter {spec.name!r} must end in _total")
        made = self._made.get(spec.name)
        if made is not None:
            known, instrument = made
            if known != Spec(spec.kind, spec.name, known.help, spec.labels, spec.buckets,
                             spec.aggregate):  # fmt: skip
                raise ValueError(f"{spec.name!r} is declared twice, differently: {known} / {spec}")
            return instrument
        instrument = NOOP if self._exporter is None else self._exporter.make(spec)
        self._made[spec.name] = (spec, instrument)
        return instrument

    def sampler(self, sample: Callable[[], None]) -> None:
        """Call ``sample`` before every export and about once a second (with several
        workers, another worker's scrape sees this one's last sample): it sets gauges
        and adds to counters what a plugin's own running counts grew by."""
        self._samplers.append(sample)

    def sample(self) -> None:
        """Run every sampler (the exporter calls this); one failing does not stop the rest."""
        for sample in self._samplers:
            try:
                sample()
            except Exception:
                held = self._throttle.allow(getattr(sample, "__qualname__", repr(sample)))
                if held is not None:
                    suffix = self._throttle.suffix(held)
                    log.exception("telemetry sampler %r failed%s", sample, suffix)
