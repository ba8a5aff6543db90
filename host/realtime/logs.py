"""Logging: ids that follow a connection or request, and one access line per request.

A plugin that serves a connection or a request binds its id for the task that serves
it (``with log_context(client="42"):``); every record logged in that task (and in the
threads it hands work to with ``contextvars.copy_context``) then carries it, as a
field of the JSON format or a suffix of the text one.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import logging
import re
import sys
import threading
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType, TracebackType
from typing import IO, TYPE_CHECKING, Any

import pythonjsonlogger.core
import pythonjsonlogger.json

if TYPE_CHECKING:
    from .options import Option

#: The ids in effect: ``connection``, ``client``, ``request``... (short strings).
CONTEXT: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "realtime_log_context", default=MappingProxyType({})
)

access_log = logging.getLogger("realtime.access")


@contextlib.contextmanager
def log_context(**ids: str) -> Iterator[None]:
    """Add ``ids`` to every record logged inside the block (in this task or thread)."""
    token = CONTEXT.set({**CONTEXT.get(), **ids})
    try:
        yield
    finally:
        CONTEXT.reset(token)


def bind_context(**ids: str) -> None:
    """Add ``ids`` for the rest of the current task (a connection's own task)."""
    CONTEXT.set({**CONTEXT.get(), **ids})


def log_access(kind: str, method: str, path: str, status: int, duration: float) -> None:
    """One line per script run or server-API call: ``kind`` is ``script`` or ``api``.

    ``path`` has no query string (it may hold a token); ``duration`` is in seconds.
    """
    if access_log.isEnabledFor(logging.INFO):
        access_log.info(
            "%s %s %d %.1fms",
            method,
            path,
            status,
            duration * 1000,
            extra={
                "kind": kind,
                "method": method,
                "path": path,
                "status": status,
                "duration": round(duration, 6),
            },
        )


# Configuration: one handler on the root logger, for realtime's, Hypercorn's and the
# app's records alike, with the ids of the record's task and secrets taken out. ----

#: What a secret becomes in a log line.
REDACTED = "[redacted]"
#: Secret values shorter than this are not redacted by value (a 3-letter password
#: would blank every word holding those letters); the patterns below still apply.
MIN_SECRET_LENGTH = 6
#: Bounds on what a record carries from ``CONTEXT``: ids are short, and few.
MAX_IDS = 8
MAX_ID_LENGTH = 64

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Names of parameters and keys whose values are secrets: token, key, apikey,
#: api_key, secret, password, sig(nature), auth(orization), jwt, cf_connect, and any
#: name holding one of them (access_token, client_secret, X-API-Key).
_SENSITIVE_NAME = (
    r"[\w.-]{0,40}(?:token|key|secret|passw(?:or)?d|pwd|sig|signature|auth|jwt|cf_connect)"
    r"[\w.-]{0,40}"
)

#: The patterns, in order; each ``(triggers, regex, replacement)``: the regex runs
#: only on text whose lower case holds one of its triggers, so a line with nothing
#: to hide costs a few substring tests. Precompiled once: a log record is never per
#: delivery, but an access line per request should stay cheap.
_PATTERNS: tuple[tuple[tuple[str, ...], re.Pattern[str], str], ...] = (
    # (d) anything JWT-shaped: a base64url JSON header, a JSON payload, a signature.
    (("eyj",), re.compile(r"(?<![\w-])eyJ[\w-]*+\.eyJ[\w-]*+\.[\w-]*+"), REDACTED),
    # (b) header values: "Authorization: Bearer x", "'authorization': '...'",
    # "(b'authorization', b'...')", "X-API-Key=...", cookies.
    (
        ("authorization", "x-api-key", "cookie"),
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization|\bx-api-key|\b(?:set-)?cookie)"
            r"(['\"]\s*,\s*(?:b(?=['\"]))?['\"]|['\"]?\s*[:=]\s*(?:b(?=['\"]))?['\"]?)[^\r\n'\"]+"
        ),
        rf"\1\2{REDACTED}",
    ),
    # (b) credentials after an HTTP auth scheme, wherever they appear.
    (
        ("bearer", "basic", "apikey"),
        re.compile(r"(?i)\b(bearer|basic|apikey)(\s+)[\w.~+/-]+=*"),
        rf"\1\2{REDACTED}",
    ),
    # (c) query-string and form values: ?token=..., &api_key=..., cf_connect=...
    (
        ("=",),
        re.compile(rf"(?i)(?<![\w.-])({_SENSITIVE_NAME})=[^&#\s'\"<>]+"),
        rf"\1={REDACTED}",
    ),
    # (c) the same names as keys of JSON or a repr'd dict: {"token": "..."}.
    (
        (":",),
        re.compile(rf"(?i)([\"']{_SENSITIVE_NAME}[\"']\s*:\s*)([\"'])(?:\\.|(?!\2).)*\2"),
        rf"\1\2{REDACTED}\2",
    ),
    # A password in a URL's user info: redis://:PASSWORD@host, https://u:PASSWORD@h.
    (
        ("@",),
        re.compile(r"(?i)(?<![\w+.-])([a-z][\w+.-]{0,30}://[^\s:/@]{0,256}:)[^\s@/]{1,256}@"),
        rf"\1{REDACTED}@",
    ),
)

