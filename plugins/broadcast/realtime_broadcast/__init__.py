"""The seed's ``broadcast`` extension: ``broadcast(message)`` for drop-in scripts.

Scripts get ``broadcast`` in their namespace without an import; editors and linters
can see it with ``from realtime_broadcast import broadcast``.
"""

from .functions import InvalidChannel, MessageNotText, MessageTooLarge, broadcast

__all__ = ["InvalidChannel", "MessageNotText", "MessageTooLarge", "broadcast"]
