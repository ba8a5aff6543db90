"""What Pusher's auth guards stays guarded on the shared bus: a raw ``/ws`` client or a
Centrifuge client cannot read (or write) a Pusher app's private, presence or user
channels, while the server still publishes there and Pusher's own clients get it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from realtime import get_host
from realtime_broker import get_broker

from .test_centrifuge_endpoint import SECRET as CENTRIFUGE_SECRET
from .test_centrifuge_endpoint import connected
from .test_fanout import hypercorn
from .test_pusher_protocol import SECRET, pusher, served_app

GUARDED = ["private-orders", "private-encrypted-x", "presence-room", "#server-to-user-bob"]


@pytest.mark.parametrize("channel", GUARDED)
async def test_a_raw_websocket_cannot_read_a_guarded_pusher_channel(
    tmp_path: Path, channel: str
) -> None:
    app = served_app(tmp_path)
    async with hypercorn(app) as port:
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{port}/ws?channel={quote(channel)}")
        assert refused.value.response.status_code == 403
        async with connect(f"ws://127.0.0.1:{port}/ws?channel=news") as public:
            assert public.protocol.state.name == "OPEN"  # public ones are shared


async def test_a_centrifuge_client_needs_a_grant_and_never_publishes_there(
    tmp_path: Path,
) -> None:
    # Top-level channels open to clients, publishing too: only the guarded ones refuse.
    table = {"without_namespace": {"allow_subscribe_for_client": True,
                                   "allow_publish_for_client": True}}  # fmt: skip
    app = served_app(tmp_path, token_hmac_secret=CENTRIFUGE_SECRET, channel=table)
    async with hypercorn(app) as port:
        alice = await connected(port, "alice")
        for channel in GUARDED:
            reply = await alice.call("subscribe", channel=channel)
            assert reply["error"]["code"] == 103, reply  # permission denied
        # A connection token granting the channel is the server's own decision.
        granted = await connected(port, "bob", channels=["private-orders"])
        published = await granted.call("publish", channel="private-orders", data={"x": 1})
        assert published["error"]["code"] == 103, published
        assert (await alice.call("subscribe", channel="news"))["subscribe"] == {}
        assert "publish" in await alice.call("publish", channel="news", data={"x": 1})
        await alice.ws.close()
        await granted.ws.close()


async def test_the_server_still_publishes_to_pusher_s_private_channels(tmp_path: Path) -> None:
    from realtime_pusher.signing import channel_auth

    app = served_app(tmp_path)
    async with hypercorn(app) as port, pusher(port) as client:
        auth = channel_auth("app-key", SECRET, client.socket_id, "private-orders")
        await client.send("pusher:subscribe", {"channel": "private-orders", "auth": auth})
        assert (await client.next())["event"] == "pusher_internal:subscription_succeeded"
        await get_broker(get_host(app)).publish("private-orders", "shipped")
        message = await client.next()
        assert (message["event"], message["channel"], message["data"]) == (
            "message", "private-orders", "shipped",
        )  # fmt: skip


async def test_a_channel_the_hubs_rules_close_is_not_a_public_pusher_channel(
    tmp_path: Path,
) -> None:
    """The other way round: where the [channel] rules let no anonymous client listen
    (Centrifuge clients need a token there), a Pusher public subscribe is refused, as
    a raw /ws one is; the second app's channels (under "2:", a namespace no other
    protocol's client can name) stay public."""
    closed = {"without_namespace": {"allow_subscribe_for_client": False}}
    app = served_app(tmp_path, channel=closed)
    async with hypercorn(app) as port, pusher(port) as client:
        refused = await client.subscribe("news")
        assert refused["event"] == "pusher:subscription_error"
        assert refused["data"]["type"] == "AuthError"
        async with pusher(port, key="quiet-key") as other:
            ok = await other.subscribe("news", secret="quiet-secret", key="quiet-key")
            assert ok["event"] == "pusher_internal:subscription_succeeded"
        ok = await client.subscribe("private-news")  # Pusher's own auth decides there
        assert ok["event"] == "pusher_internal:subscription_succeeded"
