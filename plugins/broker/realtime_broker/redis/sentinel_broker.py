"""The ``redis+sentinel://`` entry point: :class:`.broker.RedisBroker`, whose clients
follow the master the Sentinels name (:mod:`.sentinel`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .broker import RedisBroker
from .sentinel import describe, parse


class SentinelBroker(RedisBroker):
    """``redis+sentinel://[[user]:password@]host:26379[,host:26380...]/MASTER[/DB]``."""

    def __init__(self, url: str, settings: Mapping[str, Any]) -> None:
        parse(url)  # a malformed URL fails at start-up, not in the background
        super().__init__(url, settings)

    def describe(self) -> str:
        return describe(self.url)
