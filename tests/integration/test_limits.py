"""Connection caps, the open-file limit, logging options and a prompt exit: a real server."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from ..conftest import Server, free_port, listening_socket, wait_for_http


async def open_ws(server: Server, source: str = "127.0.0.1") -> ClientConnection:
    return await connect(server.ws_url, local_addr=(source, 0), open_timeout=5)


async def refused_status(server: Server, source: str = "127.0.0.1") -> int:
    with pytest.raises(InvalidStatus) as refused:
        await open_ws(server, source)
    return refused.value.response.status_code


async def test_connections_are_capped_per_address_and_in_total(app_dir: Path) -> None:
    server = Server(app_dir, "--max-connections-per-ip", "3", "--max-connections", "5").start()
    clients: list[ClientConnection] = []
    try:
        clients += [await open_ws(server) for _ in range(3)]
        assert await refused_status(server) == 429
        # Another address still gets in, up to the total.
        clients += [await open_ws(server, "127.0.0.2") for _ in range(2)]
        assert await refused_status(server, "127.0.0.3") == 503
        # The refused ones cost nothing: everyone admitted gets broadcasts.
        async with httpx.AsyncClient() as http:
            sent = await http.get(f"{server.url}/send.py", params={"message": "capped"})
        assert sent.text.strip() == "Sent to 5 clients."
        for ws in clients:
            assert await asyncio.wait_for(ws.recv(), 5) == "capped"
        # A place freed is a place taken.
        await clients.pop(0).close()
        await asyncio.sleep(0.2)
        clients.append(await open_ws(server))
        # Refusals are logged, but not one line each.
        for _ in range(20):
            await refused_status(server)
        await asyncio.sleep(0.2)
        assert 1 <= server.log.count("refused a WebSocket") <= 3
    finally:
        for ws in clients:
            await ws.close()
        server.stop()


def start_with_open_files(app_dir: Path, soft: int, hard: int, *args: str) -> Server:
    """``realtime run`` started under the given RLIMIT_NOFILE, as a shell's ulimit would."""
    server = Server(app_dir, *args)
    # Handed a socket beside the port's reservation, as Server.start does.
    listener = listening_socket(server.port)
    command = [
        sys.executable, "-m", "realtime", "run",
        "--bind", f"fd://{listener.fileno()}", "--app", str(app_dir), *args,
    ]  # fmt: skip

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    try:
        with server.log_path.open("ab") as log:
            server.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server.env,
                preexec_fn=limit,
                pass_fds=(listener.fileno(),),
            )
    finally:
        listener.close()
    wait_for_http(server.url + "/", process=server.process)
    return server


def soft_open_files(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError("no open-file limit in /proc")


def test_the_soft_open_file_limit_is_raised_to_the_hard_one(app_dir: Path) -> None:
    server = start_with_open_files(app_dir, 256, 4096)
    try:
        assert server.process is not None
        assert soft_open_files(server.process.pid) == 4096
    finally:
        server.stop()


async def test_one_client_cannot_take_every_file_descriptor(app_dir: Path) -> None:
    # Soft and hard limit 256: nothing to raise. One address, no per-address cap: the
    # total cap (90% of the limit) is what keeps descriptors for everyone else.
    server = start_with_open_files(app_dir, 256, 256, "--max-connections-per-ip", "0")
    clients: list[ClientConnection] = []
    statuses: list[int] = []
    try:
        for _ in range(260):
            try:
                clients.append(await open_ws(server))
            except InvalidStatus as exc:
                statuses.append(exc.response.status_code)
        assert statuses == [503] * (260 - len(clients))
        assert len(clients) == int(256 * 0.9)
        async with httpx.AsyncClient() as http:
            started = time.monotonic()
            page = await http.get(f"{server.url}/index.html", timeout=5)
            assert page.status_code == 200
            assert time.monotonic() - started < 2
            sent = await http.get(f"{server.url}/send.py", params={"message": "still here"})
            assert sent.text.strip() == f"Sent to {len(clients)} clients."
        assert await asyncio.wait_for(clients[-1].recv(), 5) == "still here"
        assert "out of system resource" not in server.log
        assert server.log.count("refused a WebSocket") <= 3
    finally:
        await asyncio.gather(*(ws.close() for ws in clients), return_exceptions=True)
        server.stop()


@pytest.mark.parametrize(("value", "logged"), [("off", False), ("on", True)])
def test_access_log_follows_its_environment_variable(
    app_dir: Path, value: str, logged: bool
) -> None:
    server = Server(app_dir, env={"REALTIME_ACCESS_LOG": value}).start()
    try:
        httpx.get(f"{server.url}/xyzzy.html")
        time.sleep(0.3)
        assert ("xyzzy" in server.log) is logged
    finally:
        server.stop()


def test_a_bad_log_level_is_refused_like_any_option(app_dir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "realtime", "run", "--app", str(app_dir)],
        env={**Server(app_dir).env, "REALTIME_LOG_LEVEL": "loud"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "--log-level" in result.stderr and "loud" in result.stderr


def test_sigterm_exits_within_the_shutdown_timeout_while_a_script_runs_on(
    app_dir: Path,
) -> None:
    (app_dir / "slow.py").write_text("import time\ntime.sleep(40)\nprint('done')\n")
    server = Server(
        app_dir, "--shutdown-timeout", "2", "--script-timeout", "60", port=free_port()
    ).start()
    assert server.process is not None
    request = subprocess.Popen(
        [sys.executable, "-c", f"import httpx; httpx.get('{server.url}/slow.py', timeout=60)"],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)  # the script is running in its thread
        started = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        code = server.process.wait(30)
        elapsed = time.monotonic() - started
        assert code == 0
        assert elapsed < 2 + 3, f"took {elapsed:.1f} s to exit"
    finally:
        request.kill()
        request.wait()
        with contextlib.suppress(Exception):
            server.stop()


def test_run_help_lists_every_option() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "realtime", "run", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--max-connections", "--max-connections-per-ip", "--log-level", "--access-log"):
        assert flag in result.stdout
