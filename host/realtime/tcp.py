"""Hypercorn's TCP connection with fewer tasks: the public face of the lean TCP server.

The server itself lives in :mod:`realtime.internals.hypercorn` (the fence: the only
place beneath Hypercorn's public API). :func:`install` swaps the class
``worker_serve`` builds, only while it is the one that was written against and the
probe (:func:`realtime.internals.fence`) found a Hypercorn it knows; otherwise it
leaves Hypercorn alone and returns False.
"""

from __future__ import annotations

from .internals.hypercorn import HYPERCORN_TCP_SERVER, TCPServer
from .internals.hypercorn import install_lean_tcp as install

__all__ = ["HYPERCORN_TCP_SERVER", "TCPServer", "install"]
