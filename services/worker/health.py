"""Endpoint health, as one worker process sees it: a circuit breaker per endpoint.

- **Passive**: each attempt's outcome counts. An endpoint that cannot be reached (nothing
  answered at its address) is ejected at once; one that fails `eject_after_failures` attempts in
  a row, or `eject_error_rate` of its last 20 (once 10 have ended), is ejected too. Only the
  engine's failures count (unavailable, broken answers, failing mid-stream), never a caller's
  bad request or a cancellation.
- **Ejected**: it takes no attempt (replicas.py gives it no free slot). Its health check (the
  adapter's `health()`) runs after 0.25 s, then backing off to `probe_interval_seconds`; the
  first that passes makes it **half-open**: one attempt at a time, until one succeeds (serving
  again) or fails (ejected again). So a dead replica costs the attempts that were running on it
  and at most one more per probe that passed, not failed attempts on every request.
- **Active**: every `check_interval_seconds` the health check of each serving endpoint runs,
  and once at once after any failed attempt; one that fails ejects it.

While every endpoint of a deployment is ejected its task queue's worker takes no task, so
requests wait in Temporal's queue (bounded by the model's queue timeout) and run as soon as an
endpoint is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from tiller.worker.adapters.base import EngineAdapter
from tiller.worker.replicas import MIN_OUTCOMES, QueueReplicas, Replica

log = logging.getLogger(__name__)

FIRST_PROBE_SECONDS = 0.25


class ReplicaHealth:
    """Ejects failing endpoints, probes ejected ones and checks serving ones."""

    def __init__(
        self, adapter_of: Callable[[str], EngineAdapter], first_probe: float = FIRST_PROBE_SECONDS
    ) -> None:
        self._adapter_of = adapter_of
        self.first_probe = first_probe
        self._probes: dict[int, asyncio.Task[None]] = {}
        self._checks: dict[str, asyncio.Task[None]] = {}

    # --- passive -----------------------------------------------------------------------------
    def succeeded(self, queue: QueueReplicas, replica: Replica) -> None:
        replica.failures = 0
        replica.outcomes.append(True)
        if replica.state == "half-open":
            replica.state = "serving"
            log.warning("endpoint serving again", extra=_where(queue, replica))
            queue.changed()

    def failed(self, queue: QueueReplicas, replica: Replica, *, unreachable: bool) -> None:
        replica.failures += 1
        replica.failed += 1
        replica.outcomes.append(False)
        if replica.state == "ejected":
            return
        policy = replica.policy
        ended = len(replica.outcomes)
        rate = replica.outcomes.count(False) / ended if ended else 0.0
        if unreachable:
            self.eject(queue, replica, "unreachable")
        elif replica.state == "half-open":
            self.eject(queue, replica, "failed while half-open")
        elif replica.failures >= policy.eject_after_failures:
            self.eject(queue, replica, f"{replica.failures} failed attempts in a row")
        elif ended >= MIN_OUTCOMES and rate >= policy.eject_error_rate:
            self.eject(queue, replica, f"{rate:.0%} of its last {ended} attempts failed")
        elif id(replica) not in self._probes:
            # A failure may be the engine dying under its attempts (a connection cut mid-answer
            # is no "unreachable"): check it now, not at the next interval or the Nth failure.
            self._probes[id(replica)] = asyncio.get_running_loop().create_task(
                self._check_now(queue, replica)
            )

    def eject(self, queue: QueueReplicas, replica: Replica, reason: str) -> None:
        if replica.state == "ejected":
            return
        replica.state = "ejected"
        replica.ejected_at = time.monotonic()
        replica.ejections += 1
        replica.failures = 0
        replica.outcomes.clear()
        log.warning("endpoint ejected", extra={**_where(queue, replica), "reason": reason})
        queue.changed()
        old = self._probes.pop(id(replica), None)
        if old is not None:
            old.cancel()
        self._probes[id(replica)] = asyncio.get_running_loop().create_task(
            self._probe(queue, replica)
        )

    async def _probe(self, queue: QueueReplicas, replica: Replica) -> None:
        delay = self.first_probe
        try:
            while replica.state == "ejected":
                await asyncio.sleep(delay)
                if not replica.listed:
                    return  # gone from models.yaml
                if await self._passes(replica):
                    replica.state = "half-open"
                    down = time.monotonic() - replica.ejected_at
                    log.warning(
                        "endpoint passed its health check; half-open",
                        extra={**_where(queue, replica), "down_seconds": round(down, 2)},
                    )
                    queue.changed()
                    return
                delay = min(delay * 2, replica.policy.probe_interval_seconds)
        finally:
            if self._probes.get(id(replica)) is asyncio.current_task():
                del self._probes[id(replica)]

    async def _check_now(self, queue: QueueReplicas, replica: Replica) -> None:
        try:
            passed = await self._passes(replica)
        finally:
            if self._probes.get(id(replica)) is asyncio.current_task():
                del self._probes[id(replica)]
        if not passed and replica.state == "serving":
            self.eject(queue, replica, "failed an attempt, then its health check")

    async def _passes(self, replica: Replica) -> bool:
        with contextlib.suppress(Exception):  # a check that fails says "not healthy"
            return bool(await self._adapter_of(replica.probe.adapter).health(replica.probe))
        return False

    # --- active ------------------------------------------------------------------------------
    def watch(self, queue: QueueReplicas) -> None:
        """Check the queue's serving endpoints on their interval, until `forget`."""
        if queue.queue not in self._checks:
            task = asyncio.get_running_loop().create_task(self._check(queue))
            self._checks[queue.queue] = task

    def forget(self, queue: QueueReplicas) -> None:
        task = self._checks.pop(queue.queue, None)
        if task is not None:
            task.cancel()

    async def _check(self, queue: QueueReplicas) -> None:
        checked: dict[int, float] = {}
        while True:
            now = time.monotonic()
            due = [
                r
                for r in queue.replicas.values()
                if r.state == "serving"
                and r.policy.check_interval_seconds > 0
                and now - checked.setdefault(id(r), now) >= r.policy.check_interval_seconds
            ]
            for replica in due:
                checked[id(replica)] = now
            results = await asyncio.gather(*(self._passes(r) for r in due))
            for replica, passed in zip(due, results, strict=True):
                if not passed and replica.state == "serving":
                    self.eject(queue, replica, "its health check failed")
            intervals = [
                r.policy.check_interval_seconds
                for r in queue.replicas.values()
                if r.policy.check_interval_seconds > 0
            ]
            await asyncio.sleep(min([1.0, *intervals]))

    async def aclose(self) -> None:
        tasks = [*self._probes.values(), *self._checks.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._probes.clear()
        self._checks.clear()


def _where(queue: QueueReplicas, replica: Replica) -> dict[str, str]:
    return {"task_queue": queue.queue, "endpoint": replica.shown}
