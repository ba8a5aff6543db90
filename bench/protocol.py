"""What the Centrifuge protocol's own work costs, in process: no network, no server.

The frame ``run.py``'s ``realtime-centrifuge`` clients send (connect with the bench's
HS256 token, then subscribe to ``default``), parsed and answered by a
:class:`Session` whose backend does nothing, and its parts: decoding the frame,
verifying the token, encoding the replies. Best of 5 timings of N calls each, µs a
call: a hot loop, where caches stay warm, so a loaded server spends more (see
bench/README.md). Run it on another tree's code to compare::

    python bench/protocol.py
    PYTHONPATH=/tmp/before/plugins/centrifuge:/tmp/before/plugins/hub python bench/protocol.py
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import run as R

from realtime_centrifuge.codec import decode_commands, encode_reply
from realtime_centrifuge.session import Session, SessionOptions
from realtime_centrifuge.tokens import TokenVerifier
from realtime_hub import ChannelRules

FRAME = "\n".join(
    json.dumps(command, separators=(",", ":"))
    for command in (
        {"id": 1, "connect": {"token": R.TOKEN}},
        {"id": 2, "subscribe": {"channel": "default"}},
    )
)


class Backend:
    """A session's backend that admits everything and keeps nothing."""

    def recovers(self) -> bool:
        return True

    async def authorize_subscribe(self, **kwargs: Any) -> None:
        return None  # no hook: the namespace's options decide

    async def subscribe(self, channel: str, join_leave: bool = False) -> None:
        pass

    def recovered(self, seconds: float) -> None:
        pass

    def recovery_slot(self) -> Any:
        return nullcontext()


def connect_and_subscribe(verifier: TokenVerifier, rules: ChannelRules) -> list[str]:
    """A new session answers the frame (nothing in it awaits: the coroutine runs once)."""
    session = Session(rules, verifier, Backend(), options=SessionOptions(ping_interval=0))  # type: ignore[arg-type]
    step = session.handle_frame(FRAME)
    try:
        step.send(None)
    except StopIteration as done:
        replies: list[str] = done.value
        return replies
    raise RuntimeError("the session waited on something")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=20_000, help="calls per timing")
    opts = p.parse_args()
    verifier = TokenVerifier(hmac_secret=R.TOKEN_SECRET)
    rules = ChannelRules.defaults()
    replies = connect_and_subscribe(verifier, rules)
    if len(replies) != 2 or '"subscribe":{}' not in replies[1]:
        raise RuntimeError(f"not the answer every client gets: {replies}")
    now = time.time()
    connect = {"client": "2b0c3f0e-7c6d-4a8e-9c1a-2f5e7d9b1c3a", "version": "", "expires": False,
               "ttl": 0, "data": None, "subs": {}, "ping": 0, "pong": False}  # fmt: skip
    cases: list[tuple[str, Callable[[], Any]]] = [
        ("connect + subscribe frame, answered", lambda: connect_and_subscribe(verifier, rules)),
        ("decode the frame", lambda: decode_commands(FRAME, 256)),
        ("verify the connection token", lambda: verifier.verify_connection(R.TOKEN, now)),
        ("encode the connect reply", lambda: encode_reply(1, "connect", connect)),
        ("encode the subscribe reply", lambda: encode_reply(2, "subscribe", {})),
    ]
    print("| work | µs a call |")
    print("|---|---|")
    for name, call in cases:
        best = min(timeit.repeat(call, number=opts.number, repeat=5)) / opts.number
        print(f"| {name} | {best * 1e6:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