#: Any trigger at all: most lines hold none, and then no pattern runs.
_ANY_TRIGGER = re.compile("|".join(re.escape(t) for triggers, _, _ in _PATTERNS for t in triggers))
_TRIGGERS = tuple(re.compile("|".join(map(re.escape, triggers))) for triggers, _, _ in _PATTERNS)

#: Attributes every LogRecord has (and ours): anything else on a record is an
#: ``extra=`` field, which the JSON format shows and so the redactor must see.
_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "realtime_ids",
}


def secret_values(options: Iterable[Option[Any]], settings: Mapping[str, Any]) -> list[str]:
    """The values of ``options`` declared ``secret=True`` that are set, to redact."""
    values: list[str] = []
    for option in options:
        value = settings.get(option.name)
        if option.secret and isinstance(value, str) and value:
            values.append(value)
    return values


class Redactor(logging.Filter):
    """Takes secrets out of each record before any formatter sees it; never drops one.

    It redacts the message as formatted with its %-args (then drops the args, so no
    handler formats them again), the traceback text, the stack, and string
    ``extra=`` fields. Secret values of ``MIN_SECRET_LENGTH`` or more are replaced
    wherever they appear, URL-encoded too; the patterns catch tokens, keys,
    ``Authorization`` headers and JWTs whose value the process never knew.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        variants: set[str] = set()
        for secret in secrets:
            if len(secret) >= MIN_SECRET_LENGTH:
                variants.update((secret, urllib.parse.quote(secret, safe=""), repr(secret)[1:-1]))
        # Longest first, so a secret holding another is replaced whole.
        ordered = sorted(variants, key=len, reverse=True)
        self._values = re.compile("|".join(map(re.escape, ordered))) if ordered else None
        self._exc_formatter = logging.Formatter()

    def redact(self, text: str) -> str:
        """``text`` with every secret replaced by ``[redacted]``."""
        if not text:
            return text
        if self._values is not None:
            text = self._values.sub(REDACTED, text)
        # A replacement adds no trigger, so the first lower case serves for all.
        lowered = text.lower()
        if _ANY_TRIGGER.search(lowered) is None:
            return text
        for (_, pattern, replacement), trigger in zip(_PATTERNS, _TRIGGERS, strict=True):
            if trigger.search(lowered) is not None:
                text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            self._redact_record(record)
        except Exception:  # a log call must never fail because of this filter
            record.msg, record.args = f"{REDACTED} (the log record could not be redacted)", None
            record.exc_info = record.exc_text = record.stack_info = None
        return True

    def _redact_record(self, record: logging.LogRecord) -> None:
        if record.name == "hypercorn.access" and isinstance(record.args, Mapping):
            _access_fields(record, record.args)
        try:
            message = record.getMessage()
        except Exception:  # bad %-args: show the template, never the args
            message = f"unformattable log message: {record.msg!s}"
        record.msg, record.args = self.redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._exc_formatter.formatException(record.exc_info)
        # Formatters would format exc_info again, unredacted: keep only the text.
        record.exc_info = None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name, value in list(record.__dict__.items()):
            if isinstance(value, str) and name not in _RECORD_ATTRS:
                record.__dict__[name] = self.redact(value)


def _access_fields(record: logging.LogRecord, atoms: Mapping[str, Any]) -> None:
    """Hypercorn's access line as fields, like ``log_access``'s (kind ``http``).

    The line itself is what matters: a field that does not parse is left out.
    """
    status = str(atoms.get("s", ""))
    record.__dict__.update(
        kind="http",
        method=str(atoms.get("m", ""))[:16],
        path=str(atoms.get("U", "")),
        status=int(status) if status.isdigit() else None,
    )
    with contextlib.suppress(TypeError, ValueError):
        record.__dict__["duration"] = float(atoms.get("L", ""))


class ContextFilter(logging.Filter):
    """Puts the ids of ``CONTEXT`` (in the logging task or thread) on each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        ids = CONTEXT.get()
        if ids:
            record.realtime_ids = {
                str(key)[:MAX_ID_LENGTH]: str(value)[:MAX_ID_LENGTH]
                for key, value in list(ids.items())[:MAX_IDS]
            }
        return True


