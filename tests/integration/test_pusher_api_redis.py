"""The HTTP API across two hosts over Redis: an SDK event sent to one host reaches the
other's Pusher sockets; counts, users and terminations are the cluster's."""

from __future__ import annotations

from pathlib import Path

from realtime import create_app, get_host

from ..conftest import RedisServer, eventually
from .test_fanout import hypercorn
from .test_pusher_api import APPS, call, sdk
from .test_pusher_api_ws import closed_code, open_socket


async def test_events_counts_users_and_terminate_across_hosts(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    settings = {"pusher_apps": APPS, "broker": redis_server.url}
    one, two = (create_app(tmp_path, settings=settings) for _ in range(2))
    async with (
        hypercorn(one) as port_one,
        hypercorn(two) as port_two,
        open_socket(port_two) as there,
        open_socket(port_one) as here,
    ):
        functions = get_host(two).functions
        for socket, user in ((there, "u-there"), (here, "u-here")):
            auth = functions["pusher_auth"](socket.socket_id, "presence-room", {"user_id": user})
            await socket.subscribe("presence-room", **auth)
        await there.subscribe("news")
        # Host two's subscription is listening on Redis once it answered; publish on one.
        assert await call(sdk(port_one).trigger, "news", "far", "away") == {}
        got = await there.next("far")
        assert (got["channel"], got["data"]) == ("news", "away")

        async def counted() -> bool:
            info = await call(sdk(port_one).channels_info, None, ["subscription_count"])
            return bool(
                info
                == {
                    "channels": {
                        "news": {"subscription_count": 1},
                        "presence-room": {"subscription_count": 2},
                    }
                }
            )

        await eventually(counted, message="host one counts host two's sockets")
        users = (await call(sdk(port_one).users_info, "presence-room"))["users"]
        assert sorted(user["id"] for user in users) == ["u-here", "u-there"]
        assert await call(sdk(port_one).channel_info, "presence-room", ["user_count"]) == {
            "occupied": True,
            "user_count": 2,
        }
        # Terminated from host one, the user's socket on host two closes.
        assert await call(sdk(port_one).terminate_user_connections, "u-there") == {}
        assert 4000 <= await closed_code(there) <= 4099
