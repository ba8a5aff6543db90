"""One client connection's protocol state, with no transport and no broker.

The transport feeds each text frame to :meth:`Session.handle_frame` (one call at a
time) and sends back the lines it returns, joined by ``\\n`` into one frame; a
:class:`DisconnectError` means: send its ``replies``, then close with its code and
reason. Timers are the transport's too: sleep until :meth:`Session.next_deadline`,
then call :meth:`Session.tick`. Everything the session does outside itself (join a
channel, publish, ask an application hook) goes through a :class:`Backend`.

Semantics follow centrifugal/centrifuge ``client.go`` and Centrifugo's
``internal/client/handler.go``; where this code deliberately differs, the
docstring says so.

One job a module: :mod:`.backend` (the seam to the outside), :mod:`.state` (options,
attributes, shared checks), :mod:`.connect` (connect, refresh and tokens),
:mod:`.subscribe` (subscriptions, recovery and positioning), :mod:`.commands`
(publish, presence, history, rpc, send) and :mod:`.dispatch` (frames, replies,
timers: the :class:`Session` itself).
"""

from .backend import Backend, ConnectAuth, HistoryPage
from .dispatch import Session
from .state import MAX_TTL_SECONDS, Result, SessionOptions
from .subscribe import FLAG_REJECT_UNRECOVERED, SUBSCRIBE_PUSH_FIELDS

__all__ = [
    "FLAG_REJECT_UNRECOVERED",
    "MAX_TTL_SECONDS",
    "SUBSCRIBE_PUSH_FIELDS",
    "Backend",
    "ConnectAuth",
    "HistoryPage",
    "Result",
    "Session",
    "SessionOptions",
]
