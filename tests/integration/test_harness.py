"""The test harness's own rules: reserved ports and polling waits (docs/testing.md)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from ..conftest import eventually, inherited_bind, listening_socket, reserve_port, wait_until


def test_a_reserved_port_is_refused_to_a_plain_bind_and_never_picked_by_the_kernel() -> None:
    port = reserve_port()
    with socket.socket() as other, pytest.raises(OSError, match="in use"):
        other.bind(("127.0.0.1", port))
    picked = set()
    for _ in range(200):
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            picked.add(sock.getsockname()[1])
    assert port not in picked


def test_a_server_binds_a_reserved_port_and_when_it_stops_the_port_refuses() -> None:
    port = reserve_port()
    for _ in range(2):  # started, stopped, started again on the same port
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Hypercorn, Redis
        server.bind(("127.0.0.1", port))
        server.listen()
        with server, socket.create_connection(("127.0.0.1", port), timeout=5):
            server.accept()[0].close()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0  # the reservation never listens


def test_a_listening_socket_beside_a_reservation_takes_the_connections() -> None:
    port = reserve_port()
    listener = listening_socket(port)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        accepted, _ = listener.accept()
        accepted.close()


def test_an_inherited_bind_names_the_descriptor_of_a_listening_socket() -> None:
    bind, port = inherited_bind()
    assert bind.startswith("fd://")
    sock = socket.socket(fileno=int(bind.removeprefix("fd://")))  # as Hypercorn takes it
    with sock, socket.create_connection(("127.0.0.1", port), timeout=5):
        sock.accept()[0].close()


async def test_eventually_returns_the_first_true_value_of_a_sync_or_async_predicate() -> None:
    started = time.monotonic()
    assert await eventually(lambda: time.monotonic() - started > 0.05 and "done") == "done"

    async def ready() -> int:
        await asyncio.sleep(0)
        return 7

    assert await eventually(ready) == 7


async def test_eventually_fails_naming_what_it_waited_for_and_the_last_value() -> None:
    with pytest.raises(AssertionError, match=r"the count not met within 0.05 s: 0"):
        await eventually(lambda: 0, timeout=0.05, message="the count")


def test_wait_until_polls_for_synchronous_tests() -> None:
    values = iter([None, "", "ready"])
    assert wait_until(lambda: next(values), interval=0.001) == "ready"
    with pytest.raises(AssertionError, match="not met within"):
        wait_until(lambda: False, timeout=0.02)
