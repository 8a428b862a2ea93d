"""One way to open Redis: a bounded pool that waits for a free connection instead of failing.

redis-py's default pool raises "Too many connections" past 100 connections in use, which a
burst of requests reaches easily. A blocking pool caps connections (Redis's and ours) and lets a
command wait up to `wait_seconds` for one; busy callers share connections instead of failing.

The URL is `redis://` or `rediss://` (one Redis), or `redis+sentinel://` for a Redis that
Sentinel fails over: `redis+sentinel://[:password@]host:26379[,host:26379...]/<master name>[/db]`.
Connections then go to whichever server the Sentinels name master, asked again after a
failover.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

MAX_CONNECTIONS = 64
SENTINEL_SCHEME = "redis+sentinel"


class BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's pool (connections to the current master), waiting for a free connection."""


class SentinelRedis(Redis):
    """A client of the current master that closes its Sentinel connections with its own."""

    manager: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.manager is not None:
            for client in self.manager.sentinels:
                await client.aclose()


def _sentinel(url: str, **pool: Any) -> Redis:
    parts = urlsplit(url)
    hosts = []
    for host in parts.netloc.rpartition("@")[2].split(","):
        name, _, port = host.rpartition(":")
        hosts.append((name, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"{SENTINEL_SCHEME} URL needs the master's name: .../<master name>[/db]")
    password = unquote(parts.password) if parts.password else None
    make: Any = Sentinel  # untyped
    sentinel: Sentinel = make(
        hosts, socket_timeout=pool.get("socket_connect_timeout"), password=password
    )
    client = sentinel.master_for(
        path[0],
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelPool,
        db=int(path[1]) if len(path) > 1 else 0,
        **pool,
    )
    assert isinstance(client, SentinelRedis)
    client.manager = sentinel
    return client


def connect(
    url: str,
    *,
    wait_seconds: float,
    socket_timeout: float | None = None,
    connect_timeout: float = 2.0,
    max_connections: int = MAX_CONNECTIONS,
) -> Redis:
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        return _sentinel(
            url,
            max_connections=max_connections,
            timeout=wait_seconds,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
        )
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_seconds,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
    )
    # from_pool: the client owns the pool, so closing the client closes its connections too.
    return Redis.from_pool(pool)


def single(url: str, *, socket_timeout: float, connect_timeout: float = 2.0) -> Redis:
    """A client with one connection of its own (a blocking XREAD reader)."""
    if url.startswith(f"{SENTINEL_SCHEME}://"):
        return _sentinel(
            url,
            max_connections=1,
            timeout=None,
            socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
        )
    return Redis.from_url(
        url,
        single_connection_client=True,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
    )
