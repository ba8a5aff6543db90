"""A real server's log in both formats: access lines, ids, and no secret anywhere.

``realtime run`` is started with every secret option set (HMAC secret, API key, admin
password) and ``--access-log --log-level debug``; the test sends requests carrying
those secrets in query strings, headers and bodies, runs a script that logs them and
one that raises with them, then reads the whole log (stdout and stderr).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from realtime.host import all_options
from realtime.plugins import Plugins
from tests.conftest import RedisServer, Server, reserve_port, wait_until

HMAC_SECRET = "hmac-secret-for-the-log-test-0123"
API_KEY = "api-key-for-the-log-test-4567"
ADMIN_PASSWORD = "admin-password-log-test-89"
WRONG_KEY = "wrong-api-key-value-000111"
REQUEST_ID = "req-logtest-1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], secret: str) -> str:
    """An HS256 token, as a backend mints one for the Centrifuge connect."""
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64url(json.dumps(claims).encode())
    signature = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(signature)}"


JWT = make_jwt({"sub": "42"}, HMAC_SECRET)
FORGED_JWT = make_jwt({"sub": "43"}, "not-the-secret-at-all")

LOGGING_SCRIPT = """\
import logging
log = logging.getLogger("app.secrets")
token, auth = request.query.get("token"), request.headers.get("Authorization")
log.warning("query token=%s auth %s", token, auth)
log.warning("headers %r", dict(request.headers))
log.info("user agent says %s", request.headers.get("User-Agent"))
print("logged")
"""

RAISING_SCRIPT = """\
raise RuntimeError(f"cannot use {request.query.get('key')} with {request.query.get('jwt')}")
"""


def has_option(name: str) -> bool:
    return any(option.name == name for _, option in all_options(Plugins.discover()))


def secrets() -> list[str]:
    return [HMAC_SECRET, API_KEY, ADMIN_PASSWORD, WRONG_KEY, JWT, FORGED_JWT]


@pytest.fixture(params=["json", "text"])
def logged(app_dir: Path, request: pytest.FixtureRequest) -> tuple[str, str]:
    """(format, the server's whole log) after requests that carry every secret."""
    fmt: str = request.param
    (app_dir / "logs_secret.py").write_text(LOGGING_SCRIPT)
    (app_dir / "raise_secret.py").write_text(RAISING_SCRIPT)
    args = [
        "--log-format", fmt, "--log-level", "debug", "--access-log",
        "--token-hmac-secret", HMAC_SECRET, "--api-key", API_KEY,
    ]  # fmt: skip
    internal = 0
    if has_option("admin_password"):  # the admin plugin, where it is installed
        internal = reserve_port()
        args += ["--admin-password", ADMIN_PASSWORD, "--internal-bind", f"127.0.0.1:{internal}"]
    server = Server(app_dir, *args).start()
    try:
        exercise(server, internal)
    finally:
        server.stop()
    return fmt, server.log


def exercise(server: Server, internal: int) -> None:
    with httpx.Client(base_url=server.url, timeout=10) as client:
        answer = client.get(
            "/logs_secret.py",
            params={"token": JWT, "channel": "news"},
            headers={
                "Authorization": f"Bearer {JWT}",
                "Referer": f"{server.url}/chat.html?jwt={JWT}&api_key={API_KEY}",
                "User-Agent": f"tester/1 {API_KEY}",
                "X-Request-Id": REQUEST_ID,
            },
        )
        assert answer.text == "logged\n"
        answer = client.get("/raise_secret.py", params={"key": API_KEY, "jwt": JWT})
        assert answer.status_code == 500
        publish = {"channel": "news", "data": {"token": JWT}}
        answer = client.post(
            "/api/publish", json=publish, headers={"Authorization": f"apikey {API_KEY}"}
        )
        assert answer.status_code == 200, answer.text
        answer = client.post("/api/publish", json=publish, headers={"X-API-Key": WRONG_KEY})
        assert answer.status_code == 401
        answer = client.post(f"/api/publish?api_key={WRONG_KEY}", json=publish)
        assert answer.status_code == 401
    with connect(server.url.replace("http", "ws") + "/connection/websocket") as ws:
        ws.send(json.dumps({"id": 1, "connect": {"token": FORGED_JWT}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 3500  # invalid token
    if internal:
        admin = f"http://127.0.0.1:{internal}/admin/login"
        wait_until(lambda: _answers(admin), timeout=10, message="the internal listener")
        for password, status in ((WRONG_KEY, 401), (ADMIN_PASSWORD, 303)):
            answer = httpx.post(admin, data={"password": password}, timeout=10)
            assert answer.status_code == status
    # Every line written before the stop: the access lines come after the responses.
    wait_until(lambda: "raise_secret" in server.log, message="the access lines")


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=1)
    except httpx.HTTPError:
        return False
    return True


def test_every_line_has_ids_access_fields_and_no_secret(logged: tuple[str, str]) -> None:
    fmt, log = logged
    assert_no_secret(log)
    assert_access_lines(fmt, log)


def assert_no_secret(log: str) -> None:
    for secret in secrets():
        assert secret not in log, f"{secret[:12]}... leaked"
    # Nor the pieces of the token that carry the claims and the signature.
    for part in JWT.split("."):
        assert part not in log
    assert "[redacted]" in log


def assert_access_lines(fmt: str, log: str) -> None:
    if fmt == "text":
        assert "hypercorn.access:" in log
        assert "realtime.access: GET /logs_secret.py 200" in log
        assert "realtime.access: GET /raise_secret.py 500" in log
        assert "realtime.access: POST /api/publish 401" in log
        assert f"[request={REQUEST_ID}]" in log
        assert "RuntimeError: cannot use [redacted] with [redacted]" in log
        return
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    access = [
        (line["kind"], line["method"], line["path"], line["status"])
        for line in lines
        if line["logger"] == "realtime.access"
    ]
    assert ("script", "GET", "/logs_secret.py", 200) in access
    assert ("script", "GET", "/raise_secret.py", 500) in access
    assert ("api", "POST", "/api/publish", 200) in access
    assert ("api", "POST", "/api/publish", 401) in access
    http = [
        (line["kind"], line["method"], line["path"], line["status"])
        for line in lines
        if line["logger"] == "hypercorn.access"
    ]
    assert ("http", "GET", "/logs_secret.py", 200) in http
    script_lines = [line for line in lines if line["logger"] == "app.secrets"]
    assert len(script_lines) == 3
    assert all(line["request"] == REQUEST_ID for line in script_lines)
    (failure,) = [
        line for line in lines if "exc_info" in line and "raise_secret" in line["message"]
    ]
    assert failure["exc_info"].endswith("RuntimeError: cannot use [redacted] with [redacted]")
    assert "request" in failure


def test_workers_log_through_the_same_handler(app_dir: Path, redis_server: RedisServer) -> None:
    """``--workers 2`` forks after logging is set up: every process redacts, in JSON,
    the Redis password in ``--broker`` included."""
    password = "redis-pass-for-the-log-test-42"
    redis_server.cli("ACL", "SETUSER", "realtime", "on", f">{password}", "~*", "&*", "+@all")
    broker = f"redis://realtime:{password}@127.0.0.1:{redis_server.port}/0"
    server = Server(
        app_dir, "--workers", "2", "--broker", broker, "--log-format", "json",
        "--access-log", "--api-key", API_KEY,
    ).start()  # fmt: skip
    try:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for _ in range(8):  # new connections, so both workers likely get some
                answer = client.get(
                    "/send.py",
                    params={"message": "hi", "token": JWT},
                    headers={"User-Agent": f"tester {API_KEY}", "Connection": "close"},
                )
                assert answer.status_code == 200
        wait_until(lambda: server.log.count("realtime.access") >= 8, message="access lines")
    finally:
        server.stop()
    log = server.log
    for secret in (password, API_KEY, JWT):
        assert secret not in log
    lines = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert len({line["pid"] for line in lines}) >= 3  # the supervisor and two workers
    assert any(line["message"].startswith("broker: redis://") for line in lines)
