"""One way to open Redis: a bounded pool that waits for a free connection instead of failing.

redis-py's default pool raises "Too many connections" past 100 connections in use, which a
burst of requests reaches easily. A blocking pool caps connections (Redis's and ours) and lets a
command wait up to `wait_seconds` for one; busy callers share connections instead of failing.

The URL is `redis://` or `rediss://` (one Redis), or `redis+sentinel://` for a Redis that
Sentinel fails over: `redis+sentinel://[[user]:password@]host[:26379][,host...]/<master>[/db]`.
Connections then go to whichever server the Sentinels name master, asked again after a
failover.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool

from tiller.common.lifecycle import StartupError

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


@dataclass(frozen=True)
class SentinelURL:
    hosts: list[tuple[str, int]]
    master: str
    db: int = 0
    username: str | None = None
    password: str | None = None  # the master's
    sentinel_password: str | None = None  # the Sentinels' own, if they ask for one


def parse_sentinel(url: str) -> SentinelURL:
    """`redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master>[/db]`, hosts
    as names, IPv4 or [IPv6] (port 26379 if left out), `?sentinel_password=` for Sentinels
    that require a password of their own. Errors never repeat the URL (it may hold one)."""
    parts = urlsplit(url)
    hosts = []
    for host in parts.netloc.rpartition("@")[2].split(","):
        if host.startswith("["):  # [IPv6]:port
            name, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":")
        elif host.count(":") == 1:
            name, _, port = host.partition(":")
        else:
            name, port = host, ""
        if not name or not (port == "" or port.isdigit()):
            raise ValueError(f"{SENTINEL_SCHEME} URL: a Sentinel host is not host[:port]")
        hosts.append((name, int(port or 26379)))
    path = [p for p in parts.path.split("/") if p]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ValueError(f"{SENTINEL_SCHEME} URL needs the master's name: .../<master name>[/db]")
    query = parse_qs(parts.query)
    unknown = set(query) - {"sentinel_password"}
    if unknown:
        raise ValueError(f"{SENTINEL_SCHEME} URL: unknown options {', '.join(sorted(unknown))}")
    return SentinelURL(
        hosts=hosts,
        master=unquote(path[0]),
        db=int(path[1]) if len(path) > 1 else 0,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        sentinel_password=query["sentinel_password"][0] if query else None,
    )


def _sentinel(url: str, **pool: Any) -> Redis:
    parsed = parse_sentinel(url)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": pool.get("socket_connect_timeout")}
    if parsed.sentinel_password:
        sentinel_kwargs["password"] = parsed.sentinel_password
    make: Any = Sentinel  # untyped
    sentinel: Sentinel = make(
        parsed.hosts,
        sentinel_kwargs=sentinel_kwargs,
        socket_timeout=pool.get("socket_connect_timeout"),
        username=parsed.username,
        password=parsed.password,
    )
    client = sentinel.master_for(
        parsed.master,
        redis_class=SentinelRedis,
        connection_pool_class=BlockingSentinelPool,
        db=parsed.db,
        **pool,
    )
    assert isinstance(client, SentinelRedis)
    client.manager = sentinel
    return client


def check(url: str) -> None:
    """A URL Tiller cannot use stops the service with one line that does not repeat it."""
    try:
        if url.startswith(f"{SENTINEL_SCHEME}://"):
            parse_sentinel(url)
        elif urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"use redis://, rediss://, unix:// or {SENTINEL_SCHEME}://")
        else:
            parse_url(url)
    except ValueError as error:
        raise StartupError(f"invalid Redis URL: {error}") from None


def connect(
    url: str,
    *,
    wait_seconds: float,
    socket_timeout: float | None = None,
    connect_timeout: float = 2.0,
    max_connections: int = MAX_CONNECTIONS,
) -> Redis:
    check(url)
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
    check(url)
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
