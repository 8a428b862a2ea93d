"""The endpoints of a task queue as a worker sees them (worker/replicas.py, health.py, slots.py):
which endpoint an attempt goes to, when the queue's worker may take a task, ejection and return,
and models.yaml reloads that drain or remove an endpoint under load."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any, cast

import pytest
from temporalio.worker import SlotPermit, SlotReleaseContext

from tiller.contract.requests import Target
from tiller.protos.router.v1 import router_pb2
from tiller.worker.adapters.base import EngineAdapter
from tiller.worker.health import ReplicaHealth
from tiller.worker.replicas import NoEndpoint, QueueReplicas, Replica, shown
from tiller.worker.slots import ReplicaSlots

A, B, C = "http://a:8000/v1", "http://b:8000/v1", "http://c:8000/v1"
TARGET = Target("pool", "vllm", A, "m", "q", "model")


def deployment(*endpoints: tuple[str, int, float, bool], **health: Any) -> router_pb2.Deployment:
    listed = [
        router_pb2.Endpoint(url=u, max_concurrency=c, weight=w, drain=d) for u, c, w, d in endpoints
    ]
    return router_pb2.Deployment(
        name="pool",
        adapter="vllm",
        endpoint=listed[0].url,
        engine_model="m",
        task_queue="q",
        max_concurrency=sum(e.max_concurrency for e in listed),
        model="model",
        endpoints=listed,
        health=router_pb2.HealthPolicy(**health) if health else None,
    )


def adapter(engine: Engine) -> Callable[[str], EngineAdapter]:
    return lambda _: cast(EngineAdapter, engine)


def state(replica: Replica) -> str:
    """Its state, read afresh (mypy would narrow a second read after the first)."""
    return replica.state


def queue(*endpoints: tuple[str, int, float, bool], **health: Any) -> QueueReplicas:
    replicas = QueueReplicas("q")
    replicas.random = random.Random(7)
    replicas.update([("model", deployment(*endpoints, **health))])
    return replicas


class Engine:
    """An adapter whose health check answers what `healthy` says, counting the checks."""

    def __init__(self) -> None:
        self.healthy = False
        self.checks = 0

    async def health(self, target: Target) -> bool:
        self.checks += 1
        return self.healthy


def test_at_low_load_the_weights_set_the_split() -> None:
    replicas = queue((A, 8, 95, False), (B, 8, 5, False))
    picks = Counter(replicas.pick(TARGET).url for _ in range(20_000))  # type: ignore[union-attr]
    assert 0.045 < picks[B] / 20_000 < 0.055


def test_under_load_the_least_busy_endpoint_is_the_likeliest() -> None:
    replicas = queue((A, 8, 1, False), (B, 8, 1, False))
    for _ in range(6):
        replicas.hold(replicas.replicas[("vllm", A)], TARGET)
    picks = Counter(replicas.pick(TARGET).url for _ in range(10_000))  # type: ignore[union-attr]
    assert picks[B] / 10_000 == pytest.approx(0.8, abs=0.02)  # free shares 2/8 against 8/8


def test_a_full_endpoint_takes_nothing_and_the_held_target_names_the_endpoint() -> None:
    replicas = queue((A, 1, 1, False), (B, 2, 1, False))
    held = [replicas.hold(replicas.pick(TARGET), TARGET) for _ in range(3)]  # type: ignore[arg-type]
    assert sorted(h.target.endpoint for h in held) == [A, B, B]
    assert replicas.pick(TARGET) is None
    replicas.release(held[0])
    assert replicas.pick(TARGET) is held[0].replica


def test_the_queue_takes_a_task_only_while_an_endpoint_has_a_free_slot_nobody_holds() -> None:
    replicas = queue((A, 1, 1, False), (B, 1, 1, False))
    assert replicas.may_take()
    replicas.permits = 2  # two pollers hold slots, no task arrived yet
    assert not replicas.may_take()
    replicas.hold(replicas.replicas[("vllm", A)], TARGET)  # a task arrived and went to A
    assert not replicas.may_take()
    replicas.permits = 1  # the other poller gave its slot back
    assert replicas.may_take()  # B is free


async def test_slots_wait_for_a_free_endpoint_and_come_back_when_released() -> None:
    replicas = queue((A, 1, 1, False))
    slots = ReplicaSlots(replicas)
    await slots.reserve_slot(None)  # type: ignore[arg-type]
    waiting = asyncio.ensure_future(slots.reserve_slot(None))  # type: ignore[arg-type]
    await asyncio.sleep(0.05)
    assert not waiting.done()
    slots.release_slot(SlotReleaseContext(slot_info=None, permit=SlotPermit()))
    await asyncio.wait_for(waiting, 1)
    assert replicas.permits == 1


def test_an_ended_attempt_frees_its_slot_before_temporal_hears_of_it() -> None:
    replicas = queue((A, 1, 1, False))
    replicas.permits = 1  # a task came for the one slot
    held = replicas.hold(replicas.replicas[("vllm", A)], TARGET)
    assert not replicas.may_take()
    replicas.release(held)
    assert not replicas.may_take()  # the task still holds its slot: its activity is not done
    replicas.finished()  # the activity returned; its completion is on its way to Temporal
    assert replicas.may_take()  # poll for the next task meanwhile
    replicas.slot_released(used=True)
    assert (replicas.permits, replicas.ended) == (0, 0) and replicas.may_take()


async def test_an_unreachable_endpoint_is_ejected_at_once_and_probed_back_half_open() -> None:
    engine = Engine()
    health = ReplicaHealth(adapter(engine), first_probe=0.01)
    replicas = queue((A, 4, 1, False), (B, 4, 1, False), probe_interval_seconds=0.02)
    a = replicas.replicas[("vllm", A)]
    health.failed(replicas, a, unreachable=True)
    assert state(a) == "ejected" and a.free == 0
    assert {replicas.pick(TARGET).url for _ in range(50)} == {B}  # type: ignore[union-attr]
    await asyncio.sleep(0.1)
    assert state(a) == "ejected" and engine.checks >= 3  # backing off, still failing
    engine.healthy = True
    await asyncio.sleep(0.05)
    assert state(a) == "half-open" and a.free == 1  # one attempt at a time
    held = replicas.hold(a, TARGET)
    assert a.free == 0
    replicas.release(held)
    health.succeeded(replicas, a)
    assert state(a) == "serving" and a.free == 4
    await health.aclose()


async def test_consecutive_failures_or_an_error_rate_eject() -> None:
    engine = Engine()
    engine.healthy = True  # its health check passes: only the attempts' outcomes eject
    health = ReplicaHealth(adapter(engine))
    replicas = queue((A, 4, 1, False), (B, 4, 1, False), eject_after_failures=3)
    a, b = replicas.replicas[("vllm", A)], replicas.replicas[("vllm", B)]
    for _ in range(2):
        health.failed(replicas, a, unreachable=False)
    health.succeeded(replicas, a)
    health.failed(replicas, a, unreachable=False)
    await asyncio.sleep(0.01)  # the check each failure asks for passes
    assert state(a) == "serving" and engine.checks >= 1  # never three in a row
    for _ in range(2):
        health.failed(replicas, a, unreachable=False)
    assert state(a) == "ejected"
    for outcome in [True, False] * 5:  # 50 % of 10, never 3 in a row
        health.succeeded(replicas, b) if outcome else health.failed(replicas, b, unreachable=False)
    assert state(b) == "ejected"
    await health.aclose()


async def test_a_failed_attempt_checks_its_endpoint_at_once() -> None:
    engine = Engine()
    health = ReplicaHealth(adapter(engine), first_probe=10)
    replicas = queue((A, 4, 1, False), (B, 4, 1, False))
    a = replicas.replicas[("vllm", A)]
    health.failed(replicas, a, unreachable=False)  # a cut mid-answer, say: not "unreachable"
    assert state(a) == "serving"
    await asyncio.sleep(0.01)
    assert state(a) == "ejected" and engine.checks == 1  # its health check failed too
    await health.aclose()


async def test_a_failed_health_check_ejects_a_serving_endpoint() -> None:
    engine = Engine()
    engine.healthy = True
    health = ReplicaHealth(adapter(engine), first_probe=10)
    replicas = queue((A, 4, 1, False), check_interval_seconds=0.02)
    health.watch(replicas)
    await asyncio.sleep(0.1)
    assert replicas.replicas[("vllm", A)].state == "serving" and engine.checks >= 2
    engine.healthy = False
    await asyncio.sleep(0.1)
    assert replicas.replicas[("vllm", A)].state == "ejected"
    await health.aclose()


async def test_with_every_endpoint_down_the_queue_takes_tasks_to_fail_over_or_wait() -> None:
    health = ReplicaHealth(adapter(Engine()), first_probe=10)
    replicas = queue((A, 2, 1, False))
    health.failed(replicas, replicas.replicas[("vllm", A)], unreachable=True)
    assert replicas.may_take()  # up to the queue's bound
    replicas.permits = 2
    assert not replicas.may_take()
    loop = asyncio.get_running_loop()
    with pytest.raises(NoEndpoint):  # somewhere else to go: at once
        await replicas.acquire(TARGET, loop.time() + 10, wait_for_down=False)
    started = loop.time()
    with pytest.raises(NoEndpoint):  # nowhere else: it waits, to its deadline
        await replicas.acquire(TARGET, loop.time() + 0.1, wait_for_down=True)
    assert loop.time() - started >= 0.09
    await health.aclose()


async def test_a_waiting_attempt_goes_when_its_endpoint_comes_back() -> None:
    engine = Engine()
    health = ReplicaHealth(adapter(engine), first_probe=0.01)
    replicas = queue((A, 2, 1, False), probe_interval_seconds=0.02)
    health.failed(replicas, replicas.replicas[("vllm", A)], unreachable=True)
    loop = asyncio.get_running_loop()
    waiting = asyncio.ensure_future(replicas.acquire(TARGET, loop.time() + 5, wait_for_down=True))
    await asyncio.sleep(0.05)
    assert not waiting.done() and replicas.waiting == 1
    engine.healthy = True
    held = await asyncio.wait_for(waiting, 1)
    assert held.target.endpoint == A and replicas.waiting == 0
    await health.aclose()


def test_a_drained_endpoint_keeps_its_attempts_and_takes_no_new_one() -> None:
    replicas = queue((A, 2, 1, False), (B, 2, 1, False))
    a = replicas.replicas[("vllm", A)]
    running = replicas.hold(a, TARGET)
    replicas.update([("model", deployment((A, 2, 1, True), (B, 2, 1, False)))])
    assert replicas.replicas[("vllm", A)] is a and a.drain and a.in_flight == 1
    assert {replicas.pick(TARGET).url for _ in range(50)} == {B}  # type: ignore[union-attr]
    replicas.release(running)
    assert a.in_flight == 0


def test_a_removed_endpoint_finishes_its_attempts_outside_the_table() -> None:
    replicas = queue((A, 2, 1, False), (B, 2, 1, False))
    a = replicas.replicas[("vllm", A)]
    running = replicas.hold(a, TARGET)
    replicas.update([("model", deployment((B, 2, 1, False), (C, 4, 1, False)))])
    assert set(replicas.replicas) == {("vllm", B), ("vllm", C)} and replicas.limit == 6
    assert not a.listed and a.free == 0
    assert replicas.bound == 1  # it still holds its slot of the queue
    replicas.release(running)
    assert replicas.bound == 0 and a.in_flight == 0


def test_a_single_endpoint_deployment_from_an_older_router_is_one_replica() -> None:
    replicas = QueueReplicas("q")
    old = router_pb2.Deployment(
        name="pool", adapter="vllm", endpoint=A, task_queue="q", max_concurrency=3, model="model"
    )
    replicas.update([("model", old)])
    (only,) = replicas.replicas.values()
    assert (only.url, only.capacity, only.weight, only.policy.check_interval_seconds) == (
        A, 3, 1.0, 10.0,
    )  # fmt: skip


def test_endpoints_are_shown_without_credentials_or_query() -> None:
    assert shown("http://user:pw@h:8000/v1?key=s3cret#x") == "http://h:8000/v1"
    assert shown("grpc://h:8001") == "grpc://h:8001"
    assert shown("h:8001") == "h:8001"
