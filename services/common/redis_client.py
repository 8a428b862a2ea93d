"""One way to open Redis: a bounded pool that waits for a free connection instead of failing.

redis-py's default pool raises "Too many connections" past 100 connections in use, which a
burst of requests reaches easily. A blocking pool caps connections (Redis's and ours) and lets a
command wait up to `wait_seconds` for one; busy callers share connections instead of failing.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

MAX_CONNECTIONS = 64


def connect(
    url: str,
    *,
    wait_seconds: float,
    socket_timeout: float | None = None,
    connect_timeout: float = 2.0,
    max_connections: int = MAX_CONNECTIONS,
) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_seconds,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
    )
    # from_pool: the client owns the pool, so closing the client closes its connections too.
    return Redis.from_pool(pool)
