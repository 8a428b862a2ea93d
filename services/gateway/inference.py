"""One inference request through the gateway, shared by the REST and gRPC front doors.

resolve (router) -> admit (quota) -> start its run (Temporal) -> read the answer's events
(Redis) -> settle it with quota (usage, lease). Every admitted request ends in exactly one
of `complete` or `abandon`, so no concurrency lease is left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import time
import uuid
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

from opentelemetry import trace
from redis.exceptions import RedisError
from temporalio.service import RPCError

from tiller.common import logs
from tiller.common.errors import (
    AnswerUnreadable,
    HandedOver,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.model_access import model_allowed
from tiller.common.priorities import DEFAULT_PRIORITY
from tiller.contract import answer_stream
from tiller.contract.events import Delta, Done, Event, Failed, cancel_channel, stream_key
from tiller.contract.names import PIPELINE_TASK_QUEUE
from tiller.contract.requests import (
    Chat,
    Embedding,
    InferenceInput,
    Sampling,
    Target,
    TextCompletion,
)
from tiller.contract.results import InferenceResult, Usage
from tiller.contract.routes import (
    defaults_of,
    filled,
    heartbeat_timeout_of,
    queue_timeout_of,
    retry_of,
    targets_of,
    with_system_prompt,
)
from tiller.gateway import executions, metrics
from tiller.gateway.admissions import Admitter
from tiller.gateway.answers import AnswerHub, Subscription
from tiller.gateway.background import BackgroundRequests, Record
from tiller.gateway.backlog import BacklogWatch
from tiller.gateway.executions import Execution
from tiller.gateway.leases import LeaseKeeper
from tiller.gateway.masking import Masking
from tiller.gateway.protocol import ApiRequest
from tiller.gateway.reservations import prompt_tokens, reservation
from tiller.gateway.restoring import AnswerRestorer
from tiller.gateway.routes import RouteCache
from tiller.gateway.settings import GatewaySettings
from tiller.gateway.settlement import Settler
from tiller.gateway.shapes import duration
from tiller.gateway.upstreams import Upstreams, rpc
from tiller.protos.quota.v1 import quota_pb2
from tiller.protos.router.v1 import router_pb2

log = logging.getLogger(__name__)


class Inference:
    def __init__(self, upstreams: Upstreams, settings: GatewaySettings) -> None:
        self.up = upstreams
        self.settings = settings
        self._cleanups: set[asyncio.Task[None]] = set()
        self.routes = RouteCache(self.resolve, settings.route_cache_seconds)
        self.settler = Settler(upstreams.quota, settings.rpc_timeout_seconds)
        self.admitter = Admitter(upstreams.quota, self.settler, settings.rpc_timeout_seconds)
        self.hub = AnswerHub(
            settings.redis_url,
            upstreams.redis,
            settings.key_prefix,
            block_ms=int(settings.idle_check_seconds * 1000),
        )
        self.leases = LeaseKeeper(upstreams.quota, settings.rpc_timeout_seconds)
        self.masking = Masking()
        self.draining = False  # SIGTERM: /readyz answers 503 while open requests finish
        # Callers waiting on an answer here (not background watchers): what a hand-over ends.
        self.answering: dict[Subscription, Call] = {}
        self.backlog = BacklogWatch(
            upstreams.temporal, self.list_models, settings.backlog_poll_seconds
        )
        self.background = BackgroundRequests(
            self,
            upstreams.redis,
            settings.key_prefix,
            ttl_seconds=settings.background_ttl_seconds,
            lease_seconds=settings.background_lease_seconds,
        )

    async def authenticate(self, api_key: str) -> quota_pb2.Principal:
        return await rpc(
            self.up.quota.Authenticate(
                quota_pb2.AuthenticateRequest(api_key=api_key),
                timeout=self.settings.rpc_timeout_seconds,
            )
        )

    async def list_models(self) -> router_pb2.ListModelsResponse:
        return await rpc(
            self.up.router.ListModels(
                router_pb2.ListModelsRequest(), timeout=self.settings.rpc_timeout_seconds
            )
        )

    async def resolve(self, model: str) -> router_pb2.Route:
        return await rpc(
            self.up.router.Resolve(
                router_pb2.ResolveRequest(model=model), timeout=self.settings.rpc_timeout_seconds
            )
        )

    async def begin(self, api_key: str, chat: ApiRequest, priority: int | None = None) -> Call:
        """Route, admit, mask and start the request's activity; raises TillerError if any step
        refuses.

        The request queues in its priority class: the key's, or a later one if the caller asks
        (`priority`, 1 first .. 5 last); a caller cannot move ahead of its key's class.
        """
        request_id = f"{_ID_PREFIX[type(chat.ask)]}-{uuid.uuid4().hex}"
        record = metrics.CURRENT.get()
        if record is not None:  # the model label waits for the route: callers name anything
            record.stream = chat.stream
        logs.REQUEST_ID.set(request_id)
        span = trace.get_current_span()
        span.set_attribute("tiller.request_id", request_id)
        span.set_attribute("tiller.model", chat.model)
        try:
            route = await self.routes.get(chat.model)
        except ModelNotFound:
            await self.authenticate(api_key)  # a bad key hears that first, not which models exist
            raise
        if record is not None:
            record.model = route.model
        sampling = filled(chat.sampling, defaults_of(route.defaults))
        prompt = prompt_tokens(chat)
        limits = route.limits
        admission = await self.admitter.admit(
            quota_pb2.AdmitRequest(
                api_key=api_key,
                request_id=request_id,
                model=chat.model,
                served_model=route.model,
                reserve_tokens=reservation(
                    chat, sampling, prompt, self.settings.default_reserve_tokens
                ),
                model_limits=quota_pb2.Limits(
                    rpm=limits.rpm, tpm=limits.tpm, concurrency=limits.concurrency
                ),
            )
        )
        key_id = admission.principal.key_id
        span.set_attribute("tiller.key_id", key_id)
        if record is not None:
            record.key, record.team = key_id, admission.principal.team
        queue_class = max(admission.principal.priority or DEFAULT_PRIORITY, priority or 0)
        if admission.principal.models:  # fall back only to models this key may use too
            allowed = [
                d for d in route.fallbacks if model_allowed(admission.principal.models, d.model)
            ]
            route = _with_fallbacks(route, allowed)
        try:
            # Before anything is stored or sent: the engine, Temporal and Redis see placeholders.
            chat, vault = await self.masking.mask_soon(chat, route, admission.principal)
            if vault and chat.background:
                raise InvalidRequest(
                    "'background' is not supported when personal data is masked and restored "
                    "(a mask+restore PII policy): the originals are kept only for the life of "
                    "the connection.",
                    param="background",
                )
            request = _activity_input(request_id, chat, sampling, route, self.settings.key_prefix)
            execution = await self._start(request, queue_class)
        except BaseException:
            self.settler.settle(quota_pb2.Settlement(key_id=key_id, request_id=request_id))
            raise
        return Call(
            self,
            request_id,
            route.model,
            key_id,
            admission,
            execution,
            request.events_key,
            queue_timeout=request.queue_timeout_seconds,
            prompt_estimate=prompt,
            # Embeddings and the engine's own choices come back in the Redis done event only.
            only_in_stream=isinstance(chat.ask, Embedding) or bool(chat.ask.extra),
            restore=vault,
            record=record,
        )

    async def _start(self, request: InferenceInput, priority: int) -> Execution:
        try:
            return await executions.start(
                self.up.temporal, request, priority, self.settings.start_timeout_seconds
            )
        except RPCError as error:
            log.warning("cannot start the request", extra={"status": str(error.status)})
            raise ServiceUnavailable(
                "The orchestrator is unavailable; try again shortly."
            ) from None

    def start(self) -> None:
        """Start the gateway's own background work (needs the running loop)."""
        self.leases.start()
        self.background.start()
        self.backlog.start()

    def attach(self, record: Record, owner: bool = False) -> Call:
        """A background request, taken up again from its record (any gateway can). The `owner`
        (its watcher) keeps its lease alive until it settles it; a client streaming it or
        cancelling it only reads or stops it."""
        execution = executions.attach(self.up.temporal, record.request_id, record.kind)
        call = Call(
            self,
            record.request_id,
            record.model,
            record.key_id,
            quota_pb2.Admission(),
            execution,
            record.events_key,
            created=record.created,
            holds_lease=False,
        )
        call.in_background = True  # recorded already: a hand-over only tells its reader
        if owner:
            self.leases.hold(record.request_id, record.key_id, soon=True)
            call.counts_errors = True
        return call

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run clean-up that must finish even if the caller is cancelled (client gone)."""
        task = asyncio.get_running_loop().create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def hand_over(self) -> int:
        """The grace ran out: every request still answered here goes on without this gateway.
        Each owned one is recorded as a background request (no watcher: another gateway adopts
        it, settles it, and lets its caller resume the stream by id); each caller is told so.
        Requests whose answer needs this gateway's memory (mask+restore) are not handed over.
        Returns how many callers were told."""
        self.background.stop_adopting()
        told = 0
        for sub, call in list(self.answering.items()):
            if call.restorer is not None:
                continue
            if not call.in_background and not call.handed_over:
                if call.settled:
                    continue
                try:
                    await self.background.record_for_adoption(call)
                except RedisError:
                    continue  # it ends with its stream, as before
                call.hand_off()
            sub.fail(HandedOver.of(call.request_id))
            told += 1
        return told

    async def drain(self) -> None:
        if self._cleanups:
            await asyncio.wait(set(self._cleanups), timeout=self.settings.shutdown_grace_seconds)
        await asyncio.wait_for(self.settler.drain(), self.settings.shutdown_grace_seconds)

    async def close(self) -> None:
        await self.backlog.close()
        await self.leases.close()
        await self.background.close()
        await self.hub.close()


class Call:
    """An admitted, started request."""

    def __init__(
        self,
        inference: Inference,
        request_id: str,
        model: str,
        key_id: str,
        admission: quota_pb2.Admission,
        execution: Execution,
        events_key: str,
        created: int | None = None,
        holds_lease: bool = True,
        queue_timeout: float = math.inf,  # unknown (a request taken up again): the usual checks
        prompt_estimate: int = 0,
        only_in_stream: bool = False,
        restore: dict[str, str] | None = None,
        record: metrics.RequestRecord | None = None,
    ) -> None:
        self.inference = inference
        self.request_id = request_id
        self.model = model
        self.key_id = key_id
        self.admission = admission
        self.execution = execution
        self.events_key = events_key
        self.created = int(time.time()) if created is None else created
        self.queue_timeout = queue_timeout
        # What a client that leaves mid-stream is charged: the prompt's estimate and the tokens
        # it was sent (engine chunks, one token each), not nothing.
        self.prompt_estimate = prompt_estimate
        self.only_in_stream = only_in_stream
        # mask+restore: placeholders and the caller's values, to put back in the answer.
        self.restorer = AnswerRestorer(restore) if restore else None
        self.sent_tokens = 0
        # What a pipeline's steps spent before its answer failed (its error event says).
        self.spent = Usage()
        self.record = record
        self.include_usage = False  # the caller asked for a usage chunk (a hand-over keeps it)
        self.in_background = False  # recorded as a background request
        self.handed_over = False  # another gateway answers for it now
        self._settled = False
        # The gateway answering for it counts its errors; others only read (a client streaming
        # a background request its watcher answers for).
        self.counts_errors = holds_lease
        # Counted in flight from its start (begin) to its settlement, on this gateway.
        self._in_flight = holds_lease
        if holds_lease:
            inference.leases.hold(request_id, key_id)
            metrics.IN_FLIGHT.labels(model).inc()

    @property
    def settled(self) -> bool:
        return self._settled

    async def answer(self, after: str = "0", caller: bool = True) -> AsyncGenerator[Event, None]:
        """The answer's events in order, ending with its terminal event.

        When nothing arrives for a while, Temporal is asked whether the request still runs: a
        request that ended without publishing (timed out, terminated, its worker died on the last
        attempt) fails instead of hanging. `after` resumes after an event id (Last-Event-ID).
        `caller`: a client waits on it (a hand-over tells it where to go), not a watcher.
        """
        idle = self.inference.settings.idle_check_seconds
        # Before anything arrives, check no later than the queue timeout: a request no worker
        # picked up is answered then, not at the next idle check.
        wait = min(idle, self.queue_timeout + 0.25) if after == "0" else idle
        hub = self.inference.hub
        sub = hub.subscribe(self.events_key, after)
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
                batch = answer_stream.coalesce(batch)
                for event in self.restorer.restore(batch) if self.restorer else batch:
                    after = event.id
                    if isinstance(event, Delta):  # what the caller is handed, it is charged
                        self.sent_tokens += event.tokens
                        if self.record is not None:
                            self.record.token()
                    elif isinstance(event, Failed):
                        self.spent = event.spent
                        if self.counts_errors:
                            metrics.ANSWER_ERRORS.labels(self.model, event.error.reason).inc()
                    yield event
                    if event.terminal:
                        return
        finally:
            self.inference.answering.pop(sub, None)
            hub.unsubscribe(sub)

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
        late = await answer_stream.read(self.inference.up.redis, self.events_key, after, 1)
        if late:
            return late
        if unknown is not None:
            raise unknown
        if self.only_in_stream:
            # Temporal's copy of the result lacks the vectors or the engine's choices (they
            # would overflow its payloads): better no answer than a text-only one.
            raise ServiceUnavailable("The answer could not be read; try again.")
        return [Done(await self.execution.result(), after)]

    def complete(self, usage: Usage) -> None:
        """The answer was delivered: record its usage and release the lease."""
        if not self._settled and not self.handed_over:
            self.inference.settler.settle(self.settlement(usage))

    def abandon(self) -> None:
        """The caller is gone or the request failed: stop any work left and release the lease."""
        if self._settled or self.handed_over:
            return
        self.inference.spawn(self.stop())
        usage = self.unfinished_usage()
        if usage is not None:
            self.complete(usage)
        else:
            self.release()

    def unfinished_usage(self) -> Usage | None:
        """What an answer that did not finish is charged: the prompt's estimate and the tokens
        the caller was sent, plus what a pipeline's earlier steps spent; None if nothing."""
        sent = Usage(self.prompt_estimate, self.sent_tokens) if self.sent_tokens else Usage()
        usage = sent + self.spent
        return usage if usage.total_tokens else None

    def release(self) -> None:
        """The request ended without an answer to charge: release its lease."""
        if not self._settled and not self.handed_over:
            self.inference.settler.settle(self.settlement(None))

    def hand_off(self) -> None:
        """Another gateway answers for it from now on (recorded for adoption): this one stops
        renewing its lease, and neither settles nor stops it."""
        self.handed_over = True
        self.inference.leases.drop(self.request_id)
        self.let_go()

    def let_go(self) -> None:
        """This gateway no longer answers for the request (settled, or left to another)."""
        if self._in_flight:
            self._in_flight = False
            metrics.IN_FLIGHT.labels(self.model).dec()

    def settlement(self, usage: Usage | None) -> quota_pb2.Settlement:
        """This request's settlement (with usage if it was answered), marked as settled here."""
        self._settled = True
        self.inference.leases.drop(self.request_id)
        self.let_go()
        if usage is None:
            return quota_pb2.Settlement(key_id=self.key_id, request_id=self.request_id)
        metrics.TOKENS.labels(self.model, "prompt").inc(usage.prompt_tokens)
        metrics.TOKENS.labels(self.model, "completion").inc(usage.completion_tokens)
        return quota_pb2.Settlement(
            key_id=self.key_id,
            request_id=self.request_id,
            model=self.model,
            completed=True,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )

    async def stop(self) -> None:
        """Stop the request's run: the worker stops its engine now, Temporal ends the run."""
        # First the fast path: the worker running it stops the engine at once.
        channel = cancel_channel(self.inference.settings.key_prefix)
        with contextlib.suppress(RedisError):
            await self.inference.up.redis.publish(channel, self.request_id)
        await self.execution.cancel()

    def headers(self) -> dict[str, str]:
        """x-request-id, and OpenAI's x-ratelimit-* for the tightest limits that apply."""
        headers = {"x-request-id": self.request_id}
        for kind, limit in (
            ("requests", self.admission.requests),
            ("tokens", self.admission.tokens),
        ):
            if limit.limit:
                headers[f"x-ratelimit-limit-{kind}"] = str(limit.limit)
                headers[f"x-ratelimit-remaining-{kind}"] = str(limit.remaining)
                headers[f"x-ratelimit-reset-{kind}"] = duration(limit.reset_seconds)
        return headers


