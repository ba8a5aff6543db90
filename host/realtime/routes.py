"""Routes as values, so the host can check them before anything is served."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _check_path(path: str) -> None:
    if not path.startswith("/"):
        raise ValueError(f"route path must start with '/': {path!r}")


@dataclass(frozen=True)
class Route:
    """An HTTP route: ``endpoint`` is a Quart view function."""

    path: str
    endpoint: Callable[..., Awaitable[Any]]
    methods: tuple[str, ...] = ("GET",)

    def __post_init__(self) -> None:
        _check_path(self.path)


@dataclass(frozen=True)
class WebSocketRoute:
    """A WebSocket route: ``endpoint`` is a Quart websocket view function."""

    path: str
    endpoint: Callable[..., Awaitable[Any]]

    def __post_init__(self) -> None:
        _check_path(self.path)


AnyRoute = Route | WebSocketRoute
