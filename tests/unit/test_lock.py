"""The lock is true: it satisfies pyproject.toml, and the test environment is the lock.

A dependency added or re-bounded in pyproject.toml without `scripts/lock`, or a venv
that drifted from requirements/test.txt, fails here rather than on a fresh clone.
"""

from __future__ import annotations

import os
import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import Marker, default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK_LINE = re.compile(r"^([A-Za-z0-9_.-]+)==([^\s;]+)\s*(?:;\s*(.+?))?\s*\\?$")


def _locked(path: Path) -> dict[str, str]:
    """The lock's pins that apply on this interpreter: ``{name: version}``."""
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        match = LOCK_LINE.match(line)
        if match is None:
            continue
        name, version, marker = match.groups()
        if marker and not Marker(marker).evaluate():
            continue
        pins[canonicalize_name(name)] = version
    return pins


def _requirements(extras: list[str]) -> list[Requirement]:
    with (ROOT / "pyproject.toml").open("rb") as file:
        project = tomllib.load(file)["project"]
    lines: list[str] = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("requirements/test.txt", ["test", "uvloop"]), ("requirements/service.txt", ["uvloop"])],
)
def test_lock_satisfies_pyproject(lock: str, extras: list[str]) -> None:
    pins = _locked(ROOT / lock)
    environment = default_environment()
    for requirement in _requirements(extras):
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {lock}: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{lock} pins {name}=={pins[name]}, outside {requirement}: run scripts/lock"
        )


def test_service_lock_is_the_test_lock_subset() -> None:
    service = _locked(ROOT / "requirements/service.txt")
    test = _locked(ROOT / "requirements/test.txt")
    for name, version in service.items():
        assert test.get(name) == version, f"{name}: {version} (service) vs {test.get(name)}"


@pytest.mark.skipif(
    os.environ.get("REALTIME_LATEST") == "1",
    reason="scripts/test --latest runs on the newest releases, not the lock",
)
def test_environment_is_the_lock() -> None:
    """Every locked package is installed at its locked version (what CI tested)."""
    pins = _locked(ROOT / "requirements/test.txt")
    for name, version in pins.items():
        installed = metadata.version(name)
        assert installed == version, f"{name} {installed} installed, {version} locked"
