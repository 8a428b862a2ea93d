"""The gateway's route cache: reuse within the TTL, never cache a refusal."""

from __future__ import annotations

import pytest

from tiller.common.errors import NotFound, ServiceUnavailable
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


class Outage(Router):
    """A router that answers until it is down, then cannot be reached."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    async def resolve(self, model: str) -> router_pb2.Route:
        if self.down:
            raise ServiceUnavailable("An internal service is unavailable; try again shortly.")
        return await super().resolve(model)


async def test_an_unreachable_router_is_answered_from_the_last_route_while_it_is_fresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Outage()
    cache = RouteCache(router.resolve, ttl_seconds=0, stale_seconds=60)
    assert (await cache.get("demo")).model == "demo"
    router.down = True
    for _ in range(3):
        assert (await cache.get("demo")).model == "demo"
    assert [r.message for r in caplog.records].count(
        "router unreachable: serving its last route"
    ) == 1
    with pytest.raises(ServiceUnavailable):  # never resolved here: nothing to fall back on
        await cache.get("other")
    # The router's own refusals are never replaced by an old route.
    router.down = False
    with pytest.raises(NotFound):
        await cache.get("nope")


async def test_a_route_older_than_the_stale_bound_is_not_used() -> None:
    router = Outage()
    cache = RouteCache(router.resolve, ttl_seconds=0, stale_seconds=0)
    await cache.get("demo")
    router.down = True
    with pytest.raises(ServiceUnavailable):
        await cache.get("demo")
