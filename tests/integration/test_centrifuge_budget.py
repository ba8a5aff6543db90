"""A connection's command budget and its invalid tokens (issue 18 item 10b).

The incoming rate limit counts frames, and a frame carries up to ``max_commands``
commands: one connection published 91,904 messages in 10 s. Commands are counted
now (3013 past the budget), and a connection that keeps sending invalid
subscription tokens is closed with 3500.
"""

from __future__ import annotations

import json
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from quart import Quart
from websockets.exceptions import ConnectionClosed

from realtime.errors import PluginError
from realtime_centrifuge.budget import COMMAND_BURST, CommandBudget
from realtime_centrifuge.codes import DisconnectError
from realtime_centrifuge.session import SessionOptions

from ..unit.test_centrifuge_session import closed_with, send
from ..unit.test_centrifuge_session import connected as session_connected
from .test_centrifuge_endpoint import connected, fan_out, served_app, server

__all__ = ["fan_out", "server"]  # the endpoint tests' fixtures, used here
from ..unit.test_centrifuge_session import token as session_token


def test_the_bucket_takes_a_burst_then_its_rate() -> None:
    budget = CommandBudget(rate=10, burst=20)
    budget.spend(20, now=100.0)  # the whole burst at once
    with pytest.raises(DisconnectError) as caught:
        budget.spend(1, now=100.0)
    assert caught.value.disconnect.code == 3013
    budget = CommandBudget(rate=10, burst=20)
    budget.spend(20, now=100.0)
    budget.spend(10, now=101.0)  # a second later, ten more
    unlimited = CommandBudget(rate=0)
    unlimited.spend(10**6, now=0.0)


def test_the_default_burst_takes_a_full_frame_of_commands() -> None:
    """centrifuge-js batches a connection's subscribes: a frame of ``max_commands``."""
    assert SessionOptions().max_commands <= COMMAND_BURST
    CommandBudget().spend(SessionOptions().max_commands, now=0.0)


async def test_frames_of_many_publishes_close_with_3013() -> None:
    session, backend, _ = await session_connected()
    publish = {"publish": {"channel": "chat:room", "data": {}}}
    commands = [{"id": i, **publish} for i in range(2, 202)]
    await send(session, *commands)  # within the burst
    closed = await closed_with(session, *commands)
    assert closed.disconnect.code == 3013
    published = sum(1 for call in backend.calls if call[0] == "publish")
    assert published <= COMMAND_BURST + 10, published


async def test_repeated_invalid_subscription_tokens_close_with_3500() -> None:
    session, _, _ = await session_connected()
    bad = session_token(sub="42", channel="chat:room") + "x"
    for i in range(3):  # answered with 103, as before
        [reply] = await send(
            session, {"id": 10 + i, "subscribe": {"channel": "chat:room", "token": bad}}
        )
        assert reply["error"]["code"] == 103
    closed = await closed_with(
        session, {"id": 20, "subscribe": {"channel": "chat:room", "token": bad}}
    )
    assert closed.disconnect.code == 3500


async def test_a_publish_flood_over_a_real_socket_is_closed_with_3013(
    server: tuple[Quart, int],
) -> None:
    """Over the endpoint, both fan-out modes: frames of 200 publishes, as fast as taken."""
    _, port = server
    client = await connected(port, "alice")
    frame = "\n".join(
        json.dumps({"id": i, "publish": {"channel": "chat:room", "data": {"n": i}}})
        for i in range(2, 202)
    )
    started = time.monotonic()
    with suppress(ConnectionClosed):
        for _ in range(50):  # 10,000 publishes if nothing stopped them
            await client.ws.send(frame)
    assert await client.closed() == (3013, "too many requests")
    assert time.monotonic() - started < 5.0


@pytest.mark.parametrize(
    "setting",
    [
        {"client_command_rate": -1.0},
        {"client_command_burst": 0},
        {"client_invalid_token_limit": -1},
        {"client_join_leave_max_subscribers": -1},
    ],
)
async def test_settings_out_of_range_are_refused_at_start_up(
    tmp_path: Path, setting: dict[str, Any]
) -> None:
    with pytest.raises(PluginError, match="must be at least"):
        await served_app(tmp_path, **setting)
