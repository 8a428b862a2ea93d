"""Requests waiting for an unreachable engine (worker/outages.py): one probe however many wait,
everyone released when it answers, each bounded by its own time, and a waiter that leaves
leaves the rest waiting. No network: the engine is a stand-in whose health the test sets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp

from tiller.contract.requests import Target
from tiller.worker.adapters.base import (
    AdapterResources,
    Completion,
    Delta,
    EngineAdapter,
    EngineRequest,
)
from tiller.worker.outages import EngineOutages

TARGET = Target("d", "openai", "http://engine/v1", "m", "q")


class StandIn(EngineAdapter):
    """An engine whose health check the test turns on; it counts the probes."""

    def __init__(self) -> None:
        super().__init__(AdapterResources(http=None))  # type: ignore[arg-type]
        self.up = False
        self.probes = 0

    async def health(self, target: Target) -> bool:
        self.probes += 1
        return self.up

    def stream(self, request: EngineRequest) -> AsyncIterator[Delta]:
        raise NotImplementedError

    async def predict(self, request: EngineRequest) -> Completion:
        raise NotImplementedError


def outages() -> EngineOutages:
    return EngineOutages(first_probe=0.01, max_probe=0.02)


async def test_many_waiters_share_one_probe_and_all_go_when_it_answers() -> None:
    engine, down = StandIn(), outages()
    waiting = [asyncio.create_task(down.wait(TARGET, engine, 5)) for _ in range(50)]
    await asyncio.sleep(0.2)
    assert down.down(TARGET) and not any(w.done() for w in waiting)
    assert engine.probes <= 0.2 / 0.02 + 2  # one probe at a time, not one per waiter
    engine.up = True
    assert await asyncio.gather(*waiting) == [True] * 50
    assert not down.down(TARGET)


async def test_a_waiter_whose_time_passes_is_told_so_and_the_probe_stops() -> None:
    engine, down = StandIn(), outages()
    assert await down.wait(TARGET, engine, 0.1) is False
    assert not down.down(TARGET)  # nobody waits: no probing
    probes = engine.probes
    await asyncio.sleep(0.1)
    assert engine.probes == probes
    assert await down.wait(TARGET, engine, 0) is False  # no time left: no wait at all


async def test_a_waiter_that_leaves_leaves_the_others_waiting() -> None:
    engine, down = StandIn(), outages()
    leaving = asyncio.create_task(down.wait(TARGET, engine, 5))
    staying = asyncio.create_task(down.wait(TARGET, engine, 5))
    await asyncio.sleep(0.05)
    leaving.cancel()
    await asyncio.sleep(0.05)
    assert down.down(TARGET) and not staying.done()
    engine.up = True
    assert await staying is True


async def test_a_probe_that_raises_means_not_yet() -> None:
    class Flaky(StandIn):
        async def health(self, target: Target) -> bool:
            self.probes += 1
            if self.probes < 3:
                raise aiohttp.ClientError("probe failed")
            return True

    assert await outages().wait(TARGET, Flaky(), 5) is True


async def test_closing_stops_the_probes() -> None:
    engine, down = StandIn(), outages()
    waiting = asyncio.create_task(down.wait(TARGET, engine, 5))
    await asyncio.sleep(0.05)
    await down.aclose()
    waiting.cancel()
    probes = engine.probes
    await asyncio.sleep(0.05)
    assert engine.probes == probes
