"""Settings declared by the host and by plugins: flags, environment, a TOML file, defaults."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

ENV_PREFIX = "REALTIME_"
#: Read from the working directory when neither ``--config`` nor its variable names a
#: file, and from the app directory (below those) when the app ships one.
CONFIG_FILE = "realtime.toml"
CONFIG_ENV = ENV_PREFIX + "CONFIG"

if TYPE_CHECKING:
    # A bare ``Option`` (in ``register_options() -> list[Option]``) means ``Option[Any]``;
    # TypeVar defaults are Python 3.13's, so only the type checker sees this one.
    from typing_extensions import TypeVar as DefaultTypeVar

    T = DefaultTypeVar("T", default=Any)
else:
    T = TypeVar("T")


def parse_bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"expected a boolean, got {value!r}")


#: What a value that is not a string must already be, by option type (TOML: 8 for int).
_TYPED: Mapping[object, tuple[type, ...]] = {
    str: (str,),
    bool: (bool,),
    int: (int,),
    float: (int, float),
}


@dataclass(frozen=True)
class Option(Generic[T]):
    """One setting: ``name`` becomes ``--name-with-dashes`` and ``REALTIME_NAME``.

    Declared once, by the plugin that owns it, as a module constant it returns from
    ``register_options`` and others import: ``host.setting(MAX_MESSAGE_SIZE)`` is then an
    ``int`` with no name typed twice and no fallback written again.
    """

    name: str
    default: T
    help: str
    type: Callable[[str], Any] = str
    choices: tuple[str, ...] | None = None
    #: Never shown: not in ``--help`` defaults, not in logs or listings.
    secret: bool = False

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise ValueError(f"option name must be a lower-case identifier: {self.name!r}")

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def get(self, settings: Mapping[str, Any]) -> T:
        """The resolved value in ``settings``; the default where the owner is not loaded.

        For code handed the settings mapping (a broker, ``configure_server``); with a
        host at hand, ``host.setting(option)`` says the same.
        """
        return cast(T, settings.get(self.name, self.default))

    def convert(self, raw: Any) -> Any:
        """A flag's or variable's string, or a value already typed (from TOML or code)."""
        if not isinstance(raw, str):
            value = raw
            expected = _TYPED.get(self.type)
            if expected is not None and (
                not isinstance(value, expected)
                or (self.type is not bool and isinstance(value, bool))
            ):
                raise ValueError(f"expected {self.type.__name__}, got {value!r}")
            if self.type is float:
                value = float(value)
        elif self.type is bool:
            value = parse_bool(raw)
        else:
            value = self.type(raw)
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.flag} must be one of {', '.join(self.choices)}, got {value!r}")
        return value


def config_path(
    given: str | os.PathLike[str] | None, environ: Mapping[str, str], *, look_in_cwd: bool
) -> Path | None:
    """The settings file: ``--config``, else ``REALTIME_CONFIG``, else ``./realtime.toml``.

    A named file must exist; the one in the working directory is read only if present
    (and only for the command line, not for ``create_app``).
    """
    named = given or environ.get(CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ValueError(f"config file {str(path)!r} does not exist")
        return path
    default = Path(CONFIG_FILE)
    return default if look_in_cwd and default.is_file() else None


def read_config(path: Path) -> dict[str, Any]:
    """The file's settings, keyed by option name (``max_connections = 100``)."""
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"config file {str(path)!r} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ValueError(f"config file {str(path)!r} cannot be read: {exc}") from None


def app_config_path(app_dir: str | os.PathLike[str]) -> Path | None:
    """The settings file shipped with the app, ``<app>/realtime.toml``, if there is one."""
    path = Path(app_dir) / CONFIG_FILE
    return path if path.is_file() else None


def resolve(
    options: Iterable[Option[Any]],
    given: Mapping[str, Any],
    environ: Mapping[str, str],
    file: Mapping[str, Any] | None = None,
    source: str = "config file",
    *,
    below: Sequence[tuple[Mapping[str, Any], str]] = (),
) -> dict[str, Any]:
    """Apply precedence: explicit value (flag or code), environment, the file, default.

    ``below`` are more files, each with its name for errors, read after ``file`` in
    that order (the app's own realtime.toml): a key is taken from the first that has it.
    """
    known = {option.name: option for option in options}
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(f"unknown setting(s): {', '.join(unknown)}")
    files = [(file or {}, source), *below]
    for table, where in files:
        unknown = sorted(set(table) - set(known))
        if unknown:
            raise ValueError(f"{where}: unknown setting(s): {', '.join(unknown)}")
    settings: dict[str, Any] = {}
    for name, option in known.items():
        if given.get(name) is not None:
            raw, where = given[name], f"{option.flag} / {option.env}"
        elif option.env in environ:
            raw, where = environ[option.env], option.env
        else:
            found = next(((t[name], f"{name} in {w}") for t, w in files if name in t), None)
            if found is None:
                settings[name] = option.default
                continue
            raw, where = found
        try:
            settings[name] = option.convert(raw)
        except (TypeError, ValueError) as exc:
            why = "the value does not parse" if option.secret else str(exc)  # never echo a secret
            raise ValueError(f"bad value for {where}: {why}") from None
    return settings
