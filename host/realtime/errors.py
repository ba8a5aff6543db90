"""Exceptions the host turns into responses or start-up failures."""

from __future__ import annotations


class PluginError(RuntimeError):
    """A plugin could not be loaded, registered or started; the message names it."""


class HTTPError(Exception):
    """Raised by a script or a native function to answer with ``status`` and a short message.

    Plugins subclass it (``MessageTooLarge`` is a 413) so a script's caller gets an
    honest status without the script having to catch anything.
    """

    status: int = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Unavailable(HTTPError):
    """A backend the request needs is unavailable; the host answers 503.

    Plugins derive their own (the broker's errors) so the host maps them without
    knowing the plugin, and a script's caller learns to retry rather than that it failed.
    """

    status = 503
