"""The Mercure plugin (helper M1 fills this in)."""

from __future__ import annotations

#: Subscriptions live in the hub; updates and history go through the broker.
REQUIRES = ("hub", "broker")
