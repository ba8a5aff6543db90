"""Settings declared by the host and by plugins, read from flags, environment and code."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "REALTIME_"


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


@dataclass(frozen=True)
class Option:
    """One setting: ``name`` becomes ``--name-with-dashes`` and ``REALTIME_NAME``."""

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"option name must be a lower-case identifier: {self.name!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def convert(self, raw: Any) -> Any:
        if not isinstance(raw, str):
            value = raw
        elif self.type is bool:
            value = parse_bool(raw)
        else:
            value = self.type(raw)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


def resolve(
    options: Iterable[Option],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
) -> dict[str, Any]:
    """Apply precedence: explicit value, then environment variable, then default."""
    known = {option.name: option for option in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    settings: dict[str, Any] = {}
    for name, option in known.items():
        if given.get(name) is not None:
            raw = given[name]
        elif option.env in environ:
            raw = environ[option.env]
        else:
            settings[name] = option.default
            continue
        try:
            settings[name] = option.convert(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value for {option.flag} / {option.env}: {exc}") from None
    return settings
