"""The server API's request fields, read as Go's decoder reads them: a field of the
wrong type is :class:`BadBody` (HTTP 400), an absent or null one Go's zero value."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .codes import Error

Params = Mapping[str, Any]


class BadBody(Exception):
    """The body does not decode as the method's request: HTTP 400, as Go's decoder."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes) -> Params:
    """The request object; an empty body is ``{}`` (``info`` needs nothing)."""
    if not body.strip():
        return {}
    try:
        params = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise BadBody("JSON nested too deeply") from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included.
        raise BadBody("body is not JSON") from None
    if not isinstance(params, dict):
        raise BadBody("body is not a JSON object")
    return params


def _type_name(kind: type) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", dict: "an object"}
    return names.get(kind, kind.__name__)


def get(params: Params, name: str, kind: type[Any]) -> Any:
    """A field of type ``kind``, Go's zero value if absent or null; BadBody otherwise."""
    value = params.get(name)
    if value is None:
        return kind()
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise BadBody(f"{name} must be {_type_name(kind)}")
    return value


def refuse(params: Params, name: str, kind: type[Any], why: str) -> None:
    """107 for a field we cannot honour and whose silent loss would change the call."""
    if get(params, name, kind):
        raise Error(107, f"bad request: {name} is not supported: {why}")


def str_list(params: Params, name: str) -> list[str]:
    value = params.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise BadBody(f"{name} must be an array of strings")
    return value


def str_map(params: Params, name: str) -> dict[str, str]:
    value = params.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise BadBody(f"{name} must be an object of strings")
    return value


def position(params: Params, name: str, *, empty: bool = False) -> tuple[int, str] | None:
    """A ``StreamPosition`` field (``{"offset": N, "epoch": "..."}``) as (offset,
    epoch); None if absent or null, and if ``{}`` unless ``empty`` (where Go's
    pointer makes ``{}`` the position 0: ``recover_since``)."""
    raw = get(params, name, dict)
    if not raw and not (empty and isinstance(params.get(name), dict)):
        return None
    offset, epoch = raw.get("offset", 0), raw.get("epoch", "")
    if offset is None:
        offset = 0
    if epoch is None:
        epoch = ""
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 2**64:
        # Go's uint64: past it the body does not decode (and no broker takes it).
        raise BadBody(f"{name}.offset must be an integer from 0 to 2^64-1")
    if not isinstance(epoch, str):
        raise BadBody(f"{name}.epoch must be a string")
    return offset, epoch
