"""The endpoints (replicas of one engine) behind one task queue, as one worker process sees them.

A deployment in models.yaml lists one `endpoint` or several `endpoints`, each with a capacity
(`max_concurrency`), a `weight` and a `drain` flag. Per task queue this worker keeps each
endpoint's attempts in flight and its health, and answers two questions:

- **May the queue's Temporal worker take another task?** (`may_take`, asked by slots.py before
  each poll.) Only while some serving endpoint has a free slot that no task already holds, and
  the queue's own bound (the sum of its endpoints' capacities) is not reached. So a request
  waits in Temporal's persistent priority queue, not on a worker, until an engine can take it;
  and it is taken by whichever worker has a free engine slot first: balancing by real free
  capacity, with no guesswork and no thundering herd.
- **Which endpoint does this attempt go to?** (`acquire`.) One of the deployment's serving
  endpoints with a free slot, drawn at random with a chance of its weight times the share of
  its slots that are free: at low load the weights set the split (a canary at 5 %), and under
  load the least busy endpoint is the likeliest.

Health (health.py) ejects an endpoint that fails and lets it back once its health check passes;
an ejected or draining endpoint has no free slot. A models.yaml reload (`update`) adds,
changes and removes endpoints in place: an attempt keeps the endpoint it holds to its end, so
a drained or removed endpoint's requests finish where they run.

Capacities are per worker process: with two worker processes on a queue an endpoint may see
twice its max_concurrency (docs/models.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

from tiller.contract.requests import Target
from tiller.protos.router.v1 import router_pb2

State = Literal["serving", "ejected", "half-open"]
WINDOW = 20  # the attempts an error rate is measured over
MIN_OUTCOMES = 10  # ... once this many have ended


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    check_interval_seconds: float = 10.0
    eject_after_failures: int = 5
    eject_error_rate: float = 0.5
    probe_interval_seconds: float = 2.0

    @classmethod
    def of(cls, policy: router_pb2.HealthPolicy) -> HealthPolicy:
        default = cls()
        return cls(
            policy.check_interval_seconds
            if policy.ByteSize()
            else default.check_interval_seconds,  # an older router: the defaults
            policy.eject_after_failures or default.eject_after_failures,
            policy.eject_error_rate or default.eject_error_rate,
            policy.probe_interval_seconds or default.probe_interval_seconds,
        )


@dataclass(eq=False)
class Replica:
    """One endpoint of a task queue: where attempts go, how many run there, how it fares."""

    url: str
    capacity: int
    weight: float
    drain: bool
    probe: Target  # what its health check asks (a deployment that lists it)
    policy: HealthPolicy
    in_flight: int = 0
    state: State = "serving"
    failures: int = 0  # consecutive
    outcomes: deque[bool] = field(default_factory=lambda: deque(maxlen=WINDOW))
    ejected_at: float = 0.0
    ejections: int = 0
    attempts: int = 0
    failed: int = 0
    seconds: float = 0.0  # the attempts' summed duration
    listed: bool = True  # still in models.yaml
    shown: str = field(init=False)  # the URL as logs and metrics show it (worked out once)

    def __post_init__(self) -> None:
        self.shown = shown(self.url)

    @property
    def free(self) -> int:
        """Slots a new attempt may take: none while ejected or draining, one while half-open."""
        if self.drain or self.state == "ejected" or not self.listed:
            return 0
        bound = 1 if self.state == "half-open" else self.capacity
        return max(0, bound - self.in_flight)


@dataclass(frozen=True, slots=True)
class Held:
    """An attempt's slot on a replica; `target` is the request's target at that endpoint."""

    replica: Replica
    target: Target
    started: float


class NoEndpoint(Exception):
    """None of the deployment's endpoints is serving (ejected, draining or removed)."""


