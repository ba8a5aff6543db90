"""Drop-in scripts: path resolution, the compile cache, and what a script can read and shape."""

from __future__ import annotations

import ast
import json
import os
import sys
import time
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers, MultiDict

from realtime import HTTPError, ScriptRequest, Unavailable, create_app, hookimpl
from realtime.scripts import (
    BadRequest,
    CompileCache,
    ContentTooLarge,
    Script,
    declared_methods,
    resolve,
)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "app"
    (root / "admin").mkdir(parents=True)
    (root / "index.html").write_text("<h1>home</h1>")
    (root / "send.py").write_text("print('send')")
    (root / "admin" / "tool.py").write_text("print('tool')")
    (root / "admin" / "index.html").write_text("admin home")
    (root / ".env").write_text("SECRET=1")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("secret")
    (tmp_path / "outside.py").write_text("print('outside')")
    (root / "inside-link.py").symlink_to(root / "send.py")
    (root / "outside-link.py").symlink_to(tmp_path / "outside.py")
    (root / "outside-dir").symlink_to(tmp_path)
    (root / "notes.txt").write_text("public notes")
    for backup in PRIVATE_NAMES:
        (root / backup).write_text("print('backup of a script')")
    (root / "__pycache__").mkdir()
    (root / "__pycache__" / "page.html").write_text("cached")
    (root / "admin.bak").mkdir()
    (root / "admin.bak" / "index.html").write_text("an old copy")
    (root / "page.html").symlink_to(root / ".env")  # a hidden file, through a public name
    (root / "git.html").symlink_to(root / ".git" / "config")
    (root / "source.txt").symlink_to(root / "send.py")  # a script, through a static name
    (root / "notes.py").symlink_to(root / "notes.txt")  # a static file, as a script
    (root / "backup.txt").symlink_to(root / "send.py.bak")
    return root


#: Editor backups and leftovers of ``send.py``: none of them may be served or run.
PRIVATE_NAMES = (
    "send.py~",
    "send.py.bak",
    "send.py.orig",
    "send.py.swp",
    "send.py.swo",
    "send.py.tmp",
    "send.py.old",
    "send.py.save",
    "send.py.txt",
    "send.py.",
    "#send.py#",
    "send.pyc",
    "SEND.PY",
    "notes.txt.bak",
)


@pytest.mark.parametrize(
    ("url_path", "expected"),
    [
        ("send.py", "send.py"),
        ("admin/tool.py", "admin/tool.py"),
        ("", "index.html"),
        ("admin/", "admin/index.html"),
        ("admin", "admin/index.html"),
        ("inside-link.py", "send.py"),
        ("notes.txt", "notes.txt"),
    ],
)
def test_resolves_files_inside_the_app(tree: Path, url_path: str, expected: str) -> None:
    assert resolve(tree, url_path) == (tree / expected).resolve()


@pytest.mark.parametrize(
    "url_path",
    [
        "../outside.py",
        "admin/../../outside.py",
        "admin/../send.py",  # even a harmless '..' is refused: no normalising games
        "/etc/passwd",
        "//etc/passwd",
        "admin//tool.py",
        ".env",
        ".git/config",
        "admin/.hidden",
        "outside-link.py",
        "outside-dir/outside.py",
        "send.py\x00.html",
        "..\\outside.py",
        "missing.py",
        "admin/missing/",
        *PRIVATE_NAMES,
        "__pycache__/page.html",
        "admin.bak/",
        "admin.bak/index.html",
        "page.html",
        "git.html",
        "source.txt",
        "notes.py",
        "backup.txt",
    ],
)
def test_refuses_escapes_hidden_names_and_missing_files(tree: Path, url_path: str) -> None:
    assert resolve(tree, url_path) is None


