"""centrifuge-js asks a cache-mode channel for its latest publication (issue 21, item 4).

An empty ``since`` (``newSubscription(channel, {since: {}})``), as Centrifugo's docs
show it, makes centrifuge-js 5 send ``recover: true``: a subscriber joining after
three publications gets the third at once, then the live ones (a stream-mode channel
replays all three); with ``auto_cache_recover`` a token's server-side subscription
gets the latest with no asking.
"""

from __future__ import annotations

from pathlib import Path

from realtime import create_app

from ..integration.test_centrifuge_cache import api, publish_three, settings
from ..integration.test_centrifuge_endpoint import PATH, token
from ..integration.test_fanout import hypercorn
from ..sdk import NodeClient


async def test_centrifuge_js_gets_the_latest_at_once(tmp_path: Path) -> None:
    app = create_app(tmp_path, settings=settings())
    async with hypercorn(app) as port:
        await publish_three(port, "cache:now")
        await publish_three(port, "auto:score")
        await publish_three(port, "stream:s")
        js = await NodeClient.start(
            {
                "url": f"ws://127.0.0.1:{port}{PATH}",
                "token": token("ann", channels=["auto:score"]),
                "subscriptions": [
                    {"channel": "cache:now", "since": {}},
                    {"channel": "stream:s", "since": {}},
                ],
            }
        )
        try:
            subscribed = await js.next("subscribed", where=lambda e: e["channel"] == "cache:now")
            assert subscribed["wasRecovering"] is True and subscribed["recovered"] is True
            first = await js.next("publication", where=lambda e: e["channel"] == "cache:now")
            assert (first["data"], first["offset"]) == ({"n": 3}, 3)
            pushed = await js.next(
                "server_publication", where=lambda e: e["channel"] == "auto:score"
            )
            assert pushed["data"] == {"n": 3}
            # Stream mode from the same empty position: everything kept, not the latest.
            await js.next("subscribed", where=lambda e: e["channel"] == "stream:s")
            for n in (1, 2, 3):
                replayed = await js.next("publication", where=lambda e: e["channel"] == "stream:s")
                assert replayed["data"] == {"n": n}
            await api(port, "publish", {"channel": "cache:now", "data": {"n": 4}})
            live = await js.next("publication", where=lambda e: e["channel"] == "cache:now")
            assert (live["data"], live["offset"]) == ({"n": 4}, 4)
        finally:
            await js.close()
