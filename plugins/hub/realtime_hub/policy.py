"""Who may subscribe or publish where, and what a channel keeps: the policy the hub applies.

Protocol-neutral: a :class:`ChannelPolicy` answers with a :class:`Decision` (allowed,
or a :class:`~realtime_hub.errors.Refusal`), never a protocol's code, so each wire
protocol says a refusal its own way (the raw ``/ws`` answers 403, the Centrifuge
protocol a numbered reply error). A protocol extends a decision where the policy
leaves it open (:attr:`Decision.final` false: the Centrifuge protocol asks its
``authorize_*`` hooks there), or wraps a policy in one of its own. The hub ships one
implementation, :class:`~realtime_hub.channels.ChannelRules`: Centrifugo's namespace
rules, read from the ``[channel]`` table.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Protocol, runtime_checkable

from realtime_broker import PresenceMode

from .errors import Refusal

#: An extension's answer where a decision is open: True allows, False refuses
#: (permission denied), a Refusal refuses with it, None leaves the policy's answer.
Opinion = bool | Refusal | None


@dataclass(frozen=True, slots=True)
class Decision:
    """A policy's answer: allowed unless ``refusal`` says why not.

    ``final`` false marks the policy's default answer where an extension may decide
    instead (where Centrifugo asks a hook): a protocol with such an extension takes
    its answer over this one (:meth:`extended`), one without takes this one as is.
    The module's constants and :func:`refuse` hand out shared instances: deciding
    allocates nothing.
    """

    refusal: Refusal | None = None
    final: bool = True

    @property
    def allowed(self) -> bool:
        """Whether the client may go ahead."""
        return self.refusal is None

    def extended(self, opinion: Opinion) -> Decision:
        """This decision with an extension's opinion taken where it is open."""
        if self.final or opinion is None:
            return self
        if opinion is True:
            return ALLOW
        if opinion is False:
            return DENY
        if isinstance(opinion, Refusal):
            return refuse(opinion)
        raise TypeError(f"an opinion is True, False, a Refusal or None, not {opinion!r}")


#: Allowed, whatever an extension would say (a valid subscription token, say).
ALLOW = Decision()
#: Refused for lack of permission, final.
DENY = Decision(Refusal.PERMISSION_DENIED)
#: Allowed by default; an extension may refuse.
ALLOW_UNLESS_EXTENDED = Decision(None, final=False)
#: Refused by default; an extension may allow.
DENY_UNLESS_EXTENDED = Decision(Refusal.PERMISSION_DENIED, final=False)

_REFUSED: MappingProxyType[Refusal, Decision] = MappingProxyType(
    {reason: Decision(reason) for reason in Refusal}
)


def refuse(reason: Refusal) -> Decision:
    """The final refusal for ``reason`` (a shared instance)."""
    return _REFUSED[reason]


@runtime_checkable
class ChannelPolicy(Protocol):
    """What the hub and every protocol ask about channels; ``user`` ``""`` is anonymous.

    Answers depend on the arguments only, so a protocol may ask as often as it needs.
    """

    def may_subscribe(self, user: str, channel: str, *, granted: bool = False) -> Decision:
        """Whether ``user`` may subscribe; ``granted``: it holds a valid grant for the
        channel (a subscription token), which a policy may take as enough."""
        ...

    def may_publish(self, user: str, channel: str, *, subscribed: bool = False) -> Decision:
        """Whether ``user`` may publish from its connection (``subscribed`` to the channel
        or not); servers and scripts publish without asking."""
        ...

    def history_of(self, channel: str) -> tuple[int, float] | None:
        """(size, seconds) of the history the channel keeps; None if it keeps none."""
        ...

    def presence_of(self, channel: str) -> PresenceMode | None:
        """How the channel's presence is tracked; None if it is not."""
        ...
