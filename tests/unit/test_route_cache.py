"""The gateway's route cache: reuse within the TTL, never cache a refusal."""

from __future__ import annotations

import pytest

from tiller.common.errors import NotFound
from tiller.gateway.routes import RouteCache
from tiller.protos.router.v1 import router_pb2


class Router:
    def __init__(self) -> None:
        self.calls = 0

    async def resolve(self, model: str) -> router_pb2.Route:
        self.calls += 1
        if model == "nope":
            raise NotFound(f"The model `{model}` does not exist.", param="model")
        return router_pb2.Route(model=model)


async def test_a_route_is_reused_within_the_ttl() -> None:
    router = Router()
    cache = RouteCache(router.resolve, ttl_seconds=60)
    assert (await cache.get("demo")).model == "demo"
    assert (await cache.get("demo")).model == "demo"
    assert router.calls == 1


async def test_ttl_zero_asks_every_time_and_refusals_are_never_cached() -> None:
    router = Router()
    cache = RouteCache(router.resolve, ttl_seconds=0)
    await cache.get("demo")
    await cache.get("demo")
    assert router.calls == 2
    cached = RouteCache(router.resolve, ttl_seconds=60)
    for _ in range(2):
        with pytest.raises(NotFound):
            await cached.get("nope")
    assert router.calls == 4
