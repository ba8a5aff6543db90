"""Issue 8's scenarios, the clients' side: recovery after a blip, and idle presence.

Run by ``run.py`` (``--recovery``, ``--presence``) pinned to its own CPU, like
``loadgen.py``: it prints ``@phase NAME`` lines on stderr, waits for a line on stdin
where ``run.py`` samples the server, and prints its figures as JSON on stdout.

``recovery``: N Centrifuge clients subscribe to one channel that keeps history and
note where its stream stands; all of them go away; ``--behind`` publications are
made through the server API; then all of them come back at once, each subscribing
with ``recover``, ``epoch`` and ``offset``. Each must get ``recovered: true`` and
exactly the publications it missed, in order. The server's own time per recovery
(the node's ``recovery_times``) is read from a drop-in script.

``presence``: N clients spread over C channels (client i in channel ``bench<i % C>``),
each signed in as its own user, then idle: ``run.py`` measures the server's CPU over
the idle window. At the end, ``presence_stats`` of each channel is checked through
the server API.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx
from loadgen import percentile
from run import hs256_token
from websockets.asyncio.client import ClientConnection, connect

#: Dials in flight while the clients first connect.
DIALS = 64


def phase(name: str) -> None:
    print(f"@phase {name}", file=sys.stderr, flush=True)


async def wait_go() -> None:
    await asyncio.to_thread(sys.stdin.readline)


def token(secret: str, user: str) -> str:
    return hs256_token(secret, {"sub": user})


async def replies(ws: ClientConnection, ids: set[int], limit: float) -> dict[int, Any]:
    """The replies to ``ids`` (pushes and pings in between are skipped)."""
    found: dict[int, Any] = {}
    async with asyncio.timeout(limit):
        while len(found) < len(ids):
            frame = await ws.recv()
            for line in str(frame).split("\n"):
                message = json.loads(line)
                if message.get("id") in ids:
                    found[message["id"]] = message
    return found


async def join(
    url: str, secret: str, user: str, subscribe: dict[str, Any], limit: float
) -> tuple[ClientConnection, dict[str, Any]]:
    """A connected, subscribed client and its subscribe reply (or an error raised)."""
    ws = await connect(url, ping_interval=None, max_size=None, open_timeout=limit)
    frame = "\n".join(
        json.dumps(command)
        for command in (
            {"id": 1, "connect": {"token": token(secret, user)}},
            {"id": 2, "subscribe": subscribe},
        )
    )
    await ws.send(frame)
    got = await replies(ws, {1, 2}, limit)
    if "error" in got[1] or "error" in got[2]:
        await ws.close()
        raise RuntimeError(f"refused: {got[1].get('error') or got[2].get('error')}")
    return ws, got[2]["subscribe"]


async def bounded(jobs: list[Any], limit: int) -> list[Any]:
    gate = asyncio.Semaphore(limit)

    async def one(job: Any) -> Any:
        async with gate:
            return await job

    return await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)


async def recovery(args: argparse.Namespace) -> dict[str, Any]:
    url, channel = args.url, args.channel
    first = await bounded(
        [
            join(url, args.secret, f"u{i}", {"channel": channel}, args.timeout)
            for i in range(args.clients)
        ],
        DIALS,
    )
    clients = [r for r in first if not isinstance(r, BaseException)]
    failed_first = len(first) - len(clients)
    positions = [(sub.get("epoch", ""), int(sub.get("offset", 0))) for _, sub in clients]
    phase("subscribed")
    await asyncio.gather(*(ws.close() for ws, _ in clients), return_exceptions=True)
    headers = {"X-API-Key": args.api_key}
    async with httpx.AsyncClient(base_url=args.http, headers=headers, timeout=30) as http:
        for n in range(args.behind):
            response = await http.post("/api/publish", json={"channel": channel, "data": {"n": n}})
            response.raise_for_status()
            if "error" in response.json():
                raise RuntimeError(f"publish failed: {response.text}")
    phase("away")
    await wait_go()
    began = time.monotonic()
    jobs = [
        join(
            url,
            args.secret,
            f"u{i}",
            {"channel": channel, "recover": True, "epoch": epoch, "offset": offset},
            args.timeout,
        )
        for i, (epoch, offset) in enumerate(positions)
    ]
    back = await asyncio.gather(*jobs, return_exceptions=True)
    back_s = time.monotonic() - began
    phase("recovered")
    recovered = wrong = failed = 0
    samples: list[Any] = []  # a few of what went wrong, for the log
    for result, (_, offset) in zip(back, positions, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            if len(samples) < 5:
                samples.append(repr(result))
            continue
        _, sub = result
        offsets = [int(p.get("offset", 0)) for p in sub.get("publications") or ()]
        if sub.get("recovered") and offsets == list(range(offset + 1, offset + 1 + args.behind)):
            recovered += 1
        else:
            wrong += 1
            if len(samples) < 5:
                brief = {k: v for k, v in sub.items() if k != "publications"}
                samples.append({"from": offset, "offsets": offsets[:3] + offsets[-2:], **brief})
    await asyncio.gather(
        *(r[0].close() for r in back if not isinstance(r, BaseException)), return_exceptions=True
    )
    async with httpx.AsyncClient(base_url=args.http, timeout=30) as http:
        times = (await http.get(args.times_path)).json()
    times = [t * 1000 for t in times[-len(positions) :]]  # ms, this burst's
    return {
        "clients": args.clients,
        "behind": args.behind,
        "subscribed": len(clients),
        "failed_first": failed_first,
        "recovered": recovered,
        "wrong": wrong,
        "failed": failed,
        "back_s": round(back_s, 3),
        "samples": samples,
        "server_ms": {
            "count": len(times),
            "p50": percentile(times, 50),
            "p99": percentile(times, 99),
            "max": max(times) if times else None,
            "mean": statistics.fmean(times) if times else None,
        },
    }


async def presence(args: argparse.Namespace) -> dict[str, Any]:
    jobs = [
        join(args.url, args.secret, f"u{i}", {"channel": f"bench{i % args.channels}"}, args.timeout)
        for i in range(args.clients)
    ]
    results = await bounded(jobs, DIALS)
    clients = [r[0] for r in results if not isinstance(r, BaseException)]
    errors = [repr(r) for r in results if isinstance(r, BaseException)][:5]
    phase("connected")
    await wait_go()  # run.py measured the idle window
    lost = sum(1 for ws in clients if ws.close_code is not None)
    stats: list[Any] = []
    if args.api_key:
        headers = {"X-API-Key": args.api_key}
        async with httpx.AsyncClient(base_url=args.http, headers=headers, timeout=30) as http:
            for c in range(args.channels):
                answer = await http.post("/api/presence_stats", json={"channel": f"bench{c}"})
                stats.append(answer.json().get("result"))
    await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
    expected = [
        {"num_clients": n, "num_users": n}
        for n in (len(range(c, args.clients, args.channels)) for c in range(args.channels))
    ]
    return {
        "clients": args.clients,
        "channels": args.channels,
        "connected": len(clients),
        "errors": errors,
        "lost_while_idle": lost,
        "presence_checked": bool(stats),
        "presence_right": stats == expected if stats else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("scenario", choices=["recovery", "presence"])
    p.add_argument("--url", required=True, help="ws://HOST:PORT/connection/websocket")
    p.add_argument("--http", required=True, help="http://HOST:PORT")
    p.add_argument("--secret", required=True, help="the server's HMAC token secret")
    p.add_argument("--api-key", default="")
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--behind", type=int, default=50)
    p.add_argument("--channel", default="feed:bench")
    p.add_argument("--channels", type=int, default=100)
    p.add_argument("--times-path", default="/recovery_times.py")
    p.add_argument("--timeout", type=float, default=60.0)
    args = p.parse_args()
    run = recovery if args.scenario == "recovery" else presence
    result = asyncio.run(run(args))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
