"""What a client may send a script, against a real server: bodies, methods, paths, ranges.

Each test here is a defect from the outside review: a form bomb that stalled the event
loop, HEAD and OPTIONS running ``send.py``, backups of scripts served as text, client
mistakes answered 500, and a script's own ``TimeoutError`` taken for the host's deadline.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from ..conftest import APP_DIR, Server

MiB = 1024 * 1024
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
JSON = {"Content-Type": "application/json"}
#: 1 MiB of empty fields, about 350,000 of them: parsed on the loop, it held it ~650 ms.
BOMB = b"a=&" * (MiB // 3)
#: Longest a WebSocket ping may wait while bombs arrive. Before the fix one bomb held
#: the loop 270-650 ms and eight 0.8-2.7 s; after it, pings take 10-40 ms on 2 busy cores.
STALL_LIMIT = 0.2

#: Editor backups and leftovers of send.py, each holding its source.
BACKUPS = (
    "send.py~",
    "send.py.bak",
    "send.py.orig",
    "send.py.swp",
    "send.py.swo",
    "send.py.tmp",
    "send.py.old",
    "send.py.save",
    "#send.py#",
    "send.pyc",
    "send.py.txt",
)

SCRIPTS = {
    "raw.py": "print(len(request.body))",
    "upload.py": "print(request.form['note'], len(request.files['f'].read()))",
    "delete.py": "METHODS = ('DELETE',)\nprint('deleted', broadcast('deleted'))",
    "computed.py": "METHODS = tuple(['GET'])\nprint('ran')",
    "own_timeout.py": "raise TimeoutError('the script gave up on its own')",
}


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: these tests only add files and send requests."""
    app_dir = tmp_path_factory.mktemp("http-input") / "app"
    shutil.copytree(APP_DIR, app_dir)
    for name, source in SCRIPTS.items():
        (app_dir / name).write_text(source)
    source = (app_dir / "send.py").read_bytes()
    for name in BACKUPS:
        (app_dir / name).write_bytes(source)
    (app_dir / ".env").write_text("SECRET=1")
    (app_dir / "env.html").symlink_to(app_dir / ".env")  # hidden, through a public name
    (app_dir / "source.txt").symlink_to(app_dir / "send.py")  # a script, as static
    (app_dir / "notes.txt").write_text("public notes")
    (app_dir / "notes.py").symlink_to(app_dir / "notes.txt")  # static, as a script
    server = Server(app_dir, "--script-timeout", "2").start()
    yield server
    server.stop()


async def recv(ws: ClientConnection, timeout: float = 5.0) -> str | bytes:
    return await asyncio.wait_for(ws.recv(), timeout)


def log_since(server: Server, offset: int) -> str:
    return server.log[offset:]


async def test_form_bombs_get_413_and_do_not_stall_the_event_loop(srv: Server) -> None:
    """Eight senders, two 1 MiB urlencoded bombs each, while a WebSocket client pings."""

    def post_bombs() -> list[httpx.Response]:
        with httpx.Client(timeout=30) as http:
            return [http.post(f"{srv.url}/send.py", content=BOMB, headers=FORM) for _ in range(2)]

    loop = asyncio.get_running_loop()
    async with connect(srv.ws_url) as ws:
        await asyncio.wait_for(await ws.ping(), 5)
        with ThreadPoolExecutor(8) as senders:
            bombs = asyncio.gather(*(loop.run_in_executor(senders, post_bombs) for _ in range(8)))
            worst = 0.0
            while not bombs.done():
                started = time.monotonic()
                await asyncio.wait_for(await ws.ping(), 10)
                worst = max(worst, time.monotonic() - started)
                await asyncio.sleep(0.01)
            responses = [response for batch in await bombs for response in batch]
        assert worst < STALL_LIMIT, f"a ping waited {worst * 1000:.0f} ms behind the bombs"
        assert {response.status_code for response in responses} == {413}
        assert "limit" in responses[0].text
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{srv.url}/send.py", params={"message": "after"})).is_success
        assert await recv(ws) == "after"  # and no bomb was broadcast


