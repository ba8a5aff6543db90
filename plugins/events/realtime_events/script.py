"""An events script: drop-in code, a Python file whose functions are the event hooks.

``--events-script hooks/events.py`` names a file (keep it outside the app's public
folder, or it is also served as a script). Its top-level functions named like the
hooks (``user_offline``, ``on_disconnect``...) are called with the keyword arguments
they declare, as plugin hooks are, in the script threads, like scripts: plain
functions that may block, with the scripts' native functions (``broadcast``...) in
their globals. (A plugin's hooks may be ``async``; these are drop-in code.)
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .model import EVENT_NAMES


def hook_name(name: str) -> str:
    """The hook an event calls: ``on_connect`` for ``connect``, else its own name."""
    return f"on_{name}" if name in ("connect", "disconnect", "subscribe", "unsubscribe") else name


HOOK_NAMES = frozenset(hook_name(name) for name in EVENT_NAMES)


def load(path: Path, functions: Mapping[str, Callable[..., Any]]) -> dict[str, Callable[..., Any]]:
    """The hooks ``path`` defines, by event name; ``ValueError`` saying what is wrong."""
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"--events-script {str(path)!r} cannot be read: {exc}") from None
    namespace: dict[str, Any] = {"__name__": "realtime_events_script", "__file__": str(path),
                                 **functions}  # fmt: skip
    try:
        exec(compile(source, str(path), "exec", dont_inherit=True), namespace)
    except Exception as exc:
        raise ValueError(
            f"--events-script {str(path)!r} failed to load: {type(exc).__name__}: {exc}"
        ) from exc
    hooks = {}
    for name in EVENT_NAMES:
        function = namespace.get(hook_name(name))
        if inspect.iscoroutinefunction(function):
            raise ValueError(
                f"--events-script {str(path)!r}: {hook_name(name)} must be a plain function "
                "(it runs in the script threads, as scripts do), not async def"
            )
        if callable(function):
            hooks[name] = function
    if not hooks:
        raise ValueError(
            f"--events-script {str(path)!r} defines none of {', '.join(sorted(HOOK_NAMES))}"
        )
    return hooks


def arguments(function: Callable[..., Any], offered: Mapping[str, Any]) -> dict[str, Any]:
    """What of ``offered`` ``function`` declares (all of it if it takes ``**kwargs``)."""
    parameters = inspect.signature(function).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(offered)
    names = {p.name for p in parameters}
    return {key: value for key, value in offered.items() if key in names}
