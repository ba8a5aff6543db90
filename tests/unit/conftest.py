"""The unit tier: no network sockets. A test here that connects or binds one fails.

Unit tests run in seconds with nothing installed beyond the venv (``scripts/test
--fast``); one that needs a server, Redis or a client belongs in tests/integration/.
Unix sockets (asyncio's own self-pipe among them) are allowed: they reach nothing.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

NETWORK = (socket.AF_INET, socket.AF_INET6)


def _refuse(name: str, original: Any) -> Any:
    def guarded(self: socket.socket, address: Any, *args: Any) -> Any:
        if self.family in NETWORK:
            raise AssertionError(
                f"a unit test may not {name} a network socket (it tried {address!r}): "
                "move the test to tests/integration/"
            )
        return original(self, address, *args)

    return guarded


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse, so it is in place before the test's own fixtures are set up."""
    for name in ("connect", "connect_ex", "bind"):
        monkeypatch.setattr(socket.socket, name, _refuse(name, getattr(socket.socket, name)))
