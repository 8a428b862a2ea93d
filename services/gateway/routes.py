"""Routes from the router, cached for a few seconds per model name.

A route changes only when models.yaml does, so asking the router on every request is waste; a
short TTL bounds how long a gateway keeps using a route after a change. Refusals (unknown model)
are not cached: the router answers them, with its own words, every time.

When the router cannot be reached (every replica down or restarting), a route this gateway
resolved in the last `stale_seconds` is used as it was, and a warning says so once per model and
outage: the router is a single point of refusal no longer, at the price of serving a models.yaml
change only once it is back. A model never resolved here still gets the 503.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from tiller.common.errors import ServiceUnavailable, UpstreamTimeout
from tiller.protos.router.v1 import router_pb2

log = logging.getLogger(__name__)
MAX_ROUTES = 10_000  # names are caller input: keep the map bounded


class RouteCache:
    def __init__(
        self,
        resolve: Callable[[str], Awaitable[router_pb2.Route]],
        ttl_seconds: float,
        stale_seconds: float = 0.0,
    ) -> None:
        self.resolve, self.ttl, self.stale = resolve, ttl_seconds, stale_seconds
        # model name -> (when it was resolved, the route)
        self._routes: dict[str, tuple[float, router_pb2.Route]] = {}
        self._warned: set[str] = set()  # models served stale in the present outage

    async def get(self, model: str) -> router_pb2.Route:
        now = time.monotonic()
        cached = self._routes.get(model)
        if cached is not None and cached[0] + self.ttl > now:
            return cached[1]
        try:
            route = await self.resolve(model)
        except (ServiceUnavailable, UpstreamTimeout) as error:
            # The router itself unreachable (not one of its answers, which are other errors).
            if type(error) not in (ServiceUnavailable, UpstreamTimeout):
                raise
            if cached is None or cached[0] + self.stale <= now:
                raise
            if model not in self._warned:
                self._warned.add(model)
                log.warning(
                    "router unreachable: serving its last route",
                    extra={"model": model, "age_seconds": round(now - cached[0], 1)},
                )
            return cached[1]
        self._warned.discard(model)
        if self.ttl > 0 or self.stale > 0:
            if len(self._routes) > MAX_ROUTES:
                self._routes.clear()
            self._routes[model] = (now, route)
        return route
