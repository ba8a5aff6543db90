"""Redis behind Sentinels (``redis+sentinel://``, ``rediss+sentinel://``): the broker's
clients ask the Sentinels where the master is, and follow it when they fail over.

The URL names the Sentinels and the master's name (the form other Redis clients
take, kombu's and Celery's among them)::

    redis+sentinel://[[user]:password@]host:26379[,host:26380...]/MASTER[/DB][?options]

with the options ``db`` (the database, instead of ``/DB``), ``sentinel_master_name``
(instead of ``/MASTER``, as Centrifugo names it), and ``sentinel_username`` and
``sentinel_password`` for Sentinels that want their own. The credentials before
``@`` are the Redis master's; Sentinels are asked without any unless those options
give some. ``rediss+sentinel://`` reaches the master over TLS (the Sentinels without).

Each client here is redis-py's :meth:`Sentinel.master_for`: every new connection
(the commands' pool and the Pub/Sub connection alike) asks a Sentinel for the master
first, and a connection that finds a former master (``READONLY``) drops itself. The
broker already reconnects on any failure and compares its positions with Redis when
it does (:mod:`.listener`), so a failover costs what a Redis restart costs: 503s
while no master is known, then publications resume, and a channel whose numbering
moved meanwhile (publications made on the new master before this process listened
again, or ones the replica never got) is told to its subscribers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

#: The default Sentinel port, for a host given without one.
SENTINEL_PORT = 26379
SCHEMES = ("redis+sentinel", "rediss+sentinel")


@dataclass(frozen=True)
class SentinelTarget:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: tuple[tuple[str, int], ...]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False


def is_sentinel_url(url: str) -> bool:
    return url.partition("://")[0].lower() in SCHEMES


def parse(url: str) -> SentinelTarget:
    """The Sentinels, master name, database and credentials of a ``redis+sentinel://`` URL."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a Sentinel URL (redis+sentinel://...): {url!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username = password = None
    if userinfo:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_address(host) for host in hosts.split(",") if host.strip())
    if not sentinels:
        raise ValueError(f"a Sentinel URL names at least one Sentinel (host:port): {url!r}")
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    path = [unquote(part) for part in parts.path.split("/") if part]
    if len(path) > 2:
        raise ValueError(f"a Sentinel URL's path is /MASTER or /MASTER/DB: {url!r}")
    master = query.pop("sentinel_master_name", "") or (path[0] if path else "")
    if not master:
        raise ValueError(f"a Sentinel URL names its master (/MASTER): {url!r}")
    db_text = query.pop("db", "") or (path[1] if len(path) == 2 else "0")
    try:
        db = int(db_text)
    except ValueError:
        raise ValueError(f"a Sentinel URL's database is a number: {url!r}") from None
    target = SentinelTarget(
        sentinels,
        master,
        db,
        username,
        password,
        query.pop("sentinel_username", None),
        query.pop("sentinel_password", None),
        scheme == "rediss+sentinel",
    )
    if query:
        raise ValueError(f"unknown Sentinel URL option(s) {', '.join(sorted(query))}: {url!r}")
    return target


def _address(host: str) -> tuple[str, int]:
    host = host.strip()
    if host.startswith("["):  # [IPv6]:port
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = host.rpartition(":") if ":" in host else (host, "", "")
    try:
        return name, int(port) if port else SENTINEL_PORT
    except ValueError:
        raise ValueError(f"a Sentinel's port is a number: {host!r}") from None


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (the master's address asked at each connect), blocking as the
    broker's plain pool does when all its connections are in use."""


class _SentinelRedis(Redis):
    """The master's client; closing it closes its connections to the Sentinels too."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        pool = self.connection_pool
        await super().aclose(close_connection_pool)
        if isinstance(pool, SentinelConnectionPool):
            manager: Any = pool.sentinel_manager
            await manager.aclose()


def make_sentinel_client(
    url: str, timeout: float, retries: int, *, max_connections: int, **options: Any
) -> Redis:
    """:func:`.connection.make_client` for a Sentinel URL: the same pool and retries."""
    target = parse(url)
    sentinel_kwargs: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
    }
    if target.sentinel_password is not None:
        sentinel_kwargs["password"] = target.sentinel_password
    if target.sentinel_username is not None:
        sentinel_kwargs["username"] = target.sentinel_username
    sentinel = Sentinel(list(target.sentinels), sentinel_kwargs=sentinel_kwargs)
    if target.tls:
        options["ssl"] = True
    client: Redis = sentinel.master_for(
        target.master,
        redis_class=_SentinelRedis,
        connection_pool_class=_BlockingSentinelPool,
        db=target.db,
        username=target.username,
        password=target.password,
        max_connections=max_connections,
        timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        **options,
    )
    return client


def describe(url: str) -> str:
    """The URL without credentials (the master's, and the Sentinels' in the query)."""
    parts = urlsplit(url)
    query = "&".join(
        part
        for part in parts.query.split("&")
        if part and not part.partition("=")[0].startswith("sentinel_password")
    )
    hosts = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{hosts}{parts.path}" + (f"?{query}" if query else "")
