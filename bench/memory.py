"""Where a connection's memory goes: tracemalloc over N idle WebSocket clients.

    python bench/memory.py [--clients 2000] [--top 15]

Serves the app in this process with Hypercorn on the asyncio loop (tracemalloc
sees Python allocations only, so uvloop's C-level buffers are not in these
figures), opens N clients from a child process, and prints the Python heap growth
per connection, grouped by source file and by line.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import linecache
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc

from hypercorn.asyncio import serve

from realtime import create_app, get_host
from realtime.cli import server_config
from realtime_hub import get_hub

CLIENT = """
import base64, os, socket, sys, time
port, n, hold = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET /ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
               f"Connection: Upgrade\\r\\nSec-WebSocket-Key: {key}\\r\\n"
               "Sec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
    assert b" 101 " in s.recv(1024)
    socks.append(s)
print("connected", flush=True)
time.sleep(hold)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def measure(clients: int, top: int) -> None:
    # One client address opens every connection: no per-address cap here.
    app = create_app(tempfile.mkdtemp(), settings={"max_connections_per_ip": 0})
    config = server_config(app)
    port = free_port()
    config.bind = [f"127.0.0.1:{port}"]
    stop = asyncio.Event()
    server = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await asyncio.sleep(0.5)
    pool = get_hub(get_host(app))
    gc.collect()
    tracemalloc.start(1)
    before = tracemalloc.take_snapshot()
    child = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
        [sys.executable, "-c", CLIENT, str(port), str(clients), "600"], stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while len(pool) < clients:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(pool)} of {clients} clients connected")
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        child.kill()
        child.wait()
    total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    print(f"Python heap growth: {total / clients:,.0f} bytes per connection ({clients} clients)\n")
    print("| bytes/conn | blocks/conn | file |\n|---:|---:|---|")
    for stat in after.compare_to(before, "filename")[:top]:
        name = stat.traceback[0].filename.split("site-packages/")[-1]
        print(f"| {stat.size_diff / clients:,.0f} | {stat.count_diff / clients:.1f} | {name} |")
    print("\n| bytes/conn | line |\n|---:|---|")
    for stat in after.compare_to(before, "lineno")[:top]:
        frame = stat.traceback[0]
        name = frame.filename.split("site-packages/")[-1]
        code = linecache.getline(frame.filename, frame.lineno).strip()[:60]
        print(f"| {stat.size_diff / clients:,.0f} | {name}:{frame.lineno} `{code}` |")
    stop.set()
    await server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=2000)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    asyncio.run(measure(args.clients, args.top))


if __name__ == "__main__":
    main()
