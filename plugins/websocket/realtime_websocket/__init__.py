"""The raw WebSocket plugin: ``/ws``, every publication of one channel as it was published."""

from .plugin import RawFormat

__all__ = ["RawFormat"]
