"""Drop-in scripts: path resolution, the compile cache, and what a script can read and shape."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from realtime import HTTPError, create_app, hookimpl
from realtime.scripts import CompileCache, resolve


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
    return root


@pytest.mark.parametrize(
    ("url_path", "expected"),
    [
        ("send.py", "send.py"),
        ("admin/tool.py", "admin/tool.py"),
        ("", "index.html"),
        ("admin/", "admin/index.html"),
        ("admin", "admin/index.html"),
        ("inside-link.py", "send.py"),
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
    script.write_text("x = 22")
    later = time.time() + 5
    os.utime(script, (later, later))  # the edit is seen even within one mtime tick
    second = cache.get(script)
    assert second is not first
    assert cache.compilations == 2
    namespace: dict[str, object] = {}
    exec(second, namespace)
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

    return {"shout": lambda text: text.upper() + "!", "brew": brew}


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
    _, _, body = await run(tmp_path, "print(request.json['a'])", "PUT", json={"a": [1, 2]})
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
