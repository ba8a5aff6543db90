"""Channel namespaces and who may subscribe or publish: Centrifugo v6's rules.

:class:`ChannelRules` is the hub's :class:`~realtime_hub.policy.ChannelPolicy`: its
``may_*`` methods answer neutral decisions, which every protocol applies. Its
``can_*``/``check_*`` methods answer the Centrifuge protocol's numbered errors for the
callers that still ask them (:mod:`realtime_centrifuge.policy` derives the same from
the decisions). The configuration has Centrifugo's layout and option names
(``[channel]`` in realtime.toml), so a Centrifugo configuration's channel section
carries over. Every ``allow_*`` option is off unless set. Options Centrifugo has and
we do not (proxies, ``channel_regex``...) are refused rather than silently ignored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from realtime_broker import PresenceMode

from .errors import ERROR_OF, ERROR_PERMISSION_DENIED, Error, Refusal
from .policy import ALLOW, ALLOW_UNLESS_EXTENDED, DENY_UNLESS_EXTENDED, Decision, refuse

#: What the names of internal channels start with, reserved for the server's own
#: use: refused to every client and server API call, never in presence or history.
#: (Control messages no longer ride one: they have the broker's control channel.)
INTERNAL_PREFIX = "\x01"

#: Centrifugo's namespace name pattern.
_NAMESPACE_NAME = re.compile(r"[-a-zA-Z0-9_.]{2,}")
#: One term of a Go duration ("1h30m", "1.5s", "300ms").
_DURATION_TERM = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS: Mapping[str, float] = MappingProxyType(
    {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
     "h": 3600.0}
)  # fmt: skip

#: What a hook answered: True allows, False refuses (103), an Error refuses with it,
#: None leaves the decision to the namespace's options.
HookAnswer = bool | Error | None

#: The chat demo's ``[channel]`` table (what the app's realtime.toml sets): the
#: neutral top level, and ``chat:*`` rooms for signed-in users (:meth:`ChannelRules.demo`).
DEMO_CHANNEL_TABLE: Mapping[str, Any] = MappingProxyType(
    {
        "without_namespace": MappingProxyType(
            {"allow_subscribe_for_client": True, "allow_subscribe_for_anonymous": True}
        ),
        "namespaces": (
            MappingProxyType(
                {
                    "name": "chat",
                    "allow_subscribe_for_client": True,
                    "allow_publish_for_subscriber": True,
                    # The demo shows a room's last messages on joining, and a tab that
                    # was away gets what it missed.
                    "history_size": 100,
                    "history_ttl": "600s",
                    "force_recovery": True,
                    "allow_history_for_subscriber": True,
                    # Who is in the room, kept by the broker across hosts, with each
                    # join and leave pushed to the members.
                    "presence": True,
                    "join_leave": True,
                    "force_push_join_leave": True,
                    "allow_presence_for_subscriber": True,
                }
            ),
        ),
    }
)


#: Centrifugo's recovery modes (``force_recovery_mode``).
RECOVERY_MODES = ("stream", "cache")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string such as ``"300s"`` or ``"1h30m"``; ``"0"`` is 0."""
    if text == "0":
        return 0.0
    if not text:
        raise ValueError("a duration cannot be empty")
    position, seconds = 0, 0.0
    while position < len(text):
        match = _DURATION_TERM.match(text, position)
        if match is None:
            raise ValueError(f"{text!r} is not a duration such as '300s' or '1h30m'")
        seconds += float(match[1]) * _UNIT_SECONDS[match[2]]
        position = match.end()
    return seconds


