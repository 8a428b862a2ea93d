"""An accepted request on this gateway: who answers it now, its answer's events, and its one
settlement.

A request has one owner at a time, and its `Stage` says which: the handler that began it
(ANSWERING), its SSE response (STREAMING), a background watcher (WATCHED), another gateway
(HANDED_OVER), or nobody any more (SETTLED). The owner hands it on with `hand_to`; a block of code
that owns it says so with `owned`, which gives the request up (stops its run, releases its lease,
charges what was sent) if the block is left with the request still in its hands. Every change of
stage goes through `_become`, the one place that holds or drops the request's concurrency lease
and counts it in flight.
"""

from __future__ import annotations

import contextlib
import enum
import math
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from redis.exceptions import RedisError
from temporalio.service import RPCError

from tiller.common.errors import AnswerUnreadable, ServiceUnavailable, TillerError
from tiller.contract import answer_stream
from tiller.contract.events import Delta, Done, Event, Failed, cancel_channel
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway import executions, metrics
from tiller.gateway.executions import Execution
from tiller.gateway.restoring import AnswerRestorer
from tiller.gateway.shapes import duration
from tiller.protos.quota.v1 import quota_pb2

if TYPE_CHECKING:
    from tiller.gateway.inference import Inference


class Stage(enum.Enum):
    ANSWERING = "answering"  # the handler that began it answers it here
    STREAMING = "streaming"  # its SSE response answers it here
    WATCHED = "watched"  # a background request: its watcher here settles it
    READING = "reading"  # taken up by id to read or stop: its owner is elsewhere
    HANDED_OVER = "handed over"  # recorded for another gateway to adopt
    SETTLED = "settled"  # its usage recorded, or its lease released: over


# This gateway holds the request's concurrency lease (renewing it) and counts it in flight.
HOLDING = frozenset({Stage.ANSWERING, Stage.STREAMING, Stage.WATCHED})
# Who may take it from whom.
_HANDS = {
    Stage.ANSWERING: {Stage.STREAMING, Stage.WATCHED, Stage.HANDED_OVER},
    Stage.STREAMING: {Stage.HANDED_OVER},
    Stage.WATCHED: {Stage.HANDED_OVER},
}


class Observer(Protocol):
    """Who wants to hear how a request goes (the edge's request metrics)."""

    def routed(self, model: str) -> None: ...
    def admitted(self, key_id: str, team: str) -> None: ...
    def token(self) -> None: ...


@dataclass(frozen=True)
class Accepted:
    """What the gateway knows of an accepted request: enough to answer it, settle it, or take
    it up again elsewhere."""

    request_id: str
    model: str  # canonical
    key_id: str
    events_key: str  # the Redis stream its answer comes on
    created: int
    include_usage: bool = False  # the caller asked for a usage chunk (a hand-over keeps it)
    # How long it may wait for a worker; unknown (a request taken up again): the usual checks.
    queue_timeout: float = math.inf
    # What a caller who leaves mid-answer is charged for its prompt (with what Tiller added to
    # it), with the tokens it was sent: an estimate (reservations.py), as the engine's count
    # comes only with the answer's end; not the bound that was reserved, which errs high.
    prompt_estimate: int = 0
    # Its whole answer is only in the stream's done event (vectors, the engine's own choices):
    # Temporal's copy of the result is text only.
    only_in_stream: bool = False
    legacy: bool = False  # a legacy completion: its chunks are text_completion ones


