"""Drop-in scripts: resolve a URL path to a file under ``app/``, compile it once, run it.

A script runs top to bottom in a worker thread, like PHP runs a ``.php`` file,
with the plugins' native functions, ``request`` and ``response`` in its namespace.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import io
import json as jsonlib
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any, Literal
from urllib.parse import parse_qsl

from werkzeug.datastructures import CombinedMultiDict, FileStorage, Headers, MultiDict
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import MultiPartParser
from werkzeug.http import parse_options_header

from .errors import HTTPError
from .routes import ALL_METHODS

SCRIPT_SUFFIX = ".py"
#: Names the host puts in every script's namespace; a native function may not take them.
RESERVED_NAMES = frozenset({"request", "response", "print", "__name__", "__file__"})
#: Dot-parts of a name that mark an editor backup or a leftover: never served, never run.
BACKUP_SUFFIXES = frozenset({"bak", "orig", "swp", "swo", "tmp", "old", "save"})

#: What a script accepts when it declares nothing.
DEFAULT_METHODS = ("GET", "POST")
#: Answered by the host from the script's declaration, never by running it.
HOST_METHODS = ("HEAD", "OPTIONS")
#: The module-level name a script declares its methods with: ``METHODS = ("GET", "DELETE")``.
METHODS_NAME = "METHODS"

#: Defaults of the ``max_form_size`` and ``max_form_fields`` settings.
DEFAULT_MAX_FORM_SIZE = 256 * 1024
DEFAULT_MAX_FORM_FIELDS = 1000

URLENCODED = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"


class BadRequest(HTTPError):
    """The client sent something the script cannot read (a body that does not parse)."""

    status = 400


class ContentTooLarge(HTTPError):
    """The body is over a limit for what the script asked of it (form, JSON)."""

    status = 413


Kind = Literal["script", "public", "private"]


def _name_kind(name: str) -> Kind:
    """``script``, ``public`` or ``private`` (hidden, bytecode, an editor's backup)."""
    lowered = name.lower()
    dot_parts = lowered.split(".")[1:]
    if (
        name.startswith(".")
        or name == "__pycache__"
        or name.endswith("~")
        or (len(name) > 1 and name.startswith("#") and name.endswith("#"))
        or any(part in BACKUP_SUFFIXES for part in dot_parts)
    ):
        return "private"
    if name.endswith(SCRIPT_SUFFIX):
        return "script"
    # send.PY, send.pyc, send.py.txt...: never a script here, and never its source either.
    return "private" if any(part.startswith("py") for part in dot_parts) else "public"


def _path_kind(parts: tuple[str, ...] | list[str]) -> Kind:
    """The kind of a file from its path: any private or script-like folder makes it private."""
    if any(_name_kind(part) != "public" for part in parts[:-1]):
        return "private"
    return _name_kind(parts[-1])


def resolve(root: Path, url_path: str) -> Path | None:
    """Map a decoded URL path to a file inside ``root``, or ``None`` when it must 404.

    Refuses NUL, backslash and empty segments (how absolute paths arrive), anything
    whose real path (symlinks followed) leaves ``root``, and private names (hidden,
    ``..``, ``__pycache__``, bytecode, editor backups such as ``send.py~`` or
    ``send.py.bak``). Both the URL and the real path, relative to the real root, are
    judged, and they must agree on being a script: a link ``x.txt`` to ``send.py`` is
    neither run nor served, a link ``x.html`` to ``.env`` is not served. What comes
    back ending in ``.py`` is a script to run; anything else is a public static file.
    """
    if "\x00" in url_path or "\\" in url_path:
        return None
    parts = url_path.split("/")
    if parts[-1] == "":
        parts[-1] = "index.html"
    if not all(parts) or any(part.startswith(".") for part in parts):
        return None
    real_root = root.resolve()
    candidate = real_root.joinpath(*parts)
    try:
        if candidate.is_dir():
            parts.append("index.html")
            candidate = candidate / "index.html"
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(real_root) or not real.is_file():
        return None
    kind = _path_kind(parts)
    if kind == "private" or _path_kind(real.relative_to(real_root).parts) != kind:
        return None
    return real


@dataclass(frozen=True)
class Script:
    """A compiled script and the HTTP methods it runs for."""

    code: CodeType
    methods: tuple[str, ...] = DEFAULT_METHODS

    @property
    def allow(self) -> str:
        """The ``Allow`` header: the declared methods and those the host answers itself."""
        extra = ("HEAD",) if "GET" in self.methods else ()
        return ", ".join((*self.methods, *extra, "OPTIONS"))


def _binds_methods(node: ast.AST) -> bool:
    """Whether ``node`` binds the name ``METHODS`` in the scope it belongs to."""
    if isinstance(node, ast.Name):
        return node.id == METHODS_NAME and not isinstance(node.ctx, ast.Load)
    if isinstance(node, ast.alias):
        return (node.asname or node.name) == METHODS_NAME
    if isinstance(node, ast.Global | ast.Nonlocal):
        return METHODS_NAME in node.names
    if isinstance(node, ast.MatchMapping):
        return node.rest == METHODS_NAME
    named = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.ExceptHandler
    captures = ast.MatchAs | ast.MatchStar
    return isinstance(node, named | captures) and node.name == METHODS_NAME


def _module_scope(tree: ast.Module) -> list[ast.AST]:
    """Every node of the module's own scope (a function's body, say, is another scope).

    ``global`` statements are kept wherever they are, since they reach the module.
    """
    nested = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda | ast.ClassDef
    found: list[ast.AST] = []
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        found.append(node)
        if isinstance(node, nested):
            found.extend(inner for inner in ast.walk(node) if isinstance(inner, ast.Global))
            continue
        stack.extend(ast.iter_child_nodes(node))
    return found


def declared_methods(tree: ast.Module, filename: str) -> tuple[str, ...]:
    """The script's ``METHODS``, read from its source so the script need not run.

    It must be bound once, at the top level, to a literal tuple (or list) of upper-case
    method names; anything else is a ``SyntaxError`` pointing at it, so the script
    cannot be served with methods the host would have to guess.
    """
    binds = [node for node in _module_scope(tree) if _binds_methods(node)]
    if not binds:
        return DEFAULT_METHODS
    declarations = [
        statement
        for statement in tree.body
        if (
            isinstance(statement, ast.Assign)
            and len(statement.targets) == 1
            and _is_methods_name(statement.targets[0])
        )
        or (
            isinstance(statement, ast.AnnAssign)
            and statement.value is not None
            and _is_methods_name(statement.target)
        )
    ]

    def fail(node: ast.AST, why: str) -> SyntaxError:
        location = (filename, getattr(node, "lineno", 1), getattr(node, "col_offset", 0) + 1, None)
        example = f"{METHODS_NAME} = ('GET', 'POST')"
        return SyntaxError(f"{why}: declare it once at the top level, like {example}", location)

    if len(binds) != 1 or len(declarations) != 1:
        raise fail(binds[-1], f"{METHODS_NAME} must be a plain assignment, made once")
    value_node = declarations[0].value
    assert value_node is not None  # an AnnAssign without a value is no declaration
    try:
        value = ast.literal_eval(value_node)
    except ValueError:
        raise fail(value_node, f"{METHODS_NAME} must be a literal, read without running") from None
    if not isinstance(value, tuple | list) or not value:
        raise fail(value_node, f"{METHODS_NAME} must be a non-empty tuple of method names")
    methods: list[str] = []
    for method in value:
        if not isinstance(method, str) or not re.fullmatch("[A-Z]+", method):
            raise fail(value_node, f"{METHODS_NAME} holds {method!r}, not an upper-case name")
        if method in HOST_METHODS:
            raise fail(value_node, f"{method} is answered by the host; leave it out")
        if method not in ALL_METHODS:
            raise fail(value_node, f"{method} is not routed here ({', '.join(ALL_METHODS)})")
        if method not in methods:
            methods.append(method)
    return tuple(methods)


def _is_methods_name(node: ast.AST) -> bool:
    return isinstance(node, ast.Name) and node.id == METHODS_NAME


class CompileCache:
    """Compiled scripts keyed by path, recompiled when the file's stat changes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[Path, tuple[tuple[int, int, int], Script]] = {}
        self.compilations = 0

    def get(self, path: Path) -> Script:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            entry = self._entries.get(path)
        if entry is not None and entry[0] == key:
            return entry[1]
        filename = str(path)
        tree = ast.parse(path.read_bytes(), filename)
        script = Script(
            compile(tree, filename, "exec", dont_inherit=True),
            declared_methods(tree, filename),
        )
        with self._lock:
            self._entries[path] = (key, script)
            self.compilations += 1
        return script


@dataclass(frozen=True)
class ScriptRequest:
    """What a script may read of its request.

    The body is read in full before the script starts; the form and JSON are parsed
    on first use, in the script's thread, so that a large or hostile body never
    stalls the event loop, and only within ``max_form_size`` bytes and
    ``max_form_fields`` fields, since even in a thread the parse holds the GIL.
    """

    method: str
    path: str
    query: MultiDict[str, str]
    headers: Headers
    body: bytes
    remote_addr: str | None
    scheme: str
    host: str
    cookies: Mapping[str, str] = field(default_factory=dict)
    max_form_size: int = DEFAULT_MAX_FORM_SIZE
    max_form_fields: int = DEFAULT_MAX_FORM_FIELDS
    _parsed: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    @property
    def form(self) -> MultiDict[str, str]:
        """Fields of a urlencoded or multipart body (empty for other bodies)."""
        return self._form_and_files()[0]

    @property
    def files(self) -> MultiDict[str, FileStorage]:
        """Uploaded files of a multipart body: these may use all of ``max_body_size``."""
        return self._form_and_files()[1]

    @property
    def values(self) -> CombinedMultiDict[str, str]:
        """Query and form together, like PHP's ``$_REQUEST``."""
        return CombinedMultiDict([self.query, self.form])

    @property
    def json(self) -> Any:
        """The body parsed as JSON when the request says it is JSON, else ``None``.

        A body that says it is JSON and does not parse is the client's mistake: a 400.
        """
        if "json" not in self._parsed:
            self._parsed["json"] = self._parse_json()
        return self._parsed["json"]

    def close(self) -> None:
        """Close the uploaded files (large ones are temporary files on disk).

        The host calls it in the script's thread once the script has finished.
        """
        parsed = self._parsed.get("form")
        if parsed is not None:
            for _, upload in parsed[1].items(multi=True):
                upload.close()

    def _content_type(self) -> tuple[str, dict[str, str]]:
        mimetype, options = parse_options_header(self.headers.get("Content-Type"))
        return mimetype.lower(), options

    def _check_size(self, what: str) -> None:
        if len(self.body) > self.max_form_size:
            raise ContentTooLarge(
                f"{what} body is {len(self.body)} bytes, over the {self.max_form_size}-byte "
                "limit for forms and JSON"
            )

    def _parse_json(self) -> Any:
        mimetype, _ = self._content_type()
        if not self.body or not (mimetype == "application/json" or mimetype.endswith("+json")):
            return None
        self._check_size("JSON")
        try:
            return jsonlib.loads(self.body)
        except (ValueError, RecursionError):  # RecursionError: [[[[... nested too deep
            raise BadRequest("request body is not valid JSON") from None

    def _form_and_files(self) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        parsed: tuple[MultiDict[str, str], MultiDict[str, FileStorage]] | None
        parsed = self._parsed.get("form")
        if parsed is None:
            parsed = self._parse_form()
            self._parsed["form"] = parsed
        return parsed

    def _parse_form(self) -> tuple[MultiDict[str, str], MultiDict[str, FileStorage]]:
        mimetype, options = self._content_type()
        too_many = ContentTooLarge(f"more than {self.max_form_fields} form fields")
        if mimetype == URLENCODED:
            self._check_size("form")
            # A bound counted at C speed before any parsing: "a=&a=&..." is cheap to send.
            if self.body.count(b"&") >= self.max_form_fields:
                raise too_many
            text = self.body.decode("utf-8", "replace")
            return MultiDict(parse_qsl(text, keep_blank_values=True)), MultiDict()
        if mimetype != MULTIPART:
            return MultiDict(), MultiDict()
        parser = MultiPartParser(max_form_parts=self.max_form_fields)
        try:
            boundary = options.get("boundary", "").encode("ascii")
            if not boundary:
                raise ValueError("no boundary")
            form, files = parser.parse(io.BytesIO(self.body), boundary, len(self.body))
        except RequestEntityTooLarge:
            raise too_many from None
        except ValueError:
            raise BadRequest("request body is not valid multipart/form-data") from None
        # Files may fill the body; the fields a script reads as text are held to the form limit.
        size = sum(len(value.encode()) for _, value in form.items(multi=True))
        if size > self.max_form_size:
            raise ContentTooLarge(
                f"form fields are {size} bytes, over the {self.max_form_size}-byte limit"
            )
        return form, files


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