def _with_fallbacks(
    route: router_pb2.Route, fallbacks: list[router_pb2.Deployment]
) -> router_pb2.Route:
    narrowed = router_pb2.Route()
    narrowed.CopyFrom(route)  # the cached route stays as it is
    del narrowed.fallbacks[:]
    narrowed.fallbacks.extend(fallbacks)
    return narrowed


# OpenAI's id prefixes, by the kind of request.
_ID_PREFIX = {Chat: "chatcmpl", TextCompletion: "cmpl", Embedding: "embd"}


def _activity_input(
    request_id: str, chat: ApiRequest, sampling: Sampling, route: router_pb2.Route, prefix: str
) -> InferenceInput:
    """The run of a request: `sampling` is the caller's with the model's defaults filled in."""
    targets = targets_of(route)
    pipeline = route.pipeline.workflow
    if pipeline:
        _pipeline_takes(chat, route.model)
        # Names the pipeline only: its steps resolve their own models' deployments.
        targets = [Target(f"pipeline:{pipeline}", "pipeline", "", "", PIPELINE_TASK_QUEUE)]
    ask = chat.ask
    if not isinstance(ask, Chat) or ask.extra:
        # A legacy completion is not continued after a mid-stream failure: only chat has a
        # way (continue_final_message) to ask an engine for exactly the rest of its answer,
        # and only of one plain text (not of tool calls, several choices or logprobs).
        targets = [dataclasses.replace(t, resume=False) for t in targets]
    if isinstance(ask, Chat):
        ask = dataclasses.replace(
            ask, messages=with_system_prompt(ask.messages, route.system_prompt)
        )
    return InferenceInput(
        request_id=request_id,
        model=route.model,
        ask=ask,
        sampling=sampling,
        # A background answer is streamed to Redis, so clients can follow it live, where the
        # engine can continue a partial answer; elsewhere a failed attempt starts afresh.
        stream=chat.stream or (chat.background and any(t.resume for t in targets)),
        target=targets[0],
        next_targets=tuple(targets[1:]),
        heartbeat_timeout_seconds=heartbeat_timeout_of(route),
        queue_timeout_seconds=queue_timeout_of(route),
        events_key=stream_key(prefix, request_id),
        timeout_seconds=route.timeout_seconds,
        retry=retry_of(route.retry),
        pipeline=pipeline,
        pipeline_options=json.loads(route.pipeline.options_json or "{}"),
    )


def _pipeline_takes(chat: ApiRequest, model: str) -> None:
    """A pipeline answers chat messages; it has no single engine to pass anything else to."""
    if not isinstance(chat.ask, Chat):
        raise InvalidRequest(
            f"The model `{model}` is a pipeline: it answers chat completions only.",
            param="model",
        )
    if chat.ask.extra:
        name = sorted(chat.ask.extra)[0]
        raise InvalidRequest(
            f"'{name}' is not supported by the pipeline model `{model}`.", param=name
        )
