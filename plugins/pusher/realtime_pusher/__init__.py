"""The Pusher protocol (version 7) as a realtime plugin: pusher-js, Laravel Echo and the
Pusher server SDKs over the hub's channels, beside every other protocol."""

from .apps import Apps, PusherApp
from .signing import api_signature, channel_auth, check_auth, user_auth

__all__ = ["Apps", "PusherApp", "api_signature", "channel_auth", "check_auth", "user_auth"]