class QueueReplicas:
    """The endpoints of every deployment on one task queue, and the slots taken on them."""

    def __init__(self, queue: str) -> None:
        self.queue = queue
        self.limit = 0  # the queue's bound: at most this many tasks at once
        self.replicas: dict[tuple[str, str], Replica] = {}
        self._deployments: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        self.permits = 0  # tasks taken or being polled for (slots.py)
        self.bound = 0  # attempts holding a replica's slot
        self.waiting = 0  # attempts waiting for one
        self.ended = 0  # tasks whose attempt ended, their slot not yet given back to Temporal
        self._changed = asyncio.Event()
        self.random = random.Random()  # noqa: S311 (a draw among endpoints, not a secret)

    # --- models.yaml ---------------------------------------------------------------------------
    def update(self, deployments: list[tuple[str, router_pb2.Deployment]]) -> None:
        """The queue's deployments as the router lists them now: (model, deployment) pairs."""
        seen: dict[tuple[str, str], Replica] = {}
        routes: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {}
        limit = 0
        for model, d in deployments:
            limit = max(limit, d.max_concurrency)
            endpoints = list(d.endpoints) or [
                router_pb2.Endpoint(url=d.endpoint, max_concurrency=d.max_concurrency, weight=1)
            ]
            options = json.loads(d.options_json) if d.options_json else {}
            policy = HealthPolicy.of(d.health)
            keys = []
            for e in endpoints:
                key = (d.adapter, e.url)
                keys.append(key)
                if key in seen:
                    continue
                # What its health check asks: the first deployment that lists it.
                probe = Target(
                    d.name, d.adapter, e.url, d.engine_model, d.task_queue, model or d.model,
                    options=options,
                )  # fmt: skip
                capacity, weight = max(1, e.max_concurrency), e.weight or 1.0
                replica = self.replicas.get(key)
                if replica is None:
                    replica = Replica(e.url, capacity, weight, e.drain, probe, policy)
                replica.capacity, replica.weight, replica.drain = capacity, weight, e.drain
                replica.probe, replica.policy, replica.listed = probe, policy, True
                seen[key] = replica
            routes[(d.model or model, d.name)] = tuple(keys)
        for key, gone in self.replicas.items():
            if key not in seen:
                gone.listed = False  # its attempts finish where they run
        self.replicas = seen
        self._deployments = routes
        self.limit = limit
        self.changed()

    def of(self, target: Target) -> list[Replica]:
        """The endpoints of the request's deployment, as this worker knows them."""
        keys = self._deployments.get((target.model, target.deployment), ())
        return [self.replicas[k] for k in keys]

    # --- slots -------------------------------------------------------------------------------
    def may_take(self) -> bool:
        """Whether the queue's worker may poll for one more task (slots.py)."""
        if self.permits - self.ended >= self.limit:
            return False
        if not any(_serving(r) for r in self.replicas.values()):
            # Nothing here can run a task: take them anyway, so that a request with somewhere
            # else to go fails over at once, and one without waits for an endpoint inside its
            # attempt (the queue's bound still holds; the rest wait in Temporal's queue).
            return True
        # Slots held by tasks still to come, or come and not yet on an endpoint (< 0 for a
        # moment after a new worker); an ended attempt's slot counts no more, so the next task
        # is polled for while its completion is still on its way to Temporal.
        unassigned = max(0, self.permits - self.bound - self.ended)
        return unassigned < sum(r.free for r in self.replicas.values())

    @property
    def fixed(self) -> int | None:
        """The queue's bound when a fixed number of slots does what `may_take` would: one
        endpoint, whose capacity is the bound (taking tasks while it is ejected or drained, as
        `may_take` does, and up to the bound while it is half-open, to wait there). None: the
        slots must follow the endpoints."""
        if len(self.replicas) == 1:
            return self.limit
        return None

    def finished(self) -> None:
        """A task's attempt ended (its slot goes back to Temporal next: `slot_released`)."""
        self.ended += 1
        self.changed()

    def slot_released(self, used: bool) -> None:
        """Temporal gave a slot back: one a task used, or one a poll had no task for."""
        self.permits -= 1
        if used and self.ended > 0:
            self.ended -= 1
        self.changed()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def changed(self) -> None:
        """Wake whoever waits for a slot: one freed, an endpoint came back, the file changed."""
        self._changed.set()
        self._changed = asyncio.Event()

    # --- attempts ------------------------------------------------------------------------------
    def pick(self, target: Target) -> Replica | None:
        """A free endpoint of the target's deployment, drawn by weight times free share; None
        when every one is full or not serving."""
        free = [r for r in self.of(target) if r.free > 0]
        if not free:
            return None
        if len(free) == 1:
            return free[0]
        chances = [r.weight * r.free / r.capacity for r in free]
        return self.random.choices(free, weights=chances)[0]

    def serving(self, target: Target) -> bool:
        """Whether any endpoint of the deployment takes attempts (full ones included)."""
        return any(_serving(r) for r in self.of(target))

    def hold(self, replica: Replica, target: Target) -> Held:
        replica.in_flight += 1
        self.bound += 1
        return Held(replica, _at(target, replica.url), time.monotonic())

    def release(self, held: Held) -> float:
        """Give the slot back; the attempt's duration in seconds."""
        held.replica.in_flight -= 1
        self.bound -= 1
        self.changed()
        return time.monotonic() - held.started

    async def acquire(self, target: Target, deadline: float, wait_for_down: bool) -> Held:
        """A slot on one of the deployment's endpoints, waiting for one until `deadline` (the
        event loop's clock). While none is serving it waits only if `wait_for_down` (the last
        place the request can go); else, or at the deadline, NoEndpoint."""
        loop = asyncio.get_running_loop()
        while True:
            replica = self.pick(target)
            if replica is not None:
                return self.hold(replica, target)
            left = deadline - loop.time()
            if left <= 0 or not (wait_for_down or self.serving(target)):
                raise NoEndpoint(target.deployment)
            self.waiting += 1
            try:
                async with asyncio.timeout(left):
                    await self.wait_changed()
            except TimeoutError:
                raise NoEndpoint(target.deployment) from None
            finally:
                self.waiting -= 1


def shown(url: str) -> str:
    """The endpoint as logs and metrics show it: no user or password, query or fragment (where
    a key might hide)."""
    bare = url.split("?", 1)[0].split("#", 1)[0]
    parts = urlsplit(bare if "://" in bare else f"//{bare}")
    if parts.username is None and parts.password is None:
        return bare
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return bare.replace(parts.netloc, f"{host}{port}", 1)


def _serving(replica: Replica) -> bool:
    return replica.listed and not replica.drain and replica.state != "ejected"


def _at(target: Target, url: str) -> Target:
    return target if target.endpoint == url else dataclasses.replace(target, endpoint=url)
