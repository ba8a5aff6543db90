"""app/chat_token.py, the chat demo's "login", signs guests only, even with a real secret.

Anyone may call it, so a token it mints must never name one of the application's real
users: with a production secret set, ``?user=42`` must not give a token that the server
takes as user 42 (red team: such a token received what the server API sent to 42).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import jwt
import pytest

from realtime import create_app

ROOT = Path(__file__).resolve().parents[2]
SECRET = "a-production-secret-of-enough-length"


async def mint(tmp_path: Path, user: str) -> tuple[int, dict[str, object]]:
    shutil.copy(ROOT / "app" / "chat_token.py", tmp_path / "chat_token.py")
    app = create_app(tmp_path, settings={"token_hmac_secret": SECRET}, environ={})
    async with app.test_app() as test_app:
        response = await test_app.test_client().get("/chat_token.py", query_string={"user": user})
        return response.status_code, await response.get_json()


@pytest.mark.parametrize("user", ["42", "admin", "ada", " bob "])
async def test_a_name_becomes_a_guest_id(tmp_path: Path, user: str) -> None:
    status, answer = await mint(tmp_path, user)
    assert status == 200
    expected = "guest-" + user.strip()
    assert answer["user"] == expected
    claims = jwt.decode(str(answer["token"]), SECRET, algorithms=["HS256"])
    assert claims["sub"] == expected


async def test_a_guest_name_is_not_prefixed_twice(tmp_path: Path) -> None:
    status, answer = await mint(tmp_path, "guest-ann")
    assert status == 200
    claims = jwt.decode(str(answer["token"]), SECRET, algorithms=["HS256"])
    assert claims["sub"] == answer["user"] == "guest-ann"


async def test_an_empty_name_is_refused(tmp_path: Path) -> None:
    status, answer = await mint(tmp_path, "  ")
    assert status == 400
    assert "user must be" in str(answer["error"])
