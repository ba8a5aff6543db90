"""``/.well-known/mercure``: subscriptions (GET, an event stream) and updates (POST).

A subscription is a Server-Sent-Events response taken over onto the hub's fast
path (:func:`realtime_hub.httpstream.open_response`), as Centrifuge's ``uni_sse``:
it joins the channel of each exact topic selector and, for ``*`` and URI templates,
:data:`.wire.TEMPLATES`, in its :class:`.wire.Subscription` format. Its buffer and
overflow policy are every connection's; it counts in ``--max-connections``
(``host.hold_connection``). A publish is one publication per topic channel plus one
on :data:`.wire.TEMPLATES` (a private one on that only), through the broker, so it
reaches every host.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from realtime import Host
from realtime.rate import Bucket, Rate
from realtime.routes import read_body
from realtime_broker import (
    BrokerUnavailable,
    HistoryResult,
    HistoryUnavailable,
    Publication,
    UnrecoverablePosition,
    get_broker,
)
from realtime_hub import ChannelRules, Client, HubClosed, get_hub
from realtime_hub.httpstream import BARE, open_response

from .auth import Grant, Unauthorized, Verifier, find_token, header, request_origin
from .selectors import InvalidSelector, any_match, check_selector, is_template
from .wire import (
    MAX_UPDATE_TOPICS,
    Subscription,
    published_at,
    update_attrs,
    update_channels,
)

log = logging.getLogger("realtime.mercure")

PATH = "/.well-known/mercure"
#: Topics may not name the hub itself (as Go: 403).
RESERVED = "/.well-known/mercure"
#: The id asking for every update kept.
EARLIEST = "earliest"
#: The longest query string, bytes, and the most fields in it or in a form.
MAX_QUERY_SIZE = 16 * 1024
MAX_FIELDS = 128
#: The longest update ``id`` or ``type`` (the broker's bound on names).
MAX_NAME = 512
#: Form fields besides ``data`` (url-encoded, up to three times its size): room in the body.
FORM_SLACK = 16 * 1024
#: Addresses whose publish rate is tracked at once (the oldest are forgotten).
MAX_TRACKED = 10_000
ALLOW_HEADERS = b"authorization, cache-control, last-event-id, content-type"
SSE_TYPE = (b"content-type", b"text/event-stream")

Receive = Callable[[], Coroutine[Any, Any, dict[str, Any]]]
Send = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]


@dataclass(frozen=True)
class Config:
    publisher: Verifier
    subscriber: Verifier
    anonymous: bool
    cors_origins: tuple[str, ...]
    heartbeat: float
    max_topics: int
    foreign_private: bool
    publish_rate: float
    max_message_size: int

    def origin_allowed(self, origin: str | None) -> bool:
        return origin is not None and ("*" in self.cors_origins or origin in self.cors_origins)

    def origin_listed(self, origin: str | None) -> bool:
        """Whether ``origin`` is allowed by name: only those get credentialed CORS
        answers and may publish by cookie (``*`` would let any site do both)."""
        return origin is not None and origin in self.cors_origins


class _Stream:
    """A subscriber's handler: it sends nothing; its timers end with it."""

    __slots__ = ("client", "expiry", "node")

    def __init__(self, node: MercureNode, client: Client) -> None:
        self.node = node
        self.client = client
        self.expiry: asyncio.TimerHandle | None = None

    def received(self, data: str | bytes) -> None:
        return None

    def closed(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
            self.expiry = None
        self.node.streams.pop(self.client.id, None)


class MercureNode:
    """One host's Mercure hub: its settings, formats, heartbeats and publish rates."""

    def __init__(self, host: Host, config: Config) -> None:
        self.host = host
        self.config = config
        self.formats: weakref.WeakValueDictionary[Any, Subscription] = weakref.WeakValueDictionary()
        self.streams: dict[int, Client] = {}
        self._rate = Rate(config.publish_rate) if config.publish_rate > 0 else None
        self._buckets: dict[str, Bucket] = {}
        self._beating: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.config.heartbeat > 0:
            self._beating = asyncio.get_running_loop().create_task(self._heartbeats())

    async def stop(self) -> None:
        task, self._beating = self._beating, None
        if task is not None:
            task.cancel()

    async def _heartbeats(self) -> None:
        """A comment line to every stream each interval: proxies keep it open, and a
        client gone away is found by the write."""
        while True:
            await asyncio.sleep(self.config.heartbeat)
            try:
                hub = get_hub(self.host)
            except HubClosed:
                continue
            for client in list(self.streams.values()):
                hub.send(client, ":\n")

    def subscription(
        self, exact: frozenset[str], templates: tuple[str, ...], grant: tuple[str, ...] | None
    ) -> Subscription:
        key = (exact, templates, grant)
        found = self.formats.get(key)
        if found is None:
            try:
                rules = get_hub(self.host).rules
            except HubClosed:
                rules = None
            guarded = frozenset(topic for topic in exact if rules is None or _guarded(rules, topic))
            found = Subscription(
                exact,
                templates,
                grant,
                foreign_private=self.config.foreign_private,
                guarded=guarded,
            )
            self.formats[key] = found
        return found

    def may_publish(self, scope: Any) -> bool:
        if self._rate is None:
            return True
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        bucket = self._buckets.get(address)
        if bucket is None:
            if len(self._buckets) >= MAX_TRACKED:
                self._buckets.clear()
            bucket = self._buckets[address] = Bucket(self._rate)
        return bucket.take()

    # The endpoint ---------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        method = scope.get("method", "GET")
        origin = request_origin(scope) if header(scope, b"origin") else None
        cors = self.cors_headers(origin)
        try:
            if method == "OPTIONS":
                await self.preflight(scope, send, origin, cors)
            elif method == "GET":
                await self.subscribe(scope, receive, send, cors)
            elif method == "POST":
                await self.publish(scope, receive, send, cors)
            else:
                await reply(send, 405, "Method Not Allowed", [(b"allow", b"GET, POST, OPTIONS")])
        except _Refused as refused:
            await reply(send, refused.status, refused.text, [*cors, *refused.headers])

    def cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if not self.config.origin_allowed(origin):
            return []
        assert origin is not None
        if not self.config.origin_listed(origin):
            # Any origin: as Go's CORS answers "*", never with credentials (reflecting
            # the origin with credentials would let every site read by the cookie).
            return [
                (b"access-control-allow-origin", b"*"),
                (b"access-control-expose-headers", b"last-event-id"),
            ]
        return [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"access-control-expose-headers", b"last-event-id"),
            (b"vary", b"Origin"),
        ]

    async def preflight(
        self, scope: Any, send: Send, origin: str | None, cors: list[tuple[bytes, bytes]]
    ) -> None:
        if not cors:
            raise _Refused(403, "Origin not allowed")
        headers = [
            *cors,
            (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
            (b"access-control-allow-headers", ALLOW_HEADERS),
            (b"access-control-max-age", b"600"),
        ]
        await reply(send, 204, "", headers)

    def query(self, scope: Any) -> dict[str, list[str]]:
        raw = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_SIZE:
            raise _Refused(414, "Query too long")
        try:
            return parse_qs(raw.decode("latin-1"), max_num_fields=MAX_FIELDS, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "Malformed query") from None

    def grant(self, verifier: Verifier, token: str | None) -> Grant | None:
        if token is None:
            return None
        try:
            return verifier.verify(token)
        except Unauthorized as exc:
            log.debug("mercure: %s", exc)
            raise _Refused(401, "Unauthorized", [(b"www-authenticate", b"Bearer")]) from None

    # Subscribe --------------------------------------------------------------------

    async def subscribe(
        self, scope: Any, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        config = self.config
        query = self.query(scope)
        grant: Grant | None = None
        if config.subscriber.key:  # else, as Go: everyone subscribes, to public updates
            try:
                token = find_token(scope, query, post=False, origin_allowed=True)
            except Unauthorized:
                raise _Refused(401, "Unauthorized", [(b"www-authenticate", b"Bearer")]) from None
            grant = self.grant(config.subscriber, token)
            if grant is None and not config.anonymous:
                raise _Refused(401, "Unauthorized", [(b"www-authenticate", b"Bearer")])
        selectors = query.get("topic", [])
        if not selectors:
            raise _Refused(400, 'Missing "topic" parameter.')
        if len(selectors) > config.max_topics:
            raise _Refused(400, 'Too many "topic" parameters.')
        try:
            hub = get_hub(self.host)
            broker = get_broker(self.host)
        except (HubClosed, BrokerUnavailable):
            raise _Refused(503, "Service Unavailable") from None
        longest = hub.rules.max_channel_length
        exact: set[str] = set()
        templates: list[str] = []
        for selector in selectors:
            try:
                check_selector(selector)
            except InvalidSelector as exc:
                raise _Refused(400, f"Invalid topic selector: {exc}") from None
            if is_template(selector):
                if selector not in templates:
                    templates.append(selector)
            elif not _channel_name(selector, longest):
                raise _Refused(400, f"A topic is 1 to {longest} printable bytes")
            else:
                exact.add(selector)
        fmt = self.subscription(
            frozenset(exact),
            tuple(sorted(templates)),
            grant.subscribe if grant is not None else None,
        )
        last_ids = header(scope, b"last-event-id")
        # The header (EventSource's reconnect), then ``lastEventID``, then version 7's
        # ``Last-Event-ID`` query parameter (which the 0.x Go hub keeps for it).
        last_id = (
            last_ids[0].decode("utf-8", "replace")
            if last_ids
            else (query.get("lastEventID") or query.get("Last-Event-ID") or [""])[0]
        )
        if not hub.running:
            raise _Refused(503, "Service Unavailable")
        channels = fmt.channels()
        kept = [c for c in channels if broker.keeps_history(c)] if last_id else []
        first: dict[str, HistoryResult] = {}
        resumed = EARLIEST
        if kept:
            try:
                for channel in kept:
                    first[channel] = await broker.history(channel, limit=-1)
            except (BrokerUnavailable, HistoryUnavailable):
                raise _Refused(503, "History unavailable") from None
            resumed = _newest_id(first) or EARLIEST
        headers = [SSE_TYPE, *cors]
        if last_id:
            headers.append((b"last-event-id", resumed.encode("utf-8", "replace")))
        release = self.host.hold_connection(scope)
        if isinstance(release, tuple):
            raise _Refused(*release)
        try:
            stream = await open_response(
                send,
                framing=BARE,
                headers=headers,
                high_water=hub.direct_limit,
                preamble=b":\n",
                take_over=hub.fast_path,
            )
        except BaseException:
            release()
            raise
        try:
            client = hub.attach(
                stream,
                stream.framing,
                lambda client: _Stream(self, client),
                release=release,
                protocol="mercure",
            )
        except HubClosed:
            release()
            stream.abort()
            return
        handler = client.handler
        assert isinstance(handler, _Stream)
        hub.identify(client, user=grant.subject if grant is not None else "")
        self.streams[client.id] = client
        if grant is not None and grant.exp is not None:
            delay = grant.exp - time.time()
            handler.expiry = asyncio.get_running_loop().call_later(
                max(0.0, delay), hub.disconnect, client, 1000, "token expired"
            )
        if not kept:
            for channel in channels:
                hub.join(channel, client, fmt)
        else:
            await self._replay(client, fmt, channels, kept, first, last_id)
        await stream.run(receive)

    async def _replay(
        self,
        client: Client,
        fmt: Subscription,
        channels: Sequence[str],
        kept: Sequence[str],
        first: Mapping[str, HistoryResult],
        last_id: str,
    ) -> None:
        """Join, sending first what came after ``last_id`` in the kept channels' history.

        The kept channels are held (:meth:`Hub.hold`) while what was published since
        the first read is read again, so nothing is missed or sent twice around it.
        """
        hub = get_hub(self.host)
        broker = get_broker(self.host)
        for channel in channels:
            if channel not in kept:
                hub.join(channel, client, fmt)
        held = {channel: hub.hold(channel, client) for channel in kept}
        since: dict[str, HistoryResult] = {}
        try:
            for channel in kept:
                position = first[channel].position
                try:
                    since[channel] = await broker.history(channel, limit=-1, since=position)
                except UnrecoverablePosition:
                    since[channel] = HistoryResult((), position)
                await broker.caught_up(channel, since[channel].position)
        except (BrokerUnavailable, HistoryUnavailable):
            since = {}
        if client.closing:
            return
        for channel, holding in held.items():
            hub.release(channel, client, holding, fmt)
        ordered = _replayed(first, last_id)
        for channel in kept:
            later = since.get(channel)
            fresh = list(later.publications) if later is not None else []
            position = later.position if later is not None else first[channel].position
            for publication in held[channel].publications:
                if publication.epoch != position.epoch or publication.offset > position.offset:
                    fresh.append(publication)
            ordered.extend((0, 0, channel, publication) for publication in fresh)
        for _, _, channel, publication in ordered:
            text = fmt.encode(channel, publication)
            if text is not None and not hub.send(client, text):
                return

    # Publish ----------------------------------------------------------------------

    async def publish(
        self, scope: Any, receive: Receive, send: Send, cors: list[tuple[bytes, bytes]]
    ) -> None:
        config = self.config
        if not self.may_publish(scope):
            raise _Refused(429, "Too Many Requests")
        query = self.query(scope)
        limit = 3 * config.max_message_size + FORM_SLACK  # %XX for every byte, at worst
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            raise _Refused(413, "Request Entity Too Large")
        try:
            origin_allowed = config.origin_listed(request_origin(scope))
            token = find_token(scope, query, post=True, origin_allowed=origin_allowed)
        except Unauthorized:
            raise _Refused(401, "Unauthorized", [(b"www-authenticate", b"Bearer")]) from None
        grant = self.grant(config.publisher, token)
        if grant is None or grant.publish is None:
            raise _Refused(401, "Unauthorized", [(b"www-authenticate", b"Bearer")])
        body = await read_body(receive, limit)
        if body is None:
            raise _Refused(413, "Request Entity Too Large")
        content_type = b"".join(header(scope, b"content-type")[:1]).split(b";")[0].strip().lower()
        if content_type != b"application/x-www-form-urlencoded":
            raise _Refused(400, 'Missing "topic" parameter')
        try:
            form = parse_qs(
                body.decode("utf-8"),
                keep_blank_values=True,
                max_num_fields=MAX_FIELDS,
                errors="strict",
            )
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "Bad Request") from None
        try:
            broker = get_broker(self.host)
            longest = get_hub(self.host).rules.max_channel_length
        except (HubClosed, BrokerUnavailable):
            raise _Refused(503, "Service Unavailable") from None
        topics = tuple(dict.fromkeys(form.get("topic", [])))
        if not topics:
            raise _Refused(400, 'Missing "topic" parameter')
        if len(topics) > MAX_UPDATE_TOPICS:
            raise _Refused(400, "too many topics in update")
        for topic in topics:
            if RESERVED in topic:
                raise _Refused(403, 'topic value references the reserved "/.well-known/mercure"')
            if not _channel_name(topic, longest):
                raise _Refused(400, f"A topic is 1 to {longest} printable bytes")
        private = "private" in form
        if not all(any_match(grant.publish, (topic,)) for topic in topics):
            raise _Refused(401, "Unauthorized")
        retry: int | None = None
        retry_text = _one(form, "retry")
        if retry_text:
            if not retry_text.isascii() or not retry_text.isdigit() or len(retry_text) > 19:
                raise _Refused(400, 'Invalid "retry" parameter')
            retry = int(retry_text)
        update_id = _one(form, "id") or f"urn:uuid:{uuid.uuid4()}"
        event = _one(form, "type") or None
        for value in (update_id, event or ""):
            if len(value) > MAX_NAME or any(c in value for c in "\x00\r\n"):
                raise _Refused(400, 'Invalid "id" or "type" field')
        data = _one(form, "data")
        if len(data.encode()) > config.max_message_size:
            raise _Refused(413, "Request Entity Too Large")
        attrs = update_attrs(topics, private=private, retry=retry, at=time.time_ns())
        publication = Publication(data, event=event, id=update_id, attrs=attrs)
        try:
            await asyncio.gather(
                *(
                    broker.publish_result(channel, publication)
                    for channel in update_channels(topics, private=private)
                )
            )
        except BrokerUnavailable:
            raise _Refused(503, "Service Unavailable") from None
        except (TypeError, ValueError) as exc:  # what the broker cannot carry
            raise _Refused(400, str(exc)) from None
        await reply(send, 200, update_id, cors)


class _Refused(Exception):
    def __init__(self, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        super().__init__(text)
        self.status = status
        self.text = text
        self.headers = list(headers)


def _guarded(rules: ChannelRules, topic: str) -> bool:
    """Whether another protocol guards the channel ``topic`` with its own auth, so its
    publications there are not for Mercure: Centrifuge's private (``$``, and what
    Pusher reserves) and user-limited (``#42``) channels, and any channel of a known
    namespace an anonymous client may not subscribe to (as raw ``/ws`` is asked). A
    channel no other protocol's client can name (a URL's unknown ``https:``
    namespace) is not: only scripts and Mercure publish there."""
    if rules.is_private(topic) or rules.is_user_limited(topic):
        return True
    if rules.channel_refusal(topic) is not None:
        return False
    return not rules.may_subscribe("", topic).allowed


def _newest_id(reads: Mapping[str, HistoryResult]) -> str | None:
    newest: tuple[int, str] | None = None
    for result in reads.values():
        for publication in result.publications:
            if publication.id is None:
                continue
            at = published_at(publication)
            if newest is None or at >= newest[0]:
                newest = (at, publication.id)
    return None if newest is None else newest[1]


def _replayed(
    reads: Mapping[str, HistoryResult], last_id: str
) -> list[tuple[int, int, str, Publication]]:
    """What came after the update ``last_id`` in the kept channels' history, oldest
    first (all for ``earliest``, none if no channel holds it): after it in the channel
    holding it, published later than it in the others. A publication of another
    protocol has no time of its own: it takes the one of the update before it."""
    timed: dict[str, list[tuple[int, int, str, Publication]]] = {}
    for channel, result in reads.items():
        at = 0
        timed[channel] = entries = []
        for publication in result.publications:
            at = max(at, published_at(publication))
            entries.append((at, publication.offset, channel, publication))
    items: list[tuple[int, int, str, Publication]] = []
    if last_id == EARLIEST:
        for entries in timed.values():
            items.extend(entries)
        return sorted(items, key=lambda item: (item[0], item[1]))
    resume_at: int | None = None
    found: dict[str, int] = {}
    for channel, entries in timed.items():
        for index, entry in enumerate(entries):
            if entry[3].id == last_id:
                found[channel] = index
                resume_at = entry[0]
                break
    if resume_at is None:
        return []
    for channel, entries in timed.items():
        if channel in found:
            items.extend(entries[found[channel] + 1 :])
        else:
            items.extend(entry for entry in entries if entry[0] > resume_at)
    return sorted(items, key=lambda item: (item[0], item[1]))


def _one(form: Mapping[str, list[str]], name: str) -> str:
    values = form.get(name)
    return values[0] if values else ""


def _channel_name(topic: str, longest: int) -> bool:
    """Whether ``topic`` can be a channel: printable (so never an internal channel),
    within the hub's ``max_channel_length`` in UTF-8."""
    try:
        size = len(topic.encode())
    except UnicodeEncodeError:
        return False
    return 0 < size <= longest and topic.isprintable()


def _content_length(scope: Any) -> int | None:
    for value in header(scope, b"content-length"):
        try:
            return int(value)
        except ValueError:
            return None
    return None


async def reply(
    send: Send, status: int, text: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
