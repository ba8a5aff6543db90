"""The Redis broker's Lua scripts, read from the ``.lua`` files beside this module.

Each script is one step Redis runs atomically: numbering and publishing, reading a
position with its history, writing a process's channel map, changing presence. The
presence scripts share ``presence.lua`` (its helpers), which is put in front of each.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

#: The presence scripts by the name the broker calls them.
PRESENCE = ("join", "renew", "leave", "read")


@cache
def script(name: str) -> str:
    """The text of ``<name>.lua``; a presence script with the shared helpers first.

    Cached: the files are package data and never change while the process runs.
    """
    text = files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    if name.startswith("presence_"):
        text = script("presence") + text
    return text
