"""Redis over TLS, with a client certificate where the server asks for one: a `rediss://` URL
whose query names the files (`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`), read by every
service's one way of opening Redis (common/redis_client.py). A TLS-terminating proxy that
checks client certificates (Python's ssl, as stunnel or a managed Redis's TLS endpoint would)
stands in front of the stack's real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from tests.support import Stack, free_port
from tiller.cli import certs
from tiller.common import redis_client


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def endpoint(stack: Stack, tmp_path: Path) -> AsyncIterator[tuple[int, Path]]:
    """A TLS endpoint for the stack's Redis that accepts only certified clients."""
    certs.make(tmp_path, None, names=("redis", "tiller"))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tmp_path / "ca.crt"))
    context.load_cert_chain(tmp_path / "redis.crt", tmp_path / "redis.key")
    context.verify_mode = ssl.CERT_REQUIRED

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(
            "127.0.0.1", stack.redis_port
        )
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    port = free_port()
    server = await asyncio.start_server(relay, "127.0.0.1", port, ssl=context)
    async with server:
        yield port, tmp_path


def url(port: int, tls: Path, client: bool = True) -> str:
    query = f"ssl_ca_certs={tls}/ca.crt&ssl_check_hostname=false"
    if client:
        query += f"&ssl_certfile={tls}/tiller.crt&ssl_keyfile={tls}/tiller.key"
    return f"rediss://127.0.0.1:{port}/0?{query}"


async def test_a_rediss_url_with_its_certificates_reaches_redis(
    endpoint: tuple[int, Path],
) -> None:
    port, tls = endpoint
    redis = redis_client.connect(url(port, tls), wait_seconds=2)
    try:
        assert await redis.ping()
        await redis.set("test:tls", b"sealed", ex=5)
        assert await redis.get("test:tls") == b"sealed"
    finally:
        await redis.aclose()


async def test_without_a_client_certificate_the_endpoint_refuses(
    endpoint: tuple[int, Path],
) -> None:
    port, tls = endpoint
    redis = redis_client.connect(url(port, tls, client=False), wait_seconds=2)
    try:
        with pytest.raises((RedisConnectionError, ssl.SSLError, ConnectionResetError)):
            await redis.ping()
    finally:
        await redis.aclose()