def test_compile_cache_compiles_once_and_again_after_an_edit(tmp_path: Path) -> None:
    script = tmp_path / "s.py"
    script.write_text("x = 1")
    cache = CompileCache()
    first = cache.get(script)
    assert cache.get(script) is first
    assert cache.compilations == 1
    script.write_text("x = 22\nMETHODS = ('PUT',)")
    later = time.time() + 5
    os.utime(script, (later, later))  # the edit is seen even within one mtime tick
    second = cache.get(script)
    assert second is not first
    assert cache.compilations == 2
    assert (first.methods, second.methods) == (("GET", "POST"), ("PUT",))
    namespace: dict[str, object] = {}
    exec(second.code, namespace)
    assert namespace["x"] == 22


def test_a_syntax_error_surfaces_when_compiling(tmp_path: Path) -> None:
    script = tmp_path / "bad.py"
    script.write_text("def (:\n")
    with pytest.raises(SyntaxError):
        CompileCache().get(script)


class Teapot(HTTPError):
    status = 418


@hookimpl
def register_functions() -> dict[str, object]:
    def brew() -> None:
        raise Teapot("short and stout")

    def fetch() -> None:
        raise Unavailable("the kettle is unplugged")

    return {"shout": lambda text: text.upper() + "!", "brew": brew, "fetch": fetch}


async def run(
    tmp_path: Path, source: str, method: str = "GET", **kwargs: object
) -> tuple[int, Headers, str]:
    (tmp_path / "t.py").write_text(source)
    app = create_app(tmp_path, plugins=[sys.modules[__name__]], load_entrypoints=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        response = await client.open("/t.py", method=method, **kwargs)  # type: ignore[arg-type]
        return response.status_code, response.headers, await response.get_data(as_text=True)


async def test_native_functions_are_in_the_namespace_without_import(tmp_path: Path) -> None:
    status, _, body = await run(tmp_path, "print(shout('hi'))")
    assert (status, body) == (200, "HI!\n")


async def test_script_reads_query_form_json_headers_and_method(tmp_path: Path) -> None:
    source = (
        "print(request.method, request.query.get('q'), request.form.get('f'),"
        " request.headers.get('x-test'), request.values.get('f'))"
    )
    _, _, body = await run(
        tmp_path, source, "POST", query_string={"q": "1"}, form={"f": "2"}, headers={"X-Test": "3"}
    )
    assert body == "POST 1 2 3 2\n"
    source = "METHODS = ('PUT',)\nprint(request.json['a'])"
    _, _, body = await run(tmp_path, source, "PUT", json={"a": [1, 2]})
    assert body == "[1, 2]\n"


async def test_script_shapes_status_headers_and_body(tmp_path: Path) -> None:
    source = (
        "response.status = 201\n"
        "response.headers['X-Made-By'] = 'script'\n"
        "response.content_type = 'text/html; charset=utf-8'\n"
        "print('<p>made</p>', end='')\n"
        "response.write(b'!')\n"
    )
    status, headers, body = await run(tmp_path, source)
    assert status == 201
    assert headers["X-Made-By"] == "script"
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    assert body == "<p>made</p>!"


async def test_json_response_and_exit(tmp_path: Path) -> None:
    status, headers, body = await run(
        tmp_path, "response.json({'ok': True}, status=202)\nexit()\nprint('unreachable')"
    )
    assert (status, headers["Content-Type"], body) == (202, "application/json", '{"ok": true}')


async def test_http_errors_from_functions_become_their_status(tmp_path: Path) -> None:
    status, _, body = await run(tmp_path, "brew()")
    assert (status, body) == (418, "short and stout\n")


async def test_an_unavailable_backend_is_a_503(tmp_path: Path) -> None:
    status, _, body = await run(tmp_path, "fetch()")
    assert (status, body) == (503, "the kettle is unplugged\n")


async def test_syntax_error_is_a_500_naming_the_script(tmp_path: Path) -> None:
    status, _, body = await run(tmp_path, "def (:\n")
    assert status == 500
    assert "t.py raised SyntaxError" in body


async def test_each_request_gets_a_fresh_namespace(tmp_path: Path) -> None:
    (tmp_path / "count.py").write_text(
        "try:\n    seen += 1\nexcept NameError:\n    seen = 1\nprint(seen)"
    )
    app = create_app(tmp_path, plugins=[], load_entrypoints=False)
    async with app.test_app() as test_app:
        client = test_app.test_client()
        for _ in range(2):
            assert await (await client.get("/count.py")).get_data(as_text=True) == "1\n"


def methods_of(source: str) -> tuple[str, ...]:
    return declared_methods(ast.parse(source), "t.py")


@pytest.mark.parametrize(
    ("source", "methods"),
    [
        ("print('no declaration')", ("GET", "POST")),
        ("METHODS = ('GET', 'POST', 'DELETE')", ("GET", "POST", "DELETE")),
        ("METHODS = ['PUT']", ("PUT",)),
        ("METHODS: tuple[str, ...] = ('PATCH', 'PATCH')", ("PATCH",)),
        ("def f():\n    METHODS = 1\nclass C:\n    METHODS = 2", ("GET", "POST")),
    ],
)
def test_methods_are_read_from_the_source_without_running_it(
    source: str, methods: tuple[str, ...]
) -> None:
    assert methods_of(source) == methods


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("BASE = ('GET',)\nMETHODS = BASE", "literal"),
        ("METHODS = tuple(['GET'])", "literal"),
        ("METHODS = ('GET',)\nMETHODS = ('POST',)", "once"),
        ("if True:\n    METHODS = ('GET',)", "once"),
        ("METHODS = ('GET',)\nMETHODS += ('PUT',)", "once"),
        ("for METHODS in [('GET',)]:\n    pass", "once"),
        ("from os import sep as METHODS", "once"),
        ("def f():\n    global METHODS\n    METHODS = ('PUT',)\nMETHODS = ('GET',)", "once"),
        ("[METHODS := ('GET',) for _ in '1']", "once"),
        ("METHODS = X = ('GET',)", "once"),
        ("match 1:\n    case METHODS:\n        pass", "once"),
        ("METHODS: tuple[str, ...]", "once"),
        ("METHODS = 'GET'", "tuple"),
        ("METHODS = ()", "tuple"),
        ("METHODS = ('get',)", "upper-case"),
        ("METHODS = ('GET', 'HEAD')", "answered by the host"),
        ("METHODS = ('OPTIONS',)", "answered by the host"),
        ("METHODS = ('PROPFIND',)", "not routed"),
    ],
)
def test_a_methods_declaration_the_host_cannot_read_is_a_clear_error(source: str, why: str) -> None:
    with pytest.raises(SyntaxError, match="METHODS") as caught:
        methods_of(source)
    assert why in str(caught.value)
    assert caught.value.filename == "t.py" and caught.value.lineno is not None


