"""The drop-in auth endpoint (issue 22, item 2): app/pusher_auth.py answers pusher-js's
form POST (``socket_id``, ``channel_name``) with the auth strings Pusher defines, for the
user its cookie names, and refuses what it should."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from realtime import create_app
from realtime_pusher.signing import channel_auth, check_auth, user_auth

from ..conftest import APP_DIR
from .test_fanout import hypercorn
from .test_pusher_api_ws import open_socket

KEY, SECRET = "demo-key", "demo-secret"


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[Quart, int]]:
    # The script as shipped, alone (the demo's pages are not what is tested here).
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    shutil.copy(APP_DIR / "pusher_auth.py", app_dir / "pusher_auth.py")
    apps = [{"id": "1", "key": KEY, "secret": SECRET}]
    app = create_app(app_dir, settings={"pusher_apps": apps})
    async with hypercorn(app) as port:
        yield app, port


async def auth(port: int, form: dict[str, str], user: str | None = "ann") -> httpx.Response:
    cookies = {} if user is None else {"user": user}
    async with httpx.AsyncClient(cookies=cookies) as http:
        return await http.post(f"http://127.0.0.1:{port}/pusher_auth.py", data=form)


async def test_private_presence_and_signin(served: tuple[Quart, int]) -> None:
    _, port = served
    response = await auth(port, {"socket_id": "123.456", "channel_name": "private-orders"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"auth"}
    assert check_auth(channel_auth(KEY, SECRET, "123.456", "private-orders"), body["auth"])

    response = await auth(port, {"socket_id": "123.456", "channel_name": "presence-room"})
    body = response.json()
    member: dict[str, Any] = json.loads(body["channel_data"])
    assert member == {"user_id": "guest-ann", "user_info": {"name": "ann"}}
    expected = channel_auth(KEY, SECRET, "123.456", "presence-room", body["channel_data"])
    assert check_auth(expected, body["auth"])

    # pusher:signin: socket_id alone.
    response = await auth(port, {"socket_id": "123.456"})
    body = response.json()
    assert json.loads(body["user_data"]) == {"id": "guest-ann", "user_info": {"name": "ann"}}
    assert check_auth(user_auth(KEY, SECRET, "123.456", body["user_data"]), body["auth"])
    # The signature is for this socket only.
    assert not check_auth(user_auth(KEY, SECRET, "123.457", body["user_data"]), body["auth"])


@pytest.mark.parametrize(
    ("form", "user", "status", "says"),
    [
        ({"socket_id": "1.2", "channel_name": "private-a"}, None, 403, "sign in"),
        ({"socket_id": "1.2", "channel_name": "private-a"}, "x" * 65, 403, "sign in"),
        ({"socket_id": "nope", "channel_name": "private-a"}, "ann", 400, "socket_id"),
        ({"channel_name": "private-a"}, "ann", 400, "socket_id"),
        ({"socket_id": "1.2", "channel_name": "news"}, "ann", 400, "public channel"),
        ({"socket_id": "1.2", "channel_name": "private-a b"}, "ann", 400, "channel name"),
        ({"socket_id": "1.2", "channel_name": "private-encrypted-a"}, "ann", 500, "master"),
    ],
)
async def test_refusals(
    served: tuple[Quart, int], form: dict[str, str], user: str | None, status: int, says: str
) -> None:
    _, port = served
    response = await auth(port, form, user)
    assert response.status_code == status, response.text
    assert says in response.text


async def test_a_name_pusher_would_refuse_signs_in_under_an_id_it_takes(
    served: tuple[Quart, int],
) -> None:
    _, port = served
    response = await auth(port, {"socket_id": "1.2"}, "ann/lee!")
    assert response.status_code == 200, response.text
    user = json.loads(response.json()["user_data"])
    assert user == {"id": "guest-ann_lee_", "user_info": {"name": "ann/lee!"}}


async def test_a_real_socket_subscribes_and_signs_in_with_the_scripts_answers(
    served: tuple[Quart, int],
) -> None:
    _, port = served
    async with open_socket(port, KEY) as socket:
        form = {"socket_id": socket.socket_id, "channel_name": "presence-room"}
        presence = (await auth(port, form)).json()
        await socket.ws.send(json.dumps(subscribe("presence-room", presence)))
        ok = await socket.next("pusher_internal:subscription_succeeded")
        assert json.loads(ok["data"])["presence"]["ids"] == ["guest-ann"]
        signin = (await auth(port, {"socket_id": socket.socket_id})).json()
        await socket.ws.send(json.dumps({"event": "pusher:signin", "data": signin}))
        signed_in = await socket.next("pusher:signin_success")
        assert json.loads(signed_in["data"])["user_data"] == signin["user_data"]
        # Another socket's answer is refused: the signature is the socket's.
        async with open_socket(port, KEY) as other:
            await other.ws.send(json.dumps(subscribe("presence-room", presence)))
            refused = await other.next()
            assert refused["event"] == "pusher:subscription_error", refused


def subscribe(channel: str, answer: dict[str, str]) -> dict[str, Any]:
    return {"event": "pusher:subscribe", "data": {"channel": channel, **answer}}