@dataclass(frozen=True, slots=True)
class NamespaceOptions:
    """Options of one namespace, with Centrifugo's names; all off by default.

    ``presence`` lists a channel's clients (presence and presence_stats);
    ``join_leave`` announces their joins and leaves, pushed to subscribers that ask
    (or to all with ``force_push_join_leave``). Either keeps presence in the broker.
    """

    allow_subscribe_for_client: bool = False
    allow_subscribe_for_anonymous: bool = False
    allow_publish_for_subscriber: bool = False
    allow_publish_for_client: bool = False
    allow_publish_for_anonymous: bool = False
    allow_user_limited_channels: bool = False
    allow_presence_for_subscriber: bool = False
    allow_presence_for_client: bool = False
    allow_presence_for_anonymous: bool = False
    allow_history_for_subscriber: bool = False
    allow_history_for_client: bool = False
    allow_history_for_anonymous: bool = False
    presence: bool = False
    join_leave: bool = False
    force_push_join_leave: bool = False
    history_size: int = 0
    #: Seconds; configured as a Go duration string ("300s"), as in Centrifugo.
    history_ttl: float = 0.0
    force_recovery: bool = False
    force_positioning: bool = False
    allow_recovery: bool = False
    allow_positioning: bool = False
    #: How a subscription recovers: "stream" (every missed publication) or "cache"
    #: (only the latest: a subscriber asking to recover gets it at once).
    force_recovery_mode: str = "stream"
    #: In cache mode, recover every subscription (server-side ones too) without the
    #: client asking: each (re)subscribe gets the latest publication.
    auto_cache_recover: bool = False

    @property
    def cache_recovery(self) -> bool:
        """Whether subscriptions that recover get only the latest publication."""
        return self.force_recovery_mode == "cache"

    @classmethod
    def from_config(cls, options: Mapping[str, Any], where: str) -> NamespaceOptions:
        """Options from a configuration table; ``where`` names it in errors."""
        if not isinstance(options, Mapping):
            raise ValueError(f"{where} must be a table of options")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in options.items():
            if key not in known:
                raise ValueError(f"{where}: unknown option {key!r}")
            if key == "history_size":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError(f"{where}: history_size must be an integer >= 0")
            elif key == "history_ttl":
                if not isinstance(value, str):
                    raise ValueError(f"{where}: history_ttl must be a duration such as '300s'")
                try:
                    value = parse_duration(value)
                except ValueError as exc:
                    raise ValueError(f"{where}: history_ttl: {exc}") from None
            elif key == "force_recovery_mode":
                if value not in RECOVERY_MODES:
                    raise ValueError(f"{where}: force_recovery_mode must be 'stream' or 'cache'")
            elif not isinstance(value, bool):
                raise ValueError(f"{where}: {key} must be true or false")
            values[key] = value
        parsed = cls(**values)
        if parsed.auto_cache_recover and not (parsed.force_recovery and parsed.cache_recovery):
            raise ValueError(
                f"{where}: auto_cache_recover needs force_recovery and "
                "force_recovery_mode = 'cache' (as in Centrifugo)"
            )
        return parsed