def test_allow_names_the_declared_methods_and_the_hosts() -> None:
    code = compile("", "t.py", "exec")
    assert Script(code).allow == "GET, POST, HEAD, OPTIONS"
    assert Script(code, ("DELETE",)).allow == "DELETE, OPTIONS"


def script_request(body: bytes, content_type: str, **limits: int) -> ScriptRequest:
    return ScriptRequest(
        method="POST",
        path="/t.py",
        query=MultiDict({"q": "1"}),
        headers=Headers({"Content-Type": content_type}),
        body=body,
        remote_addr=None,
        scheme="http",
        host="x",
        **limits,  # type: ignore[arg-type]
    )


def test_json_that_does_not_parse_is_a_400() -> None:
    for body in (b'{"message": ', b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000):
        with pytest.raises(BadRequest, match="not valid JSON") as caught:
            _ = script_request(body, "application/json").json
        assert caught.value.status == 400
    assert script_request(b'{"a": "\\ud800"}', "application/json").json == {"a": "\ud800"}
    assert script_request(b"[1]", "text/plain").json is None  # not declared JSON
    assert script_request(b"", "application/json").json is None


def test_forms_and_json_are_held_to_their_own_limits() -> None:
    big_json = json.dumps(["x" * 100]).encode()
    with pytest.raises(ContentTooLarge, match="limit") as caught:
        _ = script_request(big_json, "application/problem+json", max_form_size=100).json
    assert caught.value.status == 413
    with pytest.raises(ContentTooLarge, match="limit"):
        _ = script_request(b"a=" + b"x" * 100, URLENCODED, max_form_size=100).form
    with pytest.raises(ContentTooLarge, match="more than 3 form fields"):
        _ = script_request(b"a=&a=&a=&a=", URLENCODED, max_form_fields=3).values
    request = script_request(b"a=1&a=2&b=%C3%A9&c", URLENCODED, max_form_fields=4)
    assert request.form.getlist("a") == ["1", "2"]
    assert (request.values["b"], request.values["c"], request.values["q"]) == ("é", "", "1")
    # The raw body is there for a script that wants it, whatever the limits say.
    assert script_request(b"a=" * 1000, URLENCODED, max_form_fields=3).body == b"a=" * 1000