async def test_a_form_may_have_1000_fields_and_not_one_more(srv: Server) -> None:
    fields = b"message=hi" + b"&a=" * 999
    async with httpx.AsyncClient() as http:
        ok = await http.post(f"{srv.url}/send.py", content=fields, headers=FORM)
        assert (ok.status_code, ok.text) == (200, "Sent to 0 clients.\n")
        over = await http.post(f"{srv.url}/send.py", content=fields + b"&a=", headers=FORM)
        assert (over.status_code, over.text) == (413, "more than 1000 form fields\n")


async def test_json_has_the_form_limit_and_the_raw_body_the_body_limit(srv: Server) -> None:
    big = json.dumps({"message": "x" * 300_000}).encode()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{srv.url}/send.py", content=big, headers=JSON)
        assert response.status_code == 413
        assert "over the 262144-byte limit" in response.text
        # A script that reads only the raw body may have up to --max-body-size of it.
        raw = await http.post(f"{srv.url}/raw.py", content=b"[" * 900_000, headers=JSON)
        assert (raw.status_code, raw.text) == (200, "900000\n")
    # Refused from its Content-Length, before any of it is read.
    status, body = raw_request(srv.port, "POST", "/raw.py", f"Content-Length: {MiB + 1}\r\n")
    assert (status, body) == (413, b"request body is over the 1048576-byte limit\n")


async def test_uploads_may_fill_the_body_but_text_fields_have_the_form_limit(
    srv: Server,
) -> None:
    upload = {"f": ("big.bin", b"\0" * 900_000, "application/octet-stream")}
    async with httpx.AsyncClient() as http:
        ok = await http.post(f"{srv.url}/upload.py", data={"note": "hi"}, files=upload)
        assert (ok.status_code, ok.text) == (200, "hi 900000\n")
        long_note = {"note": "x" * 300_000}
        small = {"f": ("small.bin", b"\0", "application/octet-stream")}
        over = await http.post(f"{srv.url}/upload.py", data=long_note, files=small)
        assert over.status_code == 413
        assert "form fields are 300000 bytes, over the 262144-byte limit" in over.text
        many = {f"f{i}": "" for i in range(1001)}
        over = await http.post(f"{srv.url}/upload.py", data=many, files=small)
        assert (over.status_code, over.text) == (413, "more than 1000 form fields\n")


async def test_head_options_and_other_methods_never_run_send_py(srv: Server) -> None:
    async with connect(srv.ws_url) as ws, httpx.AsyncClient() as http:
        url = f"{srv.url}/send.py?message=sent+by+mistake"
        head = await http.head(url)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["Allow"] == "GET, POST, HEAD, OPTIONS"
        options = await http.options(url)
        assert (options.status_code, options.content) == (204, b"")
        assert options.headers["Allow"] == "GET, POST, HEAD, OPTIONS"
        for method in ("PUT", "PATCH", "DELETE"):
            refused = await http.request(method, url)
            assert refused.status_code == 405
            assert refused.headers["Allow"] == "GET, POST, HEAD, OPTIONS"
        assert (await http.get(f"{srv.url}/send.py", params={"message": "on purpose"})).is_success
        assert await recv(ws) == "on purpose"  # the first and only broadcast


async def test_a_script_runs_for_the_methods_it_declares(srv: Server) -> None:
    offset = len(srv.log)
    async with connect(srv.ws_url) as ws, httpx.AsyncClient() as http:
        for method in ("GET", "HEAD", "POST"):
            refused = await http.request(method, f"{srv.url}/delete.py")
            assert (refused.status_code, refused.headers["Allow"]) == (405, "DELETE, OPTIONS")
        deleted = await http.delete(f"{srv.url}/delete.py")
        assert (deleted.status_code, deleted.text) == (200, "deleted 1\n")
        assert await recv(ws) == "deleted"
        computed = await http.get(f"{srv.url}/computed.py")
        assert computed.status_code == 500
        assert "computed.py raised SyntaxError" in computed.text
    assert "METHODS must be a literal, read without running" in log_since(srv, offset)


async def test_static_files_answer_options_and_refuse_other_methods(srv: Server) -> None:
    async with httpx.AsyncClient() as http:
        options = await http.options(f"{srv.url}/index.html")
        assert (options.status_code, options.headers["Allow"]) == (204, "GET, HEAD, OPTIONS")
        post = await http.post(f"{srv.url}/index.html")
        assert (post.status_code, post.headers["Allow"]) == (405, "GET, HEAD, OPTIONS")