def _ids(record: logging.LogRecord) -> Mapping[str, str]:
    ids: Mapping[str, str] = getattr(record, "realtime_ids", None) or {}
    return ids


class TextFormatter(logging.Formatter):
    """The classic line, then `` [request=ab12 client=7]`` when ids are bound."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = _ids(record)
        if ids:
            line += " [" + " ".join(f"{key}={value}" for key, value in ids.items()) + "]"
        return line


class JsonFormatter(pythonjsonlogger.json.JsonFormatter):
    """One JSON object per line: time, level, logger, message, pid, ids, extra fields.

    ``time`` is ISO 8601 in UTC with milliseconds; ``exc_info`` and ``stack_info``
    are strings; ``extra=`` fields (the access lines' kind, method, path, status,
    duration) are fields of their own.
    """

    def __init__(self) -> None:
        super().__init__(reserved_attrs=[*pythonjsonlogger.core.RESERVED_ATTRS, "realtime_ids"])

    def add_fields(
        self,
        log_data: dict[str, Any],
        record: logging.LogRecord,
        message_dict: dict[str, Any],
    ) -> None:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        log_data["time"] = created.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        log_data["level"] = record.levelname
        log_data["logger"] = record.name
        log_data["message"] = record.message
        log_data["pid"] = record.process
        for key, value in _ids(record).items():
            log_data.setdefault(key, value)
        super().add_fields(log_data, record, message_dict)


def log_uncaught() -> None:
    """Send exceptions nothing caught (main thread, other threads) through logging,
    as CRITICAL records of ``realtime``, so they are formatted and redacted like the
    rest instead of printed raw. Ctrl-C keeps Python's own message.
    """
    log = logging.getLogger("realtime")

    def main_hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, exc, tb)
            return
        log.critical("uncaught %s", kind.__name__, exc_info=(kind, exc, tb))

    def thread_hook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit or args.exc_value is None:
            return
        name = args.thread.name if args.thread is not None else "?"
        exc_info = (args.exc_type, args.exc_value, args.exc_traceback)
        log.critical("uncaught %s in thread %s", args.exc_type.__name__, name, exc_info=exc_info)

    sys.excepthook = main_hook
    threading.excepthook = thread_hook


class LogHandler(logging.StreamHandler[IO[str]]):
    """The handler ``configure_logging`` installs (so a second call replaces it)."""


def configure_logging(
    level: str, fmt: str = "text", secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """Route every record (realtime's, Hypercorn's, the app's, warnings) through one
    handler on the root logger: ``fmt`` is ``text`` or ``json``, ``secrets`` are the
    values to redact. A handler from an earlier call is replaced; others stay (pytest's).
    """
    if fmt not in ("text", "json"):
        raise ValueError(f"log format must be text or json, got {fmt!r}")
    handler = LogHandler(sys.stderr if stream is None else stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(Redactor(secrets))
    root = logging.getLogger()
    for old in root.handlers[:]:
        if isinstance(old, LogHandler):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    logging.captureWarnings(True)
    return handler