def multipart(*parts: tuple[str, bytes, str | None]) -> bytes:
    chunks = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--B\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value)
    return b"\r\n".join(chunks) + b"\r\n--B--\r\n"


def test_multipart_fields_obey_the_form_limit_and_files_the_body_limit() -> None:
    body = multipart(("note", b"hi", None), ("upload", b"\x00" * 5000, "a.bin"))
    request = script_request(body, "multipart/form-data; boundary=B", max_form_size=100)
    assert request.form["note"] == "hi"
    assert request.files["upload"].read() == b"\x00" * 5000
    request.close()
    assert request.files["upload"].closed
    too_long = multipart(("note", b"x" * 60, None), ("other", b"y" * 60, None))
    with pytest.raises(ContentTooLarge, match="limit"):
        _ = script_request(too_long, "multipart/form-data; boundary=B", max_form_size=100).form
    many = multipart(*((f"f{i}", b"", None) for i in range(4)))
    with pytest.raises(ContentTooLarge, match="more than 3 form fields"):
        _ = script_request(many, "multipart/form-data; boundary=B", max_form_fields=3).form
    for content_type in ("multipart/form-data; boundary=B", "multipart/form-data"):
        with pytest.raises(BadRequest, match="multipart"):
            _ = script_request(b"--B\r\ngarbage", content_type).files


URLENCODED = "application/x-www-form-urlencoded"


async def test_a_scripts_own_timeout_error_is_a_500_not_a_504(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    status, _, body = await run(tmp_path, "raise TimeoutError('the script gave up on something')")
    assert status == 500
    assert "t.py raised TimeoutError" in body
    assert "the script gave up on something" in caplog.text
    assert "ran over" not in caplog.text
    status, _, body = await run(
        tmp_path,
        "from realtime import HTTPError\n"
        "class Upstream(HTTPError, TimeoutError):\n    status = 502\n"
        "raise Upstream('upstream timed out')",
    )
    assert (status, body) == (502, "upstream timed out\n")


async def test_scripts_run_only_for_the_methods_they_accept(tmp_path: Path) -> None:
    source = "METHODS = ('DELETE',)\nprint('ran', request.method)"
    status, headers, body = await run(tmp_path, source, "DELETE")
    assert (status, body) == (200, "ran DELETE\n")
    status, headers, body = await run(tmp_path, source, "GET")
    assert (status, headers["Allow"], body) == (405, "DELETE, OPTIONS", "Method Not Allowed\n")
    status, headers, body = await run(tmp_path, source, "OPTIONS")
    assert (status, headers["Allow"], body) == (204, "DELETE, OPTIONS", "")
    status, _, body = await run(tmp_path, "print('ran')", "HEAD")
    assert (status, body) == (200, "")
    status, _, body = await run(tmp_path, "print('ran')", "PUT")
    assert status == 405
    status, _, body = await run(tmp_path, "METHODS = compute()\nprint('ran')", "GET")
    assert (status, body) == (500, "Internal Server Error: t.py raised SyntaxError\n")
