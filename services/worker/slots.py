"""The slots of a task queue's Temporal worker: a task is taken only while an engine can run it.

Temporal's worker asks its slot supplier for a slot before every poll of the task queue. This
supplier gives one only while the queue's endpoints have a free slot that no task holds yet
(replicas.py `may_take`), and waits otherwise; so a request stays in Temporal's persistent
priority queue until an engine replica is free, and any worker with a free replica takes it.

Temporal calls `release_slot` from its own thread: the release is handed to the event loop.
"""

from __future__ import annotations

import asyncio

from temporalio.worker import (
    CustomSlotSupplier,
    FixedSizeSlotSupplier,
    SlotMarkUsedContext,
    SlotPermit,
    SlotReleaseContext,
    SlotReserveContext,
    WorkerTuner,
)

from tiller.worker.replicas import QueueReplicas


class ReplicaSlots(CustomSlotSupplier):
    def __init__(self, replicas: QueueReplicas) -> None:
        self.replicas = replicas
        self._loop = asyncio.get_running_loop()

    async def reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit:
        while not self.replicas.may_take():
            await self.replicas.wait_changed()
        self.replicas.permits += 1
        return SlotPermit()

    def try_reserve_slot(self, ctx: SlotReserveContext) -> SlotPermit | None:
        return None  # eager tasks come only from workflows on the same queue: none here

    def mark_slot_used(self, ctx: SlotMarkUsedContext) -> None:
        pass

    def release_slot(self, ctx: SlotReleaseContext) -> None:
        if not self._loop.is_closed():
            used = ctx.slot_info is not None
            self._loop.call_soon_threadsafe(self.replicas.slot_released, used)


def tuner(replicas: QueueReplicas) -> WorkerTuner:
    """An activity worker's tuner: its activity slots from the queue's replicas, or a fixed
    number where that is the same (one endpoint: no call into Python per task); it runs no
    workflows, local activities or Nexus operations, which get a token bound."""
    fixed = replicas.fixed
    activity_slots: FixedSizeSlotSupplier | ReplicaSlots = (
        ReplicaSlots(replicas) if fixed is None else FixedSizeSlotSupplier(fixed)
    )
    return WorkerTuner.create_composite(
        workflow_supplier=FixedSizeSlotSupplier(1),
        activity_supplier=activity_slots,
        local_activity_supplier=FixedSizeSlotSupplier(1),
        nexus_supplier=FixedSizeSlotSupplier(1),
    )
