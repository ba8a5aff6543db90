"""How the Centrifuge protocol extends the hub's channel policy, and numbers its refusals.

The hub's :class:`~realtime_hub.policy.ChannelPolicy` decides; the protocol adds its
own steps where a decision is open and says the outcome as Centrifugo does:

- a valid subscription token is the policy's ``granted``;
- where the decision is not final, the ``authorize_subscribe`` / ``authorize_publish``
  hook's answer (True, False, an :class:`~realtime_centrifuge.codes.Error`, perhaps
  with an application's own code, or None) decides instead;
- a refusal is the reply error Centrifugo numbers it with
  (:data:`realtime_centrifuge.codes.ERROR_OF`: 102, 103, 107...).

So a session asks once, then the hook only if :func:`asks_hook`::

    decision = policy.may_subscribe(user, channel, granted=has_token)
    answer = await authorize_subscribe(...) if asks_hook(decision) else None
    error = verdict(decision, answer)

which answers what ``ChannelRules.can_subscribe`` / ``can_publish`` answer.
"""

from __future__ import annotations

from realtime_hub.channels import HookAnswer
from realtime_hub.policy import ChannelPolicy, Decision

from .codes import ERROR_OF, ERROR_PERMISSION_DENIED, Error

__all__ = ["asks_hook", "publish_verdict", "subscribe_verdict", "verdict"]


def asks_hook(decision: Decision) -> bool:
    """Whether the hook is asked: only where the policy left the decision open."""
    return not decision.final


def verdict(decision: Decision, hook: HookAnswer = None) -> Error | None:
    """None if allowed, else the reply error: the hook's answer where it counts."""
    if hook is not None and not decision.final:
        if isinstance(hook, Error):
            return hook
        if hook is True:
            return None
        if hook is False:
            return ERROR_PERMISSION_DENIED
        raise TypeError(f"a hook must answer True, False, an Error or None, not {hook!r}")
    refusal = decision.refusal
    return None if refusal is None else ERROR_OF[refusal]


def subscribe_verdict(
    policy: ChannelPolicy, user: str, channel: str, has_valid_token: bool, hook: HookAnswer = None
) -> Error | None:
    """A subscribe's answer in one call, for callers that have the hook's answer already."""
    return verdict(policy.may_subscribe(user, channel, granted=has_valid_token), hook)


def publish_verdict(
    policy: ChannelPolicy, user: str, channel: str, subscribed: bool, hook: HookAnswer = None
) -> Error | None:
    """A client publish's answer in one call, with the hook's answer."""
    return verdict(policy.may_publish(user, channel, subscribed=subscribed), hook)
