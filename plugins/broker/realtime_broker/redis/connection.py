"""How the Redis broker connects: its clients, and what counts as Redis being unreachable."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from .sentinel import is_sentinel_url, make_sentinel_client

#: What a command raises when Redis cannot be reached (or answer in time).
UNREACHABLE = (RedisError, OSError, TimeoutError)
#: Connections to Redis a process opens at most for its commands (the subscription
#: has its own): more commands in flight wait for one.
POOL_SIZE = 64


def make_client(url: str, timeout: float, retries: int, **options: Any) -> Redis:
    """A client without redis-py's default retries: ten, with backoff, they would
    stretch a failing call past ``broker_timeout`` and renew a lost subscription
    behind this broker's back (missing what was published meanwhile, unnoticed).

    Its pool holds at most POOL_SIZE connections and makes a command wait for one
    (within the broker's timeout) rather than fail: redis-py's default pool
    refuses the 101st command in flight ("Too many connections"), which a burst
    of clients resubscribing or publishing at once reaches.
    """
    if is_sentinel_url(url):
        return make_sentinel_client(url, timeout, retries, max_connections=POOL_SIZE, **options)
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=POOL_SIZE,
        timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), retries),
        **options,
    )
    return Redis.from_pool(pool)
