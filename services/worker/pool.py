"""The Temporal workers of one worker process, one per task queue, kept in line with models.yaml.

At start-up and then every TILLER_WORKER_RELOAD_SECONDS the process asks the router for the
deployments; when the routing table's version changed, it starts a Temporal worker for each new
task queue, updates the endpoints of the queues it polls in place (replicas.py: capacities,
weights, drained and removed endpoints), and retires (graceful shutdown: running attempts get
the grace period, then Temporal moves them) the worker of a queue that is gone. A queue of one
endpoint has a fixed number of slots (slots.py); when it gains endpoints, loses them down to
one, or its one endpoint's capacity changes, a worker with the right slots takes over and the
old one finishes what it runs (for a moment both poll).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from temporalio.worker import Worker

from tiller.protos.router.v1 import router_pb2
from tiller.worker.health import ReplicaHealth
from tiller.worker.replicas import QueueReplicas

log = logging.getLogger(__name__)

# A task queue's deployments as the router lists them: (model, deployment) pairs.
QueueDeployments = dict[str, list[tuple[str, router_pb2.Deployment]]]


class WorkerPool:
    def __init__(
        self, make: Callable[[QueueReplicas], Worker], health: ReplicaHealth | None = None
    ) -> None:
        self._make = make
        self.health = health
        self.queues: dict[str, QueueReplicas] = {}
        self._running: dict[str, Worker] = {}
        self._slots: dict[str, int | None] = {}  # each queue's fixed slots, or None
        self._fixed: list[Worker] = []  # for the pool's whole life (the workflows')
        self._retiring: set[asyncio.Task[None]] = set()
        self.broken = asyncio.Event()  # a worker stopped on its own: the process must stop
        self.failure: BaseException | None = None

    @property
    def limits(self) -> dict[str, int]:
        return {queue: replicas.limit for queue, replicas in self.queues.items()}

    def add(self, worker: Worker) -> None:
        """Run a worker for the life of the pool (the failover workflow's)."""
        self._fixed.append(worker)
        self._watch(worker)

    def apply(self, queues: QueueDeployments) -> None:
        """Poll exactly these activity task queues, each over its deployments' endpoints."""
        for queue, deployments in sorted(queues.items()):
            replicas = self.queues.get(queue)
            if replicas is not None:
                replicas.update(deployments)
                if replicas.fixed == self._slots[queue]:
                    continue
                # From one endpoint to several or back, or a new bound for one: a worker with
                # the right slots takes over, and the old one finishes what it runs.
                worker = self._make(replicas)
                self._retire(self._running[queue])
            else:
                replicas = QueueReplicas(queue)
                replicas.update(deployments)
                worker = self._make(replicas)  # if this fails, nothing of the queue is kept
                self.queues[queue] = replicas
                if self.health is not None:
                    self.health.watch(replicas)
            self._running[queue] = worker
            self._slots[queue] = replicas.fixed
            self._watch(worker)
            log.info(
                "polling task queue",
                extra={
                    "task_queue": queue,
                    "max_concurrency": replicas.limit,
                    "endpoints": [r.shown for r in replicas.replicas.values()],
                },
            )
        for queue in [q for q in self._running if q not in queues]:
            self._retire(self._running.pop(queue))
            self._slots.pop(queue, None)
            gone = self.queues.pop(queue)
            if self.health is not None:
                self.health.forget(gone)
            log.info("stopped polling task queue", extra={"task_queue": queue})

    def _watch(self, worker: Worker) -> None:
        run = asyncio.get_running_loop().create_task(worker.run())

        def ended(task: asyncio.Task[None]) -> None:
            live = [*self._running.values(), *self._fixed]
            retired = all(w is not worker for w in live)
            if not retired and (task.cancelled() or task.exception() is not None):
                self.failure = None if task.cancelled() else task.exception()
                self.broken.set()

        run.add_done_callback(ended)

    def _retire(self, worker: Worker) -> None:
        task = asyncio.get_running_loop().create_task(worker.shutdown())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def shutdown(self) -> None:
        workers = [*self._running.values(), *self._fixed]
        self._running.clear()
        self._fixed.clear()
        await asyncio.gather(*(w.shutdown() for w in workers), *self._retiring)
