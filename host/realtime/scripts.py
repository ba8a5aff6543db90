"""Drop-in scripts: resolve a URL path to a file under ``app/``, compile it once, run it.

A script runs top to bottom in a worker thread, like PHP runs a ``.php`` file,
with the plugins' native functions, ``request`` and ``response`` in its namespace.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json as jsonlib
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

from werkzeug.datastructures import CombinedMultiDict, Headers, MultiDict

SCRIPT_SUFFIX = ".py"
#: Names the host puts in every script's namespace; a native function may not take them.
RESERVED_NAMES = frozenset({"request", "response", "print", "__name__", "__file__"})
#: Files that are never served as static content.
PRIVATE_SUFFIXES = (".py", ".pyc", ".pyo")


def resolve(root: Path, url_path: str) -> Path | None:
    """Map a decoded URL path to a file inside ``root``, or ``None`` when it must 404.

    Refuses hidden names and ``..`` (any segment starting with a dot), empty segments
    (which is how absolute paths arrive), NUL and backslash, and anything whose real
    path (symlinks followed) leaves ``root``.
    """
    if "\x00" in url_path or "\\" in url_path:
        return None
    parts = url_path.split("/")
    if parts and parts[-1] == "":
        parts = [*parts[:-1], "index.html"]
    for part in parts:
        if not part or part.startswith("."):
            return None
    real_root = root.resolve()
    candidate = real_root.joinpath(*parts)
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(real_root):
        return None
    if real.is_dir():
        index = real / "index.html"
        return index if index.is_file() else None
    return real if real.is_file() else None


class CompileCache:
    """Compiled scripts keyed by path, recompiled when the file's stat changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int, int], CodeType]] = {}
        self.compilations = 0

    def get(self, path: Path) -> CodeType:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        code = compile(path.read_bytes(), str(path), "exec", dont_inherit=True)
        with self._lock:
            self._entries[path] = (key, code)
            self.compilations += 1
        return code


@dataclass(frozen=True)
class ScriptRequest:
    """What a script may read of its request, read in full before the script starts."""

    method: str
    path: str
    query: MultiDict[str, str]
    form: MultiDict[str, str]
    headers: Headers
    body: bytes
    remote_addr: str | None
    scheme: str
    host: str
    cookies: Mapping[str, str] = field(default_factory=dict)

    @property
    def values(self) -> CombinedMultiDict[str, str]:
        """Query and form together, like PHP's ``$_REQUEST``."""
        return CombinedMultiDict([self.query, self.form])

    @property
    def json(self) -> Any:
        """The body parsed as JSON when the request says it is JSON, else ``None``."""
        mimetype = self.headers.get("content-type", "").split(";")[0].strip().lower()
        if not self.body or not (mimetype == "application/json" or mimetype.endswith("+json")):
            return None
        try:
            return jsonlib.loads(self.body)
        except ValueError:
            return None


class ScriptResponse:
    """What a script shapes: status, headers, and the body it prints or writes."""

    def __init__(self) -> None:
        self.status = 200
        self.headers = Headers()
        # Plain text by default: a script echoing user input must opt in to HTML.
        self.headers["Content-Type"] = "text/plain; charset=utf-8"
        self._body = io.BytesIO()

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    @content_type.setter
    def content_type(self, value: str) -> None:
        self.headers["Content-Type"] = value

    def write(self, data: str | bytes) -> int:
        return self._body.write(data.encode() if isinstance(data, str) else data)

    def flush(self) -> None:
        """Part of the file protocol, so ``print(..., flush=True)`` works."""

    def json(self, value: Any, status: int | None = None) -> None:
        """Replace the body with ``value`` as JSON."""
        self.content_type = "application/json"
        self._body = io.BytesIO(jsonlib.dumps(value).encode())
        if status is not None:
            self.status = status

    def redirect(self, location: str, status: int = 302) -> None:
        self.status = status
        self.headers["Location"] = location

    @property
    def body(self) -> bytes:
        return self._body.getvalue()


def build_namespace(
    path: Path,
    functions: Mapping[str, Callable[..., Any]],
    request: ScriptRequest,
    response: ScriptResponse,
) -> dict[str, Any]:
    def script_print(*args: Any, file: Any = None, **kwargs: Any) -> None:
        builtins.print(*args, file=response if file is None else file, **kwargs)

    return {
        "__name__": "__main__",
        "__file__": os.fspath(path),
        "__builtins__": builtins,
        **functions,
        "print": script_print,
        "request": request,
        "response": response,
    }


def execute(code: CodeType, namespace: dict[str, Any]) -> None:
    """Run a script; ``exit()`` ends it early, as PHP's ``exit`` does."""
    with contextlib.suppress(SystemExit):
        exec(code, namespace)
