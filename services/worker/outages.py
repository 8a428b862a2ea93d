"""Engines that cannot be reached, as one worker process sees them.

A request whose engine is unreachable (nothing answered at its address) and that has nowhere else
to go (the last deployment of its plan, fallbacks included) waits here for the engine instead of
spending its attempts in the seconds a restart takes. One outage per engine address: the first
request to find it down opens it, and a single probe (the adapter's health check, with backoff)
runs while anyone waits, so a hundred waiting requests cost the engine one probe, not a hundred
connects. When the probe passes, every waiting request goes at once; one that finds the engine
down again opens the next outage.

Waiting holds the request's worker slot (max_concurrency): while the engine is down there is no
use in taking more work, so requests behind it wait in Temporal's persistent queue, in priority
order, where their own queue timeout still applies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from tiller.contract.requests import Target
from tiller.worker import metrics
from tiller.worker.adapters.base import EngineAdapter

log = logging.getLogger(__name__)

FIRST_PROBE_SECONDS = 0.25
MAX_PROBE_SECONDS = 2.0


@dataclass
class _Outage:
    deployment: str
    since: float = field(default_factory=time.monotonic)
    back: asyncio.Event = field(default_factory=asyncio.Event)
    waiters: int = 0
    probe: asyncio.Task[None] | None = None


class EngineOutages:
    """The engines this worker found unreachable, and the requests waiting for them."""

    def __init__(
        self, first_probe: float = FIRST_PROBE_SECONDS, max_probe: float = MAX_PROBE_SECONDS
    ) -> None:
        self.first_probe = first_probe
        self.max_probe = max_probe
        self._open: dict[tuple[str, str], _Outage] = {}

    def down(self, target: Target) -> bool:
        """Whether a request here is already waiting for this engine."""
        return _key(target) in self._open

    async def wait(self, target: Target, adapter: EngineAdapter, seconds: float) -> bool:
        """Wait until the engine answers its health check (True) or `seconds` pass (False).
        Cancelling the wait (the client left, Temporal cancelled) leaves it to the others."""
        if seconds <= 0:
            return False
        key = _key(target)
        outage = self._open.get(key)
        if outage is None:
            outage = self._open[key] = _Outage(target.deployment)
            outage.probe = asyncio.create_task(self._probe(key, outage, target, adapter))
            log.warning("engine unreachable; requests wait for it", extra=_where(target))
        outage.waiters += 1
        metrics.WAITING.labels(target.deployment).inc()
        try:
            async with asyncio.timeout(seconds):
                await outage.back.wait()
            return True
        except TimeoutError:
            return False
        finally:
            metrics.WAITING.labels(target.deployment).dec()
            outage.waiters -= 1
            if outage.waiters == 0 and not outage.back.is_set():
                self._close(key, outage)  # nobody waits: stop probing

    def _close(self, key: tuple[str, str], outage: _Outage) -> None:
        if self._open.get(key) is outage:
            del self._open[key]
        if outage.probe is not None and outage.probe is not asyncio.current_task():
            outage.probe.cancel()

    async def _probe(
        self, key: tuple[str, str], outage: _Outage, target: Target, adapter: EngineAdapter
    ) -> None:
        delay = self.first_probe
        while True:
            await asyncio.sleep(delay)
            with contextlib.suppress(Exception):  # a probe that fails says "not yet"
                if await adapter.health(target):
                    break
            delay = min(delay * 2, self.max_probe)
        down_for = time.monotonic() - outage.since
        log.warning(
            "engine back; waiting requests go on",
            extra={**_where(target), "down_seconds": round(down_for, 2)},
        )
        outage.back.set()
        self._close(key, outage)

    async def aclose(self) -> None:
        probes = [o.probe for o in self._open.values() if o.probe is not None]
        for probe in probes:
            probe.cancel()
        await asyncio.gather(*probes, return_exceptions=True)
        self._open.clear()


def _key(target: Target) -> tuple[str, str]:
    return target.adapter, target.endpoint


def _where(target: Target) -> dict[str, str]:
    return {"deployment": target.deployment, "endpoint": target.endpoint}
