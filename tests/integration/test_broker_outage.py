"""Issue 11: after a Redis outage, broadcasts flow again within 2 s of Redis coming back.

Measured as a user would see it: two workers, pages that reconnect when told to (1012),
``send.py`` called steadily while Redis is killed and restarted, round after round.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from ..conftest import RedisServer, Server

#: The promise: a broadcast made this long after Redis is back answers 200 and reaches
#: every connected client.
RECOVERY = 2.0
ROUNDS = 5
OUTAGE = 4.0  # long enough for any backoff to reach its cap
UP = 4.0  # Redis up between outages
SEND_EVERY = 0.25
#: Broadcasts this close to the next outage may race it; they are not judged.
MARGIN = 1.0


@dataclass
class Page:
    """A browser tab: keeps what it receives and reconnects at once when closed."""

    url: str
    got: set[str] = field(default_factory=set)
    closes: list[tuple[float, int | None]] = field(default_factory=list)

    async def run(self) -> None:
        while True:
            try:
                async with connect(self.url) as ws:
                    async for message in ws:
                        self.got.add(str(message))
                    code = ws.close_code
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
            except OSError:
                code = None
            self.closes.append((time.monotonic(), code))
            await asyncio.sleep(0.02)


@dataclass
class Sent:
    text: str
    at: float
    status: int


async def send_steadily(url: str, sent: list[Sent]) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        n = 0
        while True:
            n += 1
            text, at = f"m{n}", time.monotonic()
            try:
                status = (await http.get(f"{url}/send.py", params={"message": text})).status_code
            except httpx.HTTPError:
                status = 0
            sent.append(Sent(text, at, status))
            await asyncio.sleep(max(0.0, at + SEND_EVERY - time.monotonic()))


def resubscribed(server: Server, backs: list[float]) -> list[list[float]]:
    """From the server's log: when each worker was subscribed again, after each return."""
    times = [
        datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        for line in server.log.splitlines()
        if "resubscribed to redis" in line
    ]
    ends = [*(b - 0.1 for b in backs[1:]), float("inf")]
    return [
        [round(t - back, 2) for t in times if back - 0.1 <= t < end]
        for back, end in zip(backs, ends, strict=True)
    ]


async def test_broadcasts_flow_again_within_2_s_of_redis_coming_back_every_time(
    app_dir: Path, redis_server: RedisServer
) -> None:
    server = Server(app_dir, "--workers", "2", "--broker", redis_server.url).start()
    pages = [Page(server.ws_url) for _ in range(6)]
    sent: list[Sent] = []
    tasks = [asyncio.create_task(page.run()) for page in pages]
    try:
        await asyncio.sleep(1.0)
        tasks.append(asyncio.create_task(send_steadily(server.url, sent)))
        await asyncio.sleep(UP)
        windows: list[tuple[float, float]] = []  # when Redis was back, when it stopped next
        backs: list[float] = []  # the same moments, by the wall clock the log uses
        for _ in range(ROUNDS):
            await asyncio.to_thread(redis_server.stop)
            stopped = time.monotonic()
            if windows:
                windows[-1] = (windows[-1][0], stopped)
            await asyncio.sleep(OUTAGE)
            await asyncio.to_thread(redis_server.start)
            windows.append((time.monotonic(), float("inf")))
            backs.append(time.time())
            await asyncio.sleep(UP)
        await asyncio.sleep(1.0)  # the last broadcasts arrive
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        server.stop()

    report = []
    judged = 0
    for back, next_stop in windows:
        after = [s for s in sent if s.at >= back]
        first_ok = next((s.at - back for s in after if s.status == 200), None)
        late = [s for s in after if back + RECOVERY <= s.at < next_stop - MARGIN]
        judged += len(late)
        failed = [(s.text, round(s.at - back, 2), s.status) for s in late if s.status != 200]
        missing = {
            s.text: [i for i, page in enumerate(pages) if s.text not in page.got]
            for s in late
            if s.status == 200
        }
        missing = {text: who for text, who in missing.items() if who}
        report.append((first_ok, failed, missing))
    print("seconds from Redis back to the first 200, per round:", [r[0] for r in report])
    print("seconds from Redis back to each worker's resubscription:", resubscribed(server, backs))
    assert judged >= ROUNDS * 3, judged
    for first_ok, failed, missing in report:
        assert not failed, (
            f"broadcasts later than {RECOVERY} s after Redis was back failed: {failed}"
        )
        assert not missing, f"broadcasts that did not reach every client: {missing}"
        assert first_ok is not None and first_ok < RECOVERY, report
