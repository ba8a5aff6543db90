"""Log lines: the JSON and text formats, the ids of the logging task, and redaction.

Each test configures logging as ``realtime run`` does (``configure_logging``) onto a
buffer and reads back what a collector would read.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import json
import logging
import re
import sys
import threading
import urllib.parse
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypercorn.logging import AccessLogAtoms

from realtime.logs import (
    MAX_ID_LENGTH,
    REDACTED,
    LogHandler,
    Redactor,
    bind_context,
    configure_logging,
    log_access,
    log_context,
    log_uncaught,
    secret_values,
)
from realtime.options import Option

log = logging.getLogger("realtime.test_logs")

HMAC_SECRET = "hmac-secret-0123456789"
API_KEY = "api-key-abcdefghij"
PASSWORD = "admin-pass-XYZ987"
SECRETS = (HMAC_SECRET, API_KEY, PASSWORD)
JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI0MiJ9.c2lnbmF0dXJlLWJ5dGVz"

Configure = Callable[..., io.StringIO]


@pytest.fixture
def configure() -> Iterator[Configure]:
    """``configure(fmt, secrets)`` -> the buffer lines go to; undone after the test."""
    root = logging.getLogger()
    level = root.level

    def install(fmt: str = "json", secrets: tuple[str, ...] = SECRETS) -> io.StringIO:
        buffer = io.StringIO()
        configure_logging("debug", fmt, secrets, stream=buffer)
        return buffer

    yield install
    for handler in root.handlers[:]:
        if isinstance(handler, LogHandler):
            root.removeHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def records(buffer: io.StringIO) -> list[dict[str, Any]]:
    """Every line is one JSON object (a collector's contract)."""
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_line_has_the_fields(configure: Configure) -> None:
    buffer = configure("json")
    log.warning("disk at %d%%", 93)
    (line,) = records(buffer)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])
    assert line["level"] == "WARNING"
    assert line["logger"] == "realtime.test_logs"
    assert line["message"] == "disk at 93%"
    assert isinstance(line["pid"], int)
    assert "request" not in line and "exc_info" not in line


def test_json_carries_ids_access_fields_and_the_traceback(configure: Configure) -> None:
    buffer = configure("json")
    with log_context(request="ab12", client="7"):
        log_access("script", "POST", "/send.py", 200, 0.0125)
        try:
            raise RuntimeError("no luck")
        except RuntimeError:
            log.exception("script failed")
    log.info("after")
    access, failure, after = records(buffer)
    assert access["logger"] == "realtime.access"
    assert access["message"] == "POST /send.py 200 12.5ms"
    assert {k: access[k] for k in ("kind", "method", "path", "status", "duration")} == {
        "kind": "script",
        "method": "POST",
        "path": "/send.py",
        "status": 200,
        "duration": 0.0125,
    }
    assert (access["request"], access["client"]) == ("ab12", "7")
    assert failure["request"] == "ab12"
    assert isinstance(failure["exc_info"], str)
    assert (
        failure["exc_info"].startswith("Traceback")
        and "RuntimeError: no luck" in failure["exc_info"]
    )
    assert "request" not in after


def test_text_line_ends_with_the_ids(configure: Configure) -> None:
    buffer = configure("text")
    with log_context(request="ab12", client="7"):
        try:
            raise KeyError("k")
        except KeyError:
            log.error("lost %s", "it", exc_info=True)
    log.info("plain")
    lines = buffer.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ERROR realtime.test_logs: lost it "
        r"\[request=ab12 client=7\]",
        lines[0],
    )
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1].endswith("INFO realtime.test_logs: plain")


def test_ids_follow_a_thread_given_a_copied_context(configure: Configure) -> None:
    buffer = configure("json")
    with log_context(request="r1"):
        copied = contextvars.copy_context()
        worker = threading.Thread(target=copied.run, args=(log.info, "in a copy"))
        bare = threading.Thread(target=log.info, args=("in a bare thread",))
        worker.start()
        bare.start()
        worker.join()
        bare.join()
    by_message = {line["message"]: line for line in records(buffer)}
    assert by_message["in a copy"]["request"] == "r1"
    assert "request" not in by_message["in a bare thread"]