@pytest.mark.parametrize(
    "raw_path",
    [
        *(f"/{name.replace('#', '%23')}" for name in BACKUPS),
        "/SEND.PY",
        "/send.py.",
        "/env.html",
        "/source.txt",
        "/notes.py",
    ],
)
async def test_backups_of_scripts_and_links_to_private_files_are_never_served(
    srv: Server, raw_path: str
) -> None:
    async with connect(srv.ws_url) as ws:
        status, body = raw_get(srv.port, raw_path)
        assert status == 404, body
        assert b"broadcast" not in body and b"SECRET" not in body and b"Sent to" not in body
        with pytest.raises(TimeoutError):
            await recv(ws, timeout=0.2)  # nothing ran


@pytest.mark.parametrize(
    "raw_path",
    [
        "/%252e%252e/pyproject.toml",
        "/%2e%2e%2fpyproject.toml",
        "/%5c..%5cpyproject.toml",
        "/..%5cpyproject.toml",
        "/%c0%ae%c0%ae/pyproject.toml",
        "/%c0%ae%c0%ae%c0%afpyproject.toml",
        "/admin/%2e%2e/%2e%2e/pyproject.toml",
        "/send.py%00",
        "/%00",
        "http://x/../pyproject.toml",
        "//pyproject.toml",
    ],
)
def test_paths_that_escape_app_are_still_refused(srv: Server, raw_path: str) -> None:
    (srv.app_dir.parent / "pyproject.toml").write_text("[project]\nname = 'secret'\n")
    status, body = raw_get(srv.port, raw_path)
    assert status in (400, 404), body
    assert b"[project]" not in body


async def test_client_mistakes_are_4xx_and_log_no_traceback(srv: Server) -> None:
    offset = len(srv.log)
    index = (srv.app_dir / "index.html").read_bytes()
    async with connect(srv.ws_url) as ws, httpx.AsyncClient() as http:
        tail = await http.get(f"{srv.url}/index.html", headers={"Range": "bytes=-5"})
        assert (tail.status_code, tail.content) == (206, index[-5:])
        assert (
            tail.headers["Content-Range"] == f"bytes {len(index) - 5}-{len(index) - 1}/{len(index)}"
        )
        whole = await http.get(f"{srv.url}/index.html", headers={"Range": "bytes=-999999"})
        assert (whole.status_code, whole.content) == (206, index)
        for bad in ("bytes=-0", "bytes=5-1", f"bytes={len(index)}-"):
            refused = await http.get(f"{srv.url}/index.html", headers={"Range": bad})
            assert refused.status_code == 416, bad
        bodies = {
            b'{"message": "\\ud800"}': "message is not valid text",
            b'{"message": 42}': "message must be a string",
            b'{"message": ["a list"]}': "message must be a string",
            b'{"message": ': "request body is not valid JSON",
            b"[" * 100_000 + b"]" * 100_000: "request body is not valid JSON",
        }
        for body, why in bodies.items():
            response = await http.post(f"{srv.url}/send.py", content=body, headers=JSON)
            assert response.status_code == 400, body[:30]
            assert why in response.text
        assert (await http.get(f"{srv.url}/send.py", params={"message": "after"})).is_success
        assert await recv(ws) == "after"  # none of the mistakes was broadcast
    log = log_since(srv, offset)
    assert "Traceback" not in log and "ERROR" not in log, log


async def test_a_scripts_own_timeout_error_is_a_500_not_the_hosts_504(srv: Server) -> None:
    offset = len(srv.log)
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{srv.url}/own_timeout.py")
    assert response.status_code == 500
    assert "own_timeout.py raised TimeoutError" in response.text
    log = log_since(srv, offset)
    assert "the script gave up on its own" in log
    assert "ran over" not in log


def raw_get(port: int, raw_path: str) -> tuple[int, bytes]:
    return raw_request(port, "GET", raw_path)


def raw_request(port: int, method: str, raw_path: str, headers: str = "") -> tuple[int, bytes]:
    """Send the path exactly as written: HTTP clients would normalise it."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        request = f"{method} {raw_path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n"
        sock.sendall(request.encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body