def _no_namespaces() -> Mapping[str, NamespaceOptions]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ChannelRules:
    """Namespaces and channel-name conventions; the decisions follow Centrifugo's order."""

    without_namespace: NamespaceOptions = NamespaceOptions()
    namespaces: Mapping[str, NamespaceOptions] = field(default_factory=_no_namespaces)
    max_channel_length: int = 255
    namespace_boundary: str = ":"
    user_boundary: str = "#"
    user_separator: str = ","
    private_prefix: str = "$"
    #: Prefixes another protocol guards with its own authorization (the
    #: ``reserve_channels`` hook): private here, and never published to by a client.
    reserved: tuple[str, ...] = ()

    @classmethod
    def neutral(cls) -> ChannelRules:
        """The library's rules with no ``[channel]`` configured: safe, and no application's.

        Top-level channels (``default`` and any name without ``:``) are readable by
        anyone, as every ``/ws`` client was before channels existed; nobody publishes
        there but the server, and there is no namespace (any ``name:`` is unknown).
        ``$`` channels need a subscription token. A configured ``[channel]`` replaces
        all of it.
        """
        return cls(
            without_namespace=NamespaceOptions(
                allow_subscribe_for_client=True, allow_subscribe_for_anonymous=True
            )
        )

    @classmethod
    def defaults(cls) -> ChannelRules:
        """What runs with no ``[channel]`` configured: :meth:`neutral`, no namespace.

        The chat demo's namespaces come with the app (app/realtime.toml), so a server
        given an app of its own never inherits them (docs/channels.md).
        """
        return cls.neutral()

    @classmethod
    def demo(cls) -> ChannelRules:
        """The chat demo's rules (:data:`DEMO_CHANNEL_TABLE`): :meth:`neutral`'s, and in
        ``chat:*`` signed-in users (a connection token's ``sub``) subscribe and post to
        rooms they are in, which keep their last 100 messages for 10 minutes (read by
        members, recovered after a reconnect); members see who is in the room
        (presence) and each join and leave.
        """
        return cls.from_config(DEMO_CHANNEL_TABLE)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ChannelRules:
        """Rules from the ``[channel]`` table (Centrifugo v6 layout); ValueError if wrong.

        Keys: ``without_namespace`` (a table), ``namespaces`` (an array of tables, each
        with a ``name``), ``max_length`` and the four name conventions.
        """
        if not isinstance(config, Mapping):
            raise ValueError("channel must be a table")
        settings: dict[str, Any] = {}
        namespaces: dict[str, NamespaceOptions] = {}
        for key, value in config.items():
            if key == "without_namespace":
                settings[key] = NamespaceOptions.from_config(value, "channel.without_namespace")
            elif key == "namespaces":
                if not isinstance(value, list | tuple):
                    raise ValueError("channel.namespaces must be an array of tables")
                for index, table in enumerate(value):
                    name, options = _namespace(table, index)
                    if name in namespaces:
                        raise ValueError(f"channel.namespaces: namespace {name!r} is repeated")
                    namespaces[name] = options
            elif key == "max_length":
                if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                    raise ValueError("channel.max_length must be an integer >= 1")
                settings["max_channel_length"] = value
            elif key in ("namespace_boundary", "user_boundary", "user_separator",
                         "private_prefix"):  # fmt: skip
                if not isinstance(value, str) or not value:
                    raise ValueError(f"channel.{key} must be a non-empty string")
                settings[key] = value
            else:
                raise ValueError(f"channel: unknown option {key!r}")
        return cls(namespaces=MappingProxyType(namespaces), **settings)

    def namespace_name(self, channel: str) -> str:
        """The text before the first boundary, private prefix aside; ``""`` if none."""
        name = channel.removeprefix(self.private_prefix)
        head, boundary, _ = name.partition(self.namespace_boundary)
        return head if boundary else ""

    def namespace_of(self, channel: str) -> NamespaceOptions | None:
        """The channel's options; None for an unknown namespace (error 102)."""
        if self.namespace_boundary not in channel:
            return self.without_namespace  # asked several times a subscribe: no copies
        name = self.namespace_name(channel)
        return self.without_namespace if name == "" else self.namespaces.get(name)

    def history_of(self, channel: str) -> tuple[int, float] | None:
        """(history_size, history_ttl) where the channel's namespace keeps history."""
        if channel.startswith(INTERNAL_PREFIX):
            return None
        options = self.namespace_of(channel)
        if options is None or options.history_size <= 0 or options.history_ttl <= 0:
            return None
        return options.history_size, options.history_ttl

    def presence_of(self, channel: str) -> PresenceMode | None:
        """How the channel's namespace tracks presence, if it does."""
        if channel.startswith(INTERNAL_PREFIX):
            return None
        options = self.namespace_of(channel)
        if options is None or not (options.presence or options.join_leave):
            return None
        return PresenceMode(options.presence, options.join_leave)

    def is_private(self, channel: str) -> bool:
        """``$`` channels, and reserved ones, need a subscription token whatever the
        options say."""
        return channel.startswith(self.private_prefix) or (
            bool(self.reserved) and channel.startswith(self.reserved)
        )

    def is_user_limited(self, channel: str) -> bool:
        """A ``#`` channel in a namespace that allows user-limited channels.

        Where the namespace does not allow them, ``#`` is an ordinary character.
        """
        options = self.namespace_of(channel)
        return (
            options is not None
            and options.allow_user_limited_channels
            and self.user_boundary in channel
        )

    def allowed_users(self, channel: str) -> tuple[str, ...]:
        """Users named after the last ``#``: ``dialog:#42,43`` -> ("42", "43")."""
        if self.user_boundary not in channel:
            return ()
        return tuple(channel.rsplit(self.user_boundary, 1)[1].split(self.user_separator))

    def personal_channel(self, user: str, namespace: str = "") -> str:
        """``user``'s personal channel, as Centrifugo names it: ``#42``, or
        ``personal:#42`` in namespace ``personal`` (the boundaries configured here)."""
        channel = self.user_boundary + user
        return f"{namespace}{self.namespace_boundary}{channel}" if namespace else channel

    def name_refusal(self, channel: str) -> Refusal | None:
        """BAD_REQUEST for an empty name, one over ``max_channel_length`` bytes (as Go),
        or an internal one (:data:`INTERNAL_PREFIX`): no client or API call reaches those.
        """
        if (
            not channel
            or len(channel.encode("utf-8", "surrogatepass")) > self.max_channel_length
            or channel.startswith(INTERNAL_PREFIX)
        ):
            return Refusal.BAD_REQUEST
        return None

    def channel_refusal(self, channel: str) -> Refusal | None:
        """Name, then namespace (UNKNOWN_CHANNEL), then characters: without
        ``channel_regex`` Centrifugo takes ASCII names only (BAD_REQUEST)."""
        if refusal := self.name_refusal(channel):
            return refusal
        if self.namespace_of(channel) is None:
            return Refusal.UNKNOWN_CHANNEL
        if not channel.isascii() or not channel.isprintable():
            return Refusal.BAD_REQUEST  # printable: internal channels use control characters
        return None

    def _subscribe_gate(self, user: str, channel: str, granted: bool) -> Refusal | bool:
        """Steps before the hook: a Refusal refuses, True allows, False asks further."""
        if refusal := self.channel_refusal(channel):
            return refusal
        if granted:
            return True
        if self.is_private(channel):
            return Refusal.PERMISSION_DENIED
        if self.is_user_limited(channel):
            # Decided here: the hook is not asked about user-limited channels, and an
            # anonymous user is never listed.
            if user and user in self.allowed_users(channel):
                return True
            return Refusal.PERMISSION_DENIED
        return False

    def _subscribe_default(self, user: str, channel: str) -> bool:
        """The namespace options' answer, where the gate left the question open."""
        options = self.namespace_of(channel)
        assert options is not None  # the gate refused unknown namespaces
        return options.allow_subscribe_for_client and bool(
            user or options.allow_subscribe_for_anonymous
        )

    def _publish_default(self, user: str, channel: str, subscribed: bool) -> bool:
        """The namespace options' answer for a client's publish to a valid channel."""
        options = self.namespace_of(channel)
        assert options is not None  # channel_refusal refused unknown namespaces
        if self.reserved and channel.startswith(self.reserved):
            return False  # another protocol's: its clients publish there its own way
        if user or options.allow_publish_for_anonymous:
            if options.allow_publish_for_client:
                return True
            if options.allow_publish_for_subscriber and subscribed:
                return True
        return False

    def may_subscribe(self, user: str, channel: str, *, granted: bool = False) -> Decision:
        """The neutral decision (:class:`~realtime_hub.policy.ChannelPolicy`).

        Order, first match decides: bad name BAD_REQUEST; unknown namespace
        UNKNOWN_CHANNEL; a grant (a valid subscription token) allows; private channel
        PERMISSION_DENIED; user-limited channel: the user is listed or
        PERMISSION_DENIED. Then open (where Centrifugo asks a hook):
        ``allow_subscribe_for_client`` (and ``allow_subscribe_for_anonymous`` for
        ``user == ""``), otherwise PERMISSION_DENIED.
        """
        gate = self._subscribe_gate(user, channel, granted)
        if gate is True:
            return ALLOW
        if gate is False:
            if self._subscribe_default(user, channel):
                return ALLOW_UNLESS_EXTENDED
            return DENY_UNLESS_EXTENDED
        return refuse(gate)

    def may_publish(self, user: str, channel: str, *, subscribed: bool = False) -> Decision:
        """The neutral decision (:class:`~realtime_hub.policy.ChannelPolicy`).

        Order: a bad name or unknown namespace refuses; then open (where Centrifugo
        asks a hook): ``allow_publish_for_client``; ``allow_publish_for_subscriber``
        when subscribed (both need a user or ``allow_publish_for_anonymous``);
        otherwise PERMISSION_DENIED.
        """
        if refusal := self.channel_refusal(channel):
            return refuse(refusal)
        if self._publish_default(user, channel, subscribed):
            return ALLOW_UNLESS_EXTENDED
        return DENY_UNLESS_EXTENDED

    # The Centrifuge protocol's numbered answers, for the callers that still ask the
    # rules for them; realtime_centrifuge.policy derives them from the decisions.

    def validate_name(self, channel: str) -> Error | None:
        """:meth:`name_refusal` as error 107. The session closes with 3501 on an empty
        channel before asking."""
        refusal = self.name_refusal(channel)
        return None if refusal is None else ERROR_OF[refusal]

    def check_channel(self, channel: str) -> Error | None:
        """:meth:`channel_refusal` as error 102 or 107."""
        refusal = self.channel_refusal(channel)
        return None if refusal is None else ERROR_OF[refusal]

    def subscribe_gate(self, user: str, channel: str, has_valid_token: bool) -> Error | bool:
        """Steps before the hook: an Error refuses, True allows, False asks further.

        :meth:`can_subscribe` in two steps, the gate checked once: False asks the
        hook, then :meth:`subscribe_verdict` with its answer."""
        gate = self._subscribe_gate(user, channel, has_valid_token)
        return ERROR_OF[gate] if isinstance(gate, Refusal) else gate

    def subscribe_verdict(
        self, gate: Error | bool, user: str, channel: str, hook: HookAnswer = None
    ) -> Error | None:
        """:meth:`can_subscribe`'s answer, from :meth:`subscribe_gate`'s."""
        if gate is True:
            return None
        if isinstance(gate, Error):
            return gate
        if hook is not None:
            return _answer(hook)
        return None if self._subscribe_default(user, channel) else ERROR_PERMISSION_DENIED

    def subscribe_asks_hook(self, user: str, channel: str, has_valid_token: bool) -> bool:
        """Whether ``can_subscribe`` would consult the hook: ask it only then."""
        return self._subscribe_gate(user, channel, has_valid_token) is False

    def can_subscribe(
        self, user: str, channel: str, has_valid_token: bool, hook: HookAnswer = None
    ) -> Error | None:
        """None if ``user`` may subscribe, else the Error to answer.

        :meth:`may_subscribe`'s order, with the hook's answer where it is open;
        refusals numbered 107 (bad name), 102 (unknown namespace), 103.
        """
        return self.subscribe_verdict(
            self.subscribe_gate(user, channel, has_valid_token), user, channel, hook
        )

    def can_publish(
        self, user: str, channel: str, subscribed: bool, hook: HookAnswer = None
    ) -> Error | None:
        """None if ``user`` may publish, else the Error to answer.

        :meth:`may_publish`'s order, with the hook's answer where it is open;
        refusals numbered as :meth:`can_subscribe`'s.
        """
        if error := self.check_channel(channel):
            return error
        if hook is not None:
            return _answer(hook)
        return None if self._publish_default(user, channel, subscribed) else ERROR_PERMISSION_DENIED


def _answer(hook: bool | Error) -> Error | None:
    if isinstance(hook, Error):
        return hook
    if hook is True:
        return None
    if hook is False:
        return ERROR_PERMISSION_DENIED
    raise TypeError(f"a hook must answer True, False, an Error or None, not {hook!r}")


def _namespace(table: Any, index: int) -> tuple[str, NamespaceOptions]:
    where = f"channel.namespaces[{index}]"
    if not isinstance(table, Mapping):
        raise ValueError(f"{where} must be a table")
    options = dict(table)
    name = options.pop("name", None)
    if not isinstance(name, str) or not _NAMESPACE_NAME.fullmatch(name):
        raise ValueError(
            f"{where}: name {name!r} must match [-a-zA-Z0-9_.]{{2,}} (as in Centrifugo)"
        )
    return name, NamespaceOptions.from_config(options, f"channel.namespaces[{index}] ({name})")
