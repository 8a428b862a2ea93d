"""The Temporal workers of one worker process, one per task queue, kept in line with models.yaml.

At start-up and then every TILLER_WORKER_RELOAD_SECONDS the process asks the router for the
deployments; when the routing table's version changed, it starts a Temporal worker for each new
task queue, and retires (graceful shutdown: running attempts get the grace period, then Temporal
moves them) the worker of a queue that is gone. A queue whose max_concurrency changed gets a new
worker with the new bound and its old one is retired, so for a moment both poll it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from temporalio.worker import Worker

log = logging.getLogger(__name__)


class WorkerPool:
    def __init__(self, make: Callable[[str, int], Worker]) -> None:
        self._make = make
        self._running: dict[str, tuple[int, Worker]] = {}
        self._fixed: list[Worker] = []  # for the pool's whole life (the failover workflow's)
        self._retiring: set[asyncio.Task[None]] = set()
        self.broken = asyncio.Event()  # a worker stopped on its own: the process must stop
        self.failure: BaseException | None = None

    @property
    def limits(self) -> dict[str, int]:
        return {queue: limit for queue, (limit, _) in self._running.items()}

    def add(self, worker: Worker) -> None:
        """Run a worker for the life of the pool (the failover workflow's)."""
        self._fixed.append(worker)
        self._watch(worker)

    def apply(self, limits: dict[str, int]) -> None:
        """Poll exactly these activity task queues, each with this max concurrency."""
        for queue, limit in sorted(limits.items()):
            current = self._running.get(queue)
            if current is not None and current[0] == limit:
                continue
            worker = self._make(queue, limit)  # first: if this fails, the old one keeps polling
            if current is not None:
                self._retire(current[1])
            self._running[queue] = (limit, worker)
            self._watch(worker)
            log.info("polling task queue", extra={"task_queue": queue, "max_concurrency": limit})
        for queue in [q for q in self._running if q not in limits]:
            self._retire(self._running.pop(queue)[1])
            log.info("stopped polling task queue", extra={"task_queue": queue})

    def _watch(self, worker: Worker) -> None:
        run = asyncio.get_running_loop().create_task(worker.run())

        def ended(task: asyncio.Task[None]) -> None:
            live = [w for _, w in self._running.values()] + self._fixed
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
        workers = [w for _, w in self._running.values()] + self._fixed
        self._running.clear()
        self._fixed.clear()
        await asyncio.gather(*(w.shutdown() for w in workers), *self._retiring)
