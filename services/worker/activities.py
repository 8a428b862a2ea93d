"""The inference activity: one attempt against one engine, published to Redis as it streams.

It is a standalone Temporal activity (or one step of the failover workflow): Temporal queues it,
retries it and times it out. The attempt that ends the request (an error no retry can fix, or the
last attempt on the last deployment) publishes the error to the request's event stream itself,
so the waiting client hears of it at once.

An attempt after a failure first claims the stream (contract/answer_stream.py) and reads what was
delivered: a finished answer is returned as is; a partial one is continued by an engine that can
(the deployment's `resume`), so the client's text stays whole and unrepeated, and otherwise ends
with a clear `engine_failed_mid_stream` error.

Each attempt goes to one endpoint of its deployment (replicas.py: the least busy healthy one
with a free slot), and its outcome feeds that endpoint's health (health.py). An endpoint that
cannot be reached is ejected and the attempt goes to another at once: nothing reached the
engine, so sending it elsewhere repeats nothing. With no endpoint serving, a request with
somewhere else to go fails over at once; on the last deployment of its plan it waits for an
endpoint to come back, up to the model's queue timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Coroutine
from typing import Any

from opentelemetry.trace import SpanKind
from redis.asyncio import Redis
from redis.exceptions import RedisError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from tiller.common import logs, tracing
from tiller.common.errors import (
    Cancelled,
    EngineError,
    EngineFailedMidStream,
    EngineRefusedCredentials,
    EngineStayedDown,
    EngineUnavailable,
    EngineUnreachable,
    InternalError,
    InvalidRequest,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.sealing import Sealer
from tiller.contract.answer_stream import FENCE_STRIDE, Delivered, EventWriter, Superseded
from tiller.contract.engines import KINDS
from tiller.contract.names import GENERATE_ACTIVITY
from tiller.contract.requests import Chat, Embedding, InferenceInput, Target
from tiller.contract.results import InferenceResult, Usage
from tiller.contract.runs import request_bound_seconds
from tiller.protos.router.v1 import router_pb2
from tiller.worker import metrics
from tiller.worker.adapters import Adapters
from tiller.worker.adapters.base import Completion, EngineAdapter, EngineRequest
from tiller.worker.cancels import CancelSignals
from tiller.worker.health import ReplicaHealth
from tiller.worker.replicas import Held, NoEndpoint, QueueReplicas

log = logging.getLogger(__name__)
TRACER = tracing.tracer("tiller.worker")


class InferenceActivities:
    def __init__(
        self,
        redis: Redis,
        adapters: Adapters,
        event_ttl_seconds: int,
        heartbeat_interval_seconds: float,
        cancels: CancelSignals | None = None,
        *,
        sealer: Sealer,
        redis_outage_seconds: float = 0.0,
        health: ReplicaHealth | None = None,
        stream_interval_seconds: float = 0.0,
    ) -> None:
        self.redis = redis
        self.redis_outage = redis_outage_seconds
        self.sealer = sealer
        self.health = health or ReplicaHealth(adapters.__getitem__)
        # Each polled task queue's endpoints (the worker pool's, kept in line with models.yaml);
        # a queue or deployment not there (an activity run on its own) gets its target alone.
        self.queues: dict[str, QueueReplicas] = {}
        self._alone: dict[tuple[str, str, str, str], QueueReplicas] = {}
        self.adapters = adapters
        self.event_ttl = event_ttl_seconds
        self.heartbeat_interval = heartbeat_interval_seconds
        self.stream_interval = stream_interval_seconds
        self.cancels = cancels

    @activity.defn(name=GENERATE_ACTIVITY)
    async def generate(self, payload: dict[str, Any]) -> dict[str, Any]:
        """One attempt. Input and result travel as plain JSON objects (InferenceInput and
        InferenceResult): decoding them by hand costs a fraction of the SDK's typed conversion."""
        info = activity.info()
        try:
            request = InferenceInput.from_dict(payload)
            logs.REQUEST_ID.set(request.request_id)
            with metrics.attempt(
                request.model, request.target.deployment, info.attempt, request.target_index > 0
            ):
                return await self._generate(request, info.attempt)
        finally:
            queue = self.queues.get(info.task_queue)
            if queue is not None:
                queue.finished()  # its slot may go to the next task before Temporal hears

    async def _generate(self, request: InferenceInput, number: int) -> dict[str, Any]:
        fence = request.target_index * FENCE_STRIDE + number
        live_ttl = int(request_bound_seconds(request)) + self.event_ttl
        writer = EventWriter(
            self.redis,
            request.events_key,
            self.event_ttl,
            fence,
            live_ttl_seconds=live_ttl,
            sealer=self.sealer,
            # Redis away: the answer is held and appended when it is back (heartbeating).
            outage_seconds=self.redis_outage,
            waiting=activity.heartbeat,
            interval_seconds=self.stream_interval,
        )
        try:
            result = await self._attempt(request, writer)
            if result.embeddings is not None or result.choices is not None:
                # Vectors and the engine's own choices (logprobs of n choices can be large)
                # reach the gateway in the stream's done event; through Temporal they would
                # meet its payload limit (2 MB by default).
                result = dataclasses.replace(result, embeddings=None, choices=None)
            return dataclasses.asdict(result)
        except Superseded:
            # Temporal gave this attempt up (no heartbeat in time) and a later one took over;
            # what this one would report is discarded, and it must not publish anything.
            log.warning("attempt superseded by a later one", extra={"fence": fence})
            raise ServiceUnavailable(metrics.SUPERSEDED).to_application_error(
                non_retryable=True
            ) from None
        finally:
            writer.abort()  # a no-op once drained

    async def _attempt(self, request: InferenceInput, writer: EventWriter) -> InferenceResult:
        published = _Published()
        # Whether a partial answer can be continued: on this deployment (the next attempt does
        # it), or only on a later one (this deployment is given up for it).
        here = request.stream and request.target.resume
        later = request.stream and any(t.resume for t in request.next_targets)
        try:
            delivered = Delivered()
            if writer.fence > 1:  # a retry or a later deployment: see what came before
                delivered = Delivered.of(await writer.claim())
                if delivered.done is not None or delivered.error is not None:
                    await writer.ended()  # the claim must not keep a finished stream alive
                if delivered.done is not None:  # finished, but the worker died reporting it
                    return delivered.done.result
                if delivered.error is not None:  # already told the client; nothing to add
                    raise Superseded(request.events_key)
                if delivered.any and not here:
                    raise _mid_stream(request, later)
                published.any = delivered.any
            async with _heartbeating(self._beat_interval(request)):
                with TRACER.start_as_current_span(
                    f"engine {request.target.deployment}",
                    kind=SpanKind.CLIENT,
                    attributes={
                        "tiller.request_id": request.request_id,
                        "tiller.deployment": request.target.deployment,
                        "tiller.adapter": request.target.adapter,
                        "tiller.attempt": writer.fence,
                    },
                ):
                    completion = await self._unless_client_left(
                        request.request_id, self._run(request, writer, published, delivered)
                    )
            result = InferenceResult(
                completion.text,
                completion.finish_reason,
                # With a pipeline's earlier steps: charged with this answer.
                completion.usage + request.spent,
                request.target.deployment,
                request.target.model or request.model,
                completion.embeddings,
                completion.choices,
            )
            try:
                await writer.done(result)
            except RedisError:  # away past the outage bound: the gateway reads Temporal's copy
                log.warning("the answer's end was not published: Temporal holds the result")
            return result
        except (Superseded, ApplicationError):
            raise
        except RedisError:
            stuck = published.any and not here  # a partial answer this deployment cannot finish
            raise ServiceUnavailable("The event stream is unavailable.").to_application_error(
                non_retryable=stuck, failover=stuck and later
            ) from None
        except Exception as failure:
            if isinstance(failure, TillerError):
                error = failure
            else:
                log.exception("inference attempt failed unexpectedly")
                error = InternalError()
            if published.any and (error.retryable or error.failover) and not here:
                if later:  # the next deployment that can continue it takes over
                    raise _mid_stream(request, later, error.message) from None
                error = EngineFailedMidStream(
                    f"{error.message} (after part of the answer was sent)"
                )
            await _publish_if_final(writer, request, error)
            raise error.to_application_error() from None

    def _beat_interval(self, request: InferenceInput) -> float:
        """The worker's interval, or less when the model's heartbeat timeout is short."""
        return min(self.heartbeat_interval, request.heartbeat_timeout_seconds / 3)

    async def _unless_client_left(
        self, request_id: str, work: Coroutine[Any, Any, Completion]
    ) -> Completion:
        """Run the engine request; stop it the moment the gateway says the client left."""
        if self.cancels is None:
            return await work
        left = self.cancels.watch(request_id)
        engine = asyncio.ensure_future(work)
        watching = asyncio.ensure_future(left.wait())
        try:
            await asyncio.wait({engine, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            self.cancels.unwatch(request_id)
            if not engine.done():
                engine.cancel()  # closes the engine connection: the engine stops generating
                await asyncio.wait({engine})
        if not engine.cancelled():  # it finished (or failed) on its own
            return engine.result()
        # Temporal's cancellation follows at the next heartbeat and ends the activity as
        # cancelled; if it does not come, end it without a retry all the same.
        try:
            await asyncio.wait_for(activity.wait_for_cancelled(), 2 * self.heartbeat_interval)
        except TimeoutError:
            raise Cancelled("The client went away.") from None
        raise asyncio.CancelledError()  # requested by Temporal: the SDK reports it as cancelled

    async def _run(
        self,
        request: InferenceInput,
        writer: EventWriter,
        published: _Published,
        delivered: Delivered,
    ) -> Completion:
        adapter = self.adapters[request.target.adapter]
        ask = request.ask
        if (
            isinstance(ask, Chat)
            and "tools" not in adapter.passthrough
            and any(m.tool_calls or m.tool_call_id for m in ask.messages)
        ):
            raise InvalidRequest(
                f"Deployment {request.target.deployment!r} ({request.target.adapter}) does not "
                "take tool calls or tool results in the messages.",
                param="messages",
            )
        refused = sorted(set(ask.extra) - adapter.passthrough)
        # Parameters Tiller does not read go to engines that take them (contract/engines/).
        refused += [] if KINDS[request.target.adapter].forwards_params else sorted(ask.params)
        if refused:
            raise InvalidRequest(
                f"'{refused[0]}' is not supported by deployment {request.target.deployment!r} "
                f"({request.target.adapter}).",
                param=refused[0],
            )
        sampling = request.sampling
        if delivered.text and sampling.max_tokens is not None:
            left = sampling.max_tokens - delivered.tokens
            if left <= 0:  # the earlier attempt had streamed the whole allowance
                return Completion(delivered.text, "length", Usage(0, delivered.tokens))
            sampling = dataclasses.replace(sampling, max_tokens=left)
        engine_request = EngineRequest(
            request.target, ask, sampling, request.timeout_seconds, delivered.text
        )
        replicas = self._replicas(request)
        last = not request.next_targets  # nowhere else to go: wait for an endpoint to be back
        deadline = _wait_deadline(request)
        while True:
            try:
                held = await replicas.acquire(request.target, deadline, wait_for_down=last)
            except NoEndpoint:
                raise _no_endpoint(request, replicas, last) from None
            at = dataclasses.replace(engine_request, target=held.target)
            try:
                completion = await self._call(adapter, request, at, writer, published, delivered)
            except EngineUnreachable:
                # Nothing reached it: eject it, and go to another endpoint (or wait for one).
                self._ended(replicas, held, failed=True, unreachable=True)
                continue
            except TillerError as error:
                self._ended(replicas, held, failed=_engine_fault(error))
                raise
            except BaseException:  # cancelled (the client left), or a fault of ours
                self._ended(replicas, held, failed=False, neutral=True)
                raise
            self._ended(replicas, held, failed=False)
            return completion

    def _replicas(self, request: InferenceInput) -> QueueReplicas:
        """The endpoints the attempt may go to: its task queue's, as this worker polls it."""
        target = request.target
        queue = self.queues.get(activity.info().task_queue)
        if queue is not None and queue.of(target):  # this worker's view of models.yaml wins
            return queue
        key = (target.model, target.deployment, target.adapter, target.endpoint)
        alone = self._alone.get(key)
        if alone is None:
            alone = self._alone[key] = QueueReplicas(target.task_queue)
            alone.update([(target.model, _deployment_of(target))])
        return alone

    def _ended(
        self,
        replicas: QueueReplicas,
        held: Held,
        *,
        failed: bool,
        unreachable: bool = False,
        neutral: bool = False,
    ) -> None:
        seconds = replicas.release(held)
        replica = held.replica
        replica.attempts += 1
        replica.seconds += seconds
        metrics.ENDPOINT_SECONDS.labels(replicas.queue, replica.shown).observe(seconds)
        if failed:
            self.health.failed(replicas, replica, unreachable=unreachable)
        elif not neutral:
            self.health.succeeded(replicas, replica)

    async def _call(
        self,
        adapter: EngineAdapter,
        request: InferenceInput,
        engine_request: EngineRequest,
        writer: EventWriter,
        published: _Published,
        delivered: Delivered,
    ) -> Completion:
        """One request to the engine: the embeddings, the whole answer, or the answer streamed
        to the client as it comes (ending with what was delivered before, when continuing)."""
        ask = engine_request.ask
        if isinstance(ask, Embedding):
            found = await adapter.embed(engine_request)
            return Completion("", "stop", Usage(found.prompt_tokens, 0), found.vectors)
        if not request.stream:
            return await adapter.predict(engine_request)
        parts: list[str] = []
        finish_reason, usage = "stop", None
        async for delta in adapter.stream(engine_request):
            if activity.is_cancelled():
                # The SDK cancels this task when Temporal asks; a library on the way (the HTTP
                # stack) can absorb that one CancelledError, so the request is checked too.
                raise asyncio.CancelledError()
            if delta.text or delta.choices:
                parts.append(delta.text)
                writer.add_delta(delta.text, delta.choices)
                published.any = True
            finish_reason = delta.finish_reason or finish_reason
            usage = delta.usage or usage
        await writer.drain()
        if usage is None:  # the engine did not report usage; count what it streamed
            usage = Usage(0, len(parts))
        if delivered.text:
            # The engine counted the text it continued as prompt; the client asked for it as
            # answer. Reported as if one attempt had written the whole answer.
            usage = Usage(
                max(0, usage.prompt_tokens - delivered.tokens),
                delivered.tokens + usage.completion_tokens,
            )
        return Completion(delivered.text + "".join(parts), finish_reason, usage)


def _wait_deadline(request: InferenceInput) -> float:
    """Until when (the event loop's clock) this attempt may wait for an unreachable engine: the
    model's queue timeout counted from when the attempt was scheduled, less what it spent in the
    queue (Temporal's two timestamps, so the hosts' clocks need not agree). A request's first
    attempt shares the bound with its time in the queue; a retry after the engine died under it
    gets the whole bound again."""
    info = activity.info()
    queued = (info.started_time - info.current_attempt_scheduled_time).total_seconds()
    return asyncio.get_running_loop().time() + request.queue_timeout_seconds - max(0.0, queued)


def _engine_fault(error: TillerError) -> bool:
    """Whether a failed attempt counts against its endpoint's health: the engine's failures,
    not a caller's bad request, a refused key (the deployment's configuration, reported on each
    request), a rate limit or a cancellation."""
    engine = isinstance(error, EngineUnavailable | EngineError | EngineFailedMidStream)
    return engine and not isinstance(error, EngineRefusedCredentials)


def _no_endpoint(request: InferenceInput, replicas: QueueReplicas, last: bool) -> Exception:
    """No endpoint of the deployment could take the attempt: fail over now, or, on the last
    deployment after its wait, a clear error."""
    name = request.target.deployment
    listed = replicas.of(request.target)
    if listed and all(r.drain or not r.listed for r in listed):
        why = f"Every endpoint of deployment {name!r} is drained"
    elif any(r.state != "ejected" for r in listed):
        why = f"No endpoint of deployment {name!r} had a free slot"
    else:
        why = f"Cannot reach the model engine for deployment {name!r}"
    if not last:
        return EngineUnreachable(f"{why}.").to_application_error(non_retryable=True, failover=True)
    return EngineStayedDown(
        f"{why}; the request waited for it up to the model's queue timeout "
        f"({request.queue_timeout_seconds:g} s)."
    )


def _deployment_of(target: Target) -> router_pb2.Deployment:
    """A target the worker's listing does not know, as a deployment of one endpoint."""
    return router_pb2.Deployment(
        name=target.deployment,
        adapter=target.adapter,
        endpoint=target.endpoint,
        engine_model=target.engine_model,
        task_queue=target.task_queue,
        max_concurrency=1_000_000,
        model=target.model,
        options_json=json.dumps(target.options) if target.options else "",
    )


def _mid_stream(request: InferenceInput, later: bool, cause: str = "") -> Exception:
    """A partial answer this deployment cannot continue: the next one that can takes over (an
    ApplicationError that says so), or, with none left, the request ends with this error."""
    error = EngineFailedMidStream(
        f"{cause or 'The engine stopped'} after part of the answer was sent, and deployment "
        f"{request.target.deployment!r} cannot continue it."
    )
    if later:
        return error.to_application_error(non_retryable=True, failover=True)
    return error


async def _publish_if_final(
    writer: EventWriter, request: InferenceInput, error: TillerError
) -> None:
    """The last attempt on the last deployment, or an error nothing can fix: tell the waiting
    client now."""
    if error.retryable and activity.info().attempt < request.retry.max_attempts:
        return  # Temporal retries on this deployment
    if (error.retryable or error.failover) and request.next_targets:
        return  # the failover workflow tries the next deployment
    # If Redis is away too, the gateway's idle check reads the activity's failure instead.
    with contextlib.suppress(RedisError):
        await writer.error(error, request.spent)


@dataclasses.dataclass
class _Published:
    any: bool = False


@contextlib.asynccontextmanager
async def _heartbeating(interval: float) -> AsyncIterator[None]:
    """Heartbeat on a timer, so a dead worker is noticed even while the engine is silent.

    The first beat comes after one interval, not at the start: most answers finish sooner and
    then cost Temporal no heartbeat at all (each one is a write on the server)."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(interval)
            activity.heartbeat()

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