class Call:
    """An accepted, started request (or one taken up again by id)."""

    def __init__(
        self,
        inference: Inference,
        accepted: Accepted,
        execution: Execution,
        stage: Stage,
        admission: quota_pb2.Admission | None = None,
        restore: dict[str, str] | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.inference = inference
        self.accepted = accepted
        self.execution = execution
        self.admission = admission
        # mask+restore: placeholders and the caller's values, to put back in the answer.
        self.restorer = AnswerRestorer(restore) if restore else None
        self.observer = observer
        self.stage = Stage.SETTLED  # until _become: nothing held yet
        # Recorded in Redis while this gateway answers it, for another to take up if this one
        # dies (background.py); its record is deleted when it is answered here to its end.
        self.tracked = False
        self.sent_tokens = 0
        # What a pipeline's steps spent before its answer failed (its error event says).
        self.spent = Usage()
        self._become(stage)

    @property
    def request_id(self) -> str:
        return self.accepted.request_id

    @property
    def model(self) -> str:
        return self.accepted.model

    # --- its life ---------------------------------------------------------------------------

    def _become(self, stage: Stage) -> None:
        held, holding = self.stage in HOLDING, stage in HOLDING
        self.stage = stage
        if holding and not held:
            soon = stage is Stage.WATCHED  # taken over: its lease may be close to lapsing
            self.inference.leases.hold(self.request_id, self.accepted.key_id, soon=soon)
            metrics.IN_FLIGHT.labels(self.model).inc()
        elif held and not holding:
            self.inference.leases.drop(self.request_id)
            metrics.IN_FLIGHT.labels(self.model).dec()

    def hand_to(self, stage: Stage) -> None:
        """Pass the request on: to its SSE response (STREAMING), to a background watcher
        (WATCHED), or to another gateway (HANDED_OVER, once recorded for adoption)."""
        if stage not in _HANDS.get(self.stage, ()):
            raise RuntimeError(f"a {self.stage.value} request cannot be handed to {stage.value}")
        self._become(stage)

    @contextlib.contextmanager
    def owned(self) -> Iterator[Call]:
        """A block that owns the request in its present stage: leaving it, however, with the
        request neither ended nor handed on gives it up (`abandon`). An error raised in it
        names the request (x-request-id)."""
        stage = self.stage
        try:
            yield self
        except TillerError as error:
            error.request_id = error.request_id or self.request_id
            raise
        finally:
            if self.stage is stage:
                self.abandon()

    def complete(self, usage: Usage) -> None:
        """The answer was delivered: record its usage and release the lease. Only its
        answerer settles it (a watched request's watcher does so with `end`)."""
        if self.stage in (Stage.ANSWERING, Stage.STREAMING):
            self._settle(self.end(usage))

    def abandon(self) -> None:
        """The caller is gone or the request failed: stop what still runs, and settle it with
        what was sent. A no-op unless its answerer holds it here."""
        if self.stage not in (Stage.ANSWERING, Stage.STREAMING):
            return
        self.inference.spawn(self.stop())
        self._settle(self.end(self.unfinished_usage()))

    def end(self, usage: Usage | None) -> quota_pb2.Settlement | None:
        """Settle it (SETTLED): the settlement for quota, with usage if it was answered; None
        if it is not this gateway's to settle."""
        if self.stage not in HOLDING:
            return None
        if self.tracked and self.stage is not Stage.WATCHED:
            self.inference.background.untrack(self.request_id)
        self._become(Stage.SETTLED)
        if usage is None:
            return quota_pb2.Settlement(key_id=self.accepted.key_id, request_id=self.request_id)
        metrics.TOKENS.labels(self.model, "prompt").inc(usage.prompt_tokens)
        metrics.TOKENS.labels(self.model, "completion").inc(usage.completion_tokens)
        return quota_pb2.Settlement(
            key_id=self.accepted.key_id,
            request_id=self.request_id,
            model=self.model,
            completed=True,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    def _settle(self, settlement: quota_pb2.Settlement | None) -> None:
        if settlement is not None:
            self.inference.settler.settle(settlement)

    def unfinished_usage(self) -> Usage | None:
        """What an answer that did not finish is charged: the prompt's estimate and the tokens
        the caller was sent, plus what a pipeline's earlier steps spent; None if nothing."""
        sent = (
            Usage(self.accepted.prompt_estimate, self.sent_tokens) if self.sent_tokens else Usage()
        )
        usage = sent + self.spent
        return usage if usage.total_tokens else None

    async def stop(self) -> None:
        """Stop the request's run: the worker stops its engine now, Temporal ends the run."""
        # First the fast path: the worker running it stops the engine at once.
        channel = cancel_channel(self.inference.settings.key_prefix)
        with contextlib.suppress(RedisError):
            await self.inference.up.redis.publish(channel, self.request_id)
        await self.execution.cancel()

    # --- its answer -------------------------------------------------------------------------

    async def answer(
        self, after: str = "0", caller: bool = True, merge: bool = True
    ) -> AsyncGenerator[Event, None]:
        """The answer's events in order, ending with its terminal event.

        When nothing arrives for a while, Temporal is asked whether the request still runs: a
        request that ended without publishing (timed out, terminated, its worker died on the last
        attempt) fails instead of hanging. `after` resumes after an event id (Last-Event-ID).
        `caller`: a client waits on it (a hand-over tells it where to go), not a watcher.
        `merge`: deltas that arrived together come as one; without, each stream entry comes
        as it was written (the same events however the answer is read).
        """
        idle = self.inference.settings.idle_check_seconds
        # Before anything arrives, check no later than the queue timeout: a request no worker
        # picked up is answered then, not at the next idle check.
        wait = min(idle, self.accepted.queue_timeout + 0.25) if after == "0" else idle
        # Who counts what the caller is sent (and errors): its answerer, or a watched request's
        # watcher; not a client that also streams a request the watcher answers for.
        counts = not caller or self.stage is not Stage.WATCHED
        hub = self.inference.hub
        sub = hub.subscribe(self.accepted.events_key, after)
        if caller:
            self.inference.answering[sub] = self
        reread = False
        try:
            while True:
                try:
                    batch = await sub.next(wait)
                    wait = idle
                    if reread:  # the hub may still hand over what a re-read returned
                        batch = [e for e in batch if answer_stream.newer(e.id, after)]
                    if not batch:
                        batch = await self._closed_without_events(after)
                        reread = reread or bool(batch)
                except RedisError:
                    raise AnswerUnreadable() from None
                batch = answer_stream.coalesce(batch) if merge else answer_stream.claimless(batch)
                for event in self.restorer.restore(batch) if self.restorer else batch:
                    after = event.id
                    if counts:
                        self._saw(event)
                    yield event
                    if event.terminal:
                        return
        finally:
            self.inference.answering.pop(sub, None)
            hub.unsubscribe(sub)

    def _saw(self, event: Event) -> None:
        if isinstance(event, Delta):  # what the caller is handed, it is charged
            self.sent_tokens += event.tokens
            if self.observer is not None:
                self.observer.token()
        elif isinstance(event, Failed):
            self.spent = event.spent
            if self.stage in HOLDING:  # counted once, by the gateway that answers for it
                metrics.ANSWER_ERRORS.labels(self.model, event.error.reason).inc()

    async def result(self, caller: bool = True) -> InferenceResult:
        async for event in self.answer(caller=caller):
            if isinstance(event, Done):
                return event.result
            if isinstance(event, Failed):
                raise event.exception()
        raise ServiceUnavailable("The answer ended without a result.")  # pragma: no cover

    async def _closed_without_events(self, after: str) -> list[Event]:
        unknown: TillerError | None = None
        try:
            if await self.execution.running():
                return []
        except RPCError as error:
            unknown = executions.unreadable(error)
            if isinstance(unknown, AnswerUnreadable):
                return []  # the orchestrator is briefly unreachable: keep waiting on Redis
        # The run ended (or Temporal no longer knows it): read once more, as its last event may
        # have just landed; then ask Temporal how it ended.
        key = self.accepted.events_key
        try:
            late = await answer_stream.read(
                self.inference.up.redis, key, after, 1, sealer=self.inference.up.sealer
            )
        except RedisError:
            # Redis away: Temporal's copy of the result answers (the rest of a streamed text
            # is sent from it); the vectors or the engine's choices are in Redis only.
            if self.accepted.only_in_stream and unknown is None:
                return []
            late = []
        if late:
            return late
        if unknown is not None:
            raise unknown
        if self.accepted.only_in_stream:
            # Temporal's copy of the result lacks the vectors or the engine's choices (they
            # would overflow its payloads): better no answer than a text-only one.
            raise ServiceUnavailable("The answer could not be read; try again.")
        return [Done(await self.execution.result(), after)]

    def headers(self) -> dict[str, str]:
        """x-request-id, and OpenAI's x-ratelimit-* for the tightest limits that apply."""
        headers = {"x-request-id": self.request_id}
        if self.admission is None:
            return headers
        for kind, limit in (
            ("requests", self.admission.requests),
            ("tokens", self.admission.tokens),
        ):
            if limit.limit:
                headers[f"x-ratelimit-limit-{kind}"] = str(limit.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(limit.remaining)
                headers[f"x-ratelimit-reset-{kind}"] = duration(limit.reset_seconds)
        return headers
