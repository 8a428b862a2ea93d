"""Routes from the router, cached for a few seconds per model name.

A route changes only when models.yaml does, so asking the router on every request is waste; a
short TTL bounds how long a gateway keeps using a route after a change. Refusals (unknown model)
are not cached: the router answers them, with its own words, every time.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from tiller.protos.router.v1 import router_pb2


class RouteCache:
    def __init__(
        self, resolve: Callable[[str], Awaitable[router_pb2.Route]], ttl_seconds: float
    ) -> None:
        self.resolve, self.ttl = resolve, ttl_seconds
        self._routes: dict[str, tuple[float, router_pb2.Route]] = {}

    async def get(self, model: str) -> router_pb2.Route:
        now = time.monotonic()
        cached = self._routes.get(model)
        if cached is not None and cached[0] > now:
            return cached[1]
        route = await self.resolve(model)
        if self.ttl > 0:
            if len(self._routes) > 10_000:  # names are caller input: keep the map bounded
                self._routes.clear()
            self._routes[model] = (now + self.ttl, route)
        return route