async def test_bind_context_stays_in_its_task(configure: Configure) -> None:
    buffer = configure("json")

    async def connection(name: str) -> None:
        bind_context(connection=name)
        await asyncio.sleep(0)
        log.info("serving %s", name)

    await asyncio.gather(connection("c1"), connection("c2"))
    log.info("outside")
    got = {line["message"]: line.get("connection") for line in records(buffer)}
    assert got == {"serving c1": "c1", "serving c2": "c2", "outside": None}


def test_ids_are_bounded(configure: Configure) -> None:
    buffer = configure("json")
    with log_context(request="x" * 1000, **{f"id{n}": str(n) for n in range(20)}):
        log.info("many")
    (line,) = records(buffer)
    assert line["request"] == "x" * MAX_ID_LENGTH
    assert len([key for key in line if key.startswith("id")]) < 20


# Redaction ------------------------------------------------------------------------


def assert_clean(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text, f"{secret!r} leaked into {text!r}"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secret_values_in_args_exceptions_and_extras(configure: Configure, fmt: str) -> None:
    odd = "s3cret/with+slash"
    buffer = configure(fmt, secrets=(*SECRETS, odd))
    log.info("key is %s, secret %r", API_KEY, HMAC_SECRET)
    log.info("dict %s", {"password": PASSWORD})
    try:
        raise ValueError(f"bad password {PASSWORD}")
    except ValueError:
        log.exception("login failed")
    log.info("extra", extra={"detail": f"used {API_KEY}"})
    log.info("encoded %s", "/x?k=" + urllib.parse.quote(odd, safe=""))
    text = buffer.getvalue()
    assert_clean(text, *SECRETS, odd, urllib.parse.quote(odd, safe=""))
    assert text.count(REDACTED) >= 5
    assert "login failed" in text and "ValueError: bad password" in text
    if fmt == "json":
        assert records(buffer)[3]["detail"] == f"used {REDACTED}"


def test_short_secret_values_are_not_redacted_by_value(configure: Configure) -> None:
    buffer = configure("json", secrets=("abc12",))
    log.info("abc12 stays")
    assert records(buffer)[0]["message"] == "abc12 stays"


@pytest.mark.parametrize(
    "message",
    [
        "Authorization: Bearer opaque-token-1",
        "headers {'authorization': 'apikey opaque-token-1', 'host': 'h'}",
        "scope headers [(b'authorization', b'Basic opaque-token-1')]",
        "X-API-Key: opaque-token-1",
        "sent Bearer opaque-token-1 upstream",
        "Cookie: session=opaque-token-1",
    ],
)
def test_authorization_headers_and_schemes(configure: Configure, message: str) -> None:
    buffer = configure("text", secrets=())
    log.warning(message)
    text = buffer.getvalue()
    assert_clean(text, "opaque-token-1")
    assert REDACTED in text


@pytest.mark.parametrize(
    "key",
    [
        "token",
        "key",
        "apikey",
        "api_key",
        "secret",
        "password",
        "sig",
        "signature",
        "auth",
        "cf_connect",
        "jwt",
        "TOKEN",
        "Api_Key",
        "access_token",
    ],
)
def test_query_string_values(configure: Configure, key: str) -> None:
    buffer = configure("json", secrets=())
    log.info("GET /send.py?channel=news&%s=opaque%%2Dvalue&x=1 500", key)
    (line,) = records(buffer)
    assert line["message"] == f"GET /send.py?channel=news&{key}={REDACTED}&x=1 500"


def test_jwts_urls_and_json_keys(configure: Configure) -> None:
    buffer = configure("json", secrets=())
    log.info("token %s in /p/%s/x", JWT, JWT)
    log.info("broker redis://:opaque-pw-77@127.0.0.1:6379/0")
    log.info('body {"token": "opaque-json-1", "channel": "news"}')
    first, url, body = (line["message"] for line in records(buffer))
    assert first == f"token {REDACTED} in /p/{REDACTED}/x"
    assert url == f"broker redis://:{REDACTED}@127.0.0.1:6379/0"
    assert body == f'body {{"token": "{REDACTED}", "channel": "news"}}'


def test_ordinary_text_is_left_alone(configure: Configure) -> None:
    buffer = configure("json")
    message = "serving /srv/app on http://127.0.0.1:8000 (asyncio loop, 1 worker), 50% busy"
    log.info(message)
    assert records(buffer)[0]["message"] == message


def scope(query: bytes, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/send.py",
        "query_string": query,
        "headers": headers,
        "client": ("127.0.0.1", 5000),
    }


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_hypercorn_access_line(configure: Configure, fmt: str) -> None:
    """Hypercorn's own line, with the query string and headers it may print."""
    buffer = configure(fmt)
    request = scope(
        b"token=" + JWT.encode() + b"&key=" + API_KEY.encode(),
        [(b"referer", f"http://h/chat?jwt={JWT}".encode()), (b"authorization", b"Bearer zz9")],
    )
    atoms = AccessLogAtoms(request, {"status": 200, "headers": []}, 0.25)  # type: ignore[arg-type]
    access = logging.getLogger("hypercorn.access")
    access.info('%(h)s "%(R)s" %(s)s "%(f)s" "%({authorization}i)s"', atoms)
    text = buffer.getvalue()
    assert_clean(text, JWT, API_KEY, "zz9")
    if fmt == "json":
        (line,) = records(buffer)
        assert line["message"].startswith(
            f'127.0.0.1:5000 "GET /send.py?token={REDACTED}&key={REDACTED} 1.1" 200'
        )
        assert {k: line[k] for k in ("kind", "method", "path", "status", "duration")} == {
            "kind": "http",
            "method": "GET",
            "path": "/send.py",
            "status": 200,
            "duration": 0.25,
        }


def test_bad_args_never_raise_nor_leak() -> None:
    """Straight to the handler: pytest's own handler would raise on these first."""
    buffer = io.StringIO()
    handler = configure_logging("info", "json", SECRETS, stream=buffer)
    logging.getLogger().removeHandler(handler)
    for msg, arg in (("two %s %s", API_KEY), ("%d", "not-a-number-" + API_KEY)):
        handler.handle(logging.LogRecord("x", logging.INFO, __file__, 1, msg, (arg,), None))
    logging.captureWarnings(False)
    first, second = records(buffer)
    assert first["message"] == "unformattable log message: two %s %s"
    assert second["message"] == "unformattable log message: %d"
    assert_clean(buffer.getvalue(), API_KEY)


def test_a_failing_redaction_drops_the_message_not_the_record() -> None:
    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no str")

    record = logging.LogRecord("x", logging.INFO, __file__, 1, Unprintable(), None, None)
    assert Redactor(SECRETS).filter(record) is True
    assert record.getMessage().startswith(REDACTED)


def test_warnings_go_through_the_handler(configure: Configure) -> None:
    buffer = configure("json")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(f"deprecated call with {PASSWORD}", UserWarning, stacklevel=1)
    (line,) = records(buffer)
    assert line["logger"] == "py.warnings"
    assert_clean(line["message"], PASSWORD)


def test_configure_again_replaces_its_own_handler_only(configure: Configure) -> None:
    other = logging.NullHandler()
    logging.getLogger().addHandler(other)
    try:
        first = configure("text")
        second = configure("json")
        log.info("once")
        assert first.getvalue() == ""
        assert len(records(second)) == 1
        assert other in logging.getLogger().handlers
    finally:
        logging.getLogger().removeHandler(other)


def test_uncaught_exceptions_are_logged_and_redacted(
    configure: Configure, monkeypatch: pytest.MonkeyPatch
) -> None:
    buffer = configure("json")
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    log_uncaught()

    def fail() -> None:
        raise LookupError(f"no user for {API_KEY}")

    try:
        fail()
    except LookupError as exc:
        sys.excepthook(LookupError, exc, exc.__traceback__)
    thread = threading.Thread(target=fail, name="worker-1")
    thread.start()
    thread.join()
    main, other = records(buffer)
    assert (main["level"], main["message"]) == ("CRITICAL", "uncaught LookupError")
    assert other["message"] == "uncaught LookupError in thread worker-1"
    assert other["exc_info"].endswith(f"LookupError: no user for {REDACTED}")
    assert_clean(buffer.getvalue(), API_KEY)


def test_secret_values_come_from_secret_options_that_are_set() -> None:
    options = [
        Option("token_hmac_secret", "", "h", secret=True),
        Option("api_key", "", "k", secret=True),
        Option("bind", "127.0.0.1:8000", "b"),
    ]
    settings = {"token_hmac_secret": HMAC_SECRET, "api_key": "", "bind": "127.0.0.1:8000"}
    assert secret_values(options, settings) == [HMAC_SECRET]
