"""One inference request through the gateway, shared by the REST and gRPC front doors.

resolve (router) -> admit (quota) -> mask -> start its run (Temporal) -> a `Call` (calls.py)
that reads the answer's events (Redis) and settles it with quota (usage, lease) exactly once,
whichever of its owners ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import uuid
from collections.abc import Coroutine
from typing import Any

from opentelemetry import trace
from redis.exceptions import RedisError
from temporalio.service import RPCError

from tiller.common import logs
from tiller.common.errors import (
    HandedOver,
    InvalidRequest,
    ModelNotFound,
    ServiceUnavailable,
)
from tiller.common.model_access import model_allowed
from tiller.common.priorities import DEFAULT_PRIORITY
from tiller.contract.events import stream_key
from tiller.contract.names import PIPELINE_TASK_QUEUE
from tiller.contract.requests import (
    Chat,
    Embedding,
    InferenceInput,
    Sampling,
    Target,
    TextCompletion,
)
from tiller.contract.routes import (
    defaults_of,
    filled,
    heartbeat_timeout_of,
    queue_timeout_of,
    retry_of,
    targets_of,
)
from tiller.gateway import executions
from tiller.gateway.admissions import Admitter
from tiller.gateway.answers import AnswerHub, Subscription
from tiller.gateway.background import BackgroundRequests, Record, new_record
from tiller.gateway.backlog import BacklogWatch
from tiller.gateway.calls import Accepted, Call, Observer, Stage
from tiller.gateway.executions import Execution
from tiller.gateway.leases import LeaseKeeper
from tiller.gateway.masking import Masking
from tiller.gateway.protocol import ApiRequest
from tiller.gateway.reservations import as_sent, prompt_of, reservation
from tiller.gateway.responses_store import ResponseStore
from tiller.gateway.routes import RouteCache
from tiller.gateway.settings import GatewaySettings
from tiller.gateway.settlement import Settler
from tiller.gateway.upstreams import Upstreams, rpc
from tiller.protos.quota.v1 import quota_pb2
from tiller.protos.router.v1 import router_pb2

log = logging.getLogger(__name__)


class Inference:
    def __init__(self, upstreams: Upstreams, settings: GatewaySettings) -> None:
        self.up = upstreams
        self.settings = settings
        self._cleanups: set[asyncio.Task[None]] = set()
        self.routes = RouteCache(
            self.resolve, settings.route_cache_seconds, settings.route_stale_seconds
        )
        self.settler = Settler(upstreams.quota, settings.rpc_timeout_seconds)
        self.admitter = Admitter(upstreams.quota, self.settler, settings.rpc_timeout_seconds)
        self.hub = AnswerHub(
            settings.redis_url,
            upstreams.redis,
            settings.key_prefix,
            block_ms=int(settings.idle_check_seconds * 1000),
            sealer=upstreams.sealer,
        )
        self.leases = LeaseKeeper(upstreams.quota, settings.rpc_timeout_seconds)
        self.masking = Masking()
        self.draining = False  # SIGTERM: /readyz answers 503 while open requests finish
        # Callers waiting on an answer here (not background watchers): what a hand-over ends.
        self.answering: dict[Subscription, Call] = {}
        self.backlog = BacklogWatch(
            upstreams.temporal, self.list_models, settings.backlog_poll_seconds
        )
        self.responses = ResponseStore(
            upstreams.redis,
            upstreams.sealer,
            settings.key_prefix,
            ttl_seconds=settings.responses_ttl_seconds,
        )
        self.background = BackgroundRequests(
            self,
            upstreams.redis,
            settings.key_prefix,
            ttl_seconds=settings.background_ttl_seconds,
            lease_seconds=settings.background_lease_seconds,
            resume_grace_seconds=settings.resume_grace_seconds,
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

    async def begin(
        self,
        api_key: str,
        request: ApiRequest,
        priority: int | None = None,
        observer: Observer | None = None,
        id_prefix: str | None = None,
        resumable: bool | None = None,
        key_id: str = "",
    ) -> Call:
        """Route, admit, mask and start the request's run; raises TillerError if any step
        refuses. The Call returned is ANSWERING: the caller owns it (`Call.owned`).

        `resumable` (not None): record the request while it runs, so that another gateway takes
        it up if this one dies (background.py); True: its caller may resume its stream by id.

        The request queues in its priority class: the key's, or a later one if the caller asks
        (`priority`, 1 first .. 5 last); a caller cannot move ahead of its key's class.

        `key_id` (with no `api_key`): a batch line of that key, which was authenticated when
        its batch was created; quota admits it by the key's id (and refuses a key revoked since).
        """
        # OpenAI's id prefix by kind of request; `id_prefix` for another API (resp_).
        request_id = id_prefix or f"{_ID_PREFIX[type(request.ask)]}-"
        request_id += uuid.uuid4().hex
        logs.REQUEST_ID.set(request_id)
        span = trace.get_current_span()
        span.set_attribute("tiller.request_id", request_id)
        span.set_attribute("tiller.model", request.model)
        route = await self._route(api_key, request.model, key_id)
        if observer is not None:  # the model label waits for the route: callers name anything
            observer.routed(route.model)
        if request.ask.params and route.engine_parameters == "refuse":
            if not key_id:
                await self.authenticate(api_key)  # a bad key hears that first
            name = sorted(request.ask.params)[0]
            raise InvalidRequest(
                f"'{name}' is not supported by the model `{route.model}`: it takes only the "
                "parameters Tiller reads (its models.yaml entry sets engine_parameters: refuse, "
                "or one of its engines cannot take others).",
                param=name,
            )
        sampling = filled(request.sampling, defaults_of(route.defaults))
        prompt = prompt_of(as_sent(request.ask, route), route, self.settings.template_tokens)
        reserve = reservation(request, sampling, prompt.bound, self.settings.default_reserve_tokens)
        admission = await self._admit(api_key, key_id, request_id, request.model, route, reserve)
        principal = admission.principal
        span.set_attribute("tiller.key_id", principal.key_id)
        if observer is not None:
            observer.admitted(principal.key_id, principal.team)
        if principal.models:  # fall back only to models this key may use too
            allowed = [d for d in route.fallbacks if model_allowed(principal.models, d.model)]
            route = _with_fallbacks(route, allowed)
        accepted = Accepted(
            request_id,
            route.model,
            principal.key_id,
            stream_key(self.settings.key_prefix, request_id),
            int(time.time()),
            include_usage=request.include_usage,
            queue_timeout=queue_timeout_of(route),
            prompt_estimate=prompt.estimate,
            # Embeddings and the engine's own choices come back in the Redis done event only.
            only_in_stream=isinstance(request.ask, Embedding) or bool(request.ask.extra),
            legacy=isinstance(request.ask, TextCompletion),
        )
        tracking: asyncio.Task[bool] | None = None
        try:
            # Before anything is stored or sent: the engine, Temporal and Redis see placeholders.
            request, vault = await self.masking.mask_soon(request, route, principal)
            if vault and request.background:
                raise InvalidRequest(
                    "'background' is not supported when personal data is masked and restored "
                    "(a mask+restore PII policy): the originals are kept only for the life of "
                    "the connection.",
                    param="background",
                )
            run = _activity_input(accepted, request, sampling, route)
            queue_class = max(principal.priority or DEFAULT_PRIORITY, priority or 0)
            if resumable is not None and not vault and not request.background:
                # Written while Temporal starts the run (mask+restore's values live only here:
                # such a request ends with this gateway).
                record = new_record(accepted, executions.kind_of(run), True, resumable)
                tracking = asyncio.get_running_loop().create_task(self.background.track(record))
            execution = await self._start(run, queue_class)
            tracked = await tracking if tracking is not None else False
        except BaseException:  # admitted but refused before it ran: nothing of it counts
            self.settler.settle(
                quota_pb2.Settlement(key_id=principal.key_id, request_id=request_id, refused=True)
            )
            if tracking is not None:
                self.spawn(self._forget(request_id, tracking))
            raise
        call = Call(self, accepted, execution, Stage.ANSWERING, admission, vault, observer)
        call.tracked = tracked
        return call

    async def _forget(self, request_id: str, tracking: asyncio.Task[bool]) -> None:
        """A request recorded for adoption that never started: its record goes."""
        with contextlib.suppress(BaseException):
            if await tracking:
                self.background.untrack(request_id)

    async def _admit(
        self,
        api_key: str,
        key_id: str,
        request_id: str,
        asked: str,
        route: router_pb2.Route,
        reserve: int,
    ) -> quota_pb2.Admission:
        """Quota's admission of the request against its key's, team's and model's limits,
        `reserve` tokens held against them until it settles."""
        limits = route.limits
        return await self.admitter.admit(
            quota_pb2.AdmitRequest(
                api_key=api_key,
                key_id=key_id,
                request_id=request_id,
                model=asked,
                served_model=route.model,
                reserve_tokens=reserve,
                model_limits=quota_pb2.Limits(
                    rpm=limits.rpm, tpm=limits.tpm, concurrency=limits.concurrency
                ),
            )
        )

    async def _route(self, api_key: str, model: str, key_id: str) -> router_pb2.Route:
        try:
            return await self.routes.get(model)
        except ModelNotFound:
            if not key_id:  # a bad key hears that first, not which models exist
                await self.authenticate(api_key)
            raise

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

    def attach(self, record: Record, watch: bool = False) -> Call:
        """A background request, taken up again from its record (any gateway can): to watch it
        (WATCHED: renew its lease until it settles it), or only to read or stop it (READING)."""
        accepted = Accepted(
            record.request_id,
            record.model,
            record.key_id,
            record.events_key,
            record.created,
            include_usage=record.include_usage,
            prompt_estimate=record.prompt_estimate,
            legacy=record.legacy,
        )
        execution = executions.attach(self.up.temporal, record.request_id, record.kind)
        return Call(self, accepted, execution, Stage.WATCHED if watch else Stage.READING)

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run clean-up that must finish even if the caller is cancelled (client gone)."""
        task = asyncio.get_running_loop().create_task(work)
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def hand_over(self) -> int:
        """The grace ran out: every request still answered here goes on without this gateway.
        Each one this gateway answers is recorded as a background request with no watcher:
        another gateway adopts it, settles it, and lets its caller resume the stream by id.
        Every caller waiting here is told where to go on. Requests whose answer needs this
        gateway's memory (mask+restore) are not handed over. Returns how many callers were
        told."""
        self.background.stop_adopting()
        told = 0
        for sub, call in list(self.answering.items()):
            if call.restorer is not None or call.stage is Stage.SETTLED:
                continue
            if call.stage in (Stage.ANSWERING, Stage.STREAMING):
                try:
                    await self.background.record_for_adoption(call)
                except RedisError:
                    continue  # it ends with its stream, as before
                call.hand_to(Stage.HANDED_OVER)
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
    accepted: Accepted, request: ApiRequest, sampling: Sampling, route: router_pb2.Route
) -> InferenceInput:
    """The run of a request: `sampling` is the caller's with the model's defaults filled in."""
    targets = targets_of(route)
    pipeline = route.pipeline.workflow
    if pipeline:
        _pipeline_takes(request, route.model)
        # Names the pipeline only: its steps resolve their own models' deployments.
        targets = [Target(f"pipeline:{pipeline}", "pipeline", "", "", PIPELINE_TASK_QUEUE)]
    ask = request.ask
    if not isinstance(ask, Chat) or ask.extra:
        # A legacy completion is not continued after a mid-stream failure: only chat has a
        # way (continue_final_message) to ask an engine for exactly the rest of its answer,
        # and only of one plain text (not of tool calls, several choices or logprobs).
        targets = [dataclasses.replace(t, resume=False) for t in targets]
    return InferenceInput(
        request_id=accepted.request_id,
        model=route.model,
        ask=as_sent(ask, route),
        sampling=sampling,
        # A background answer is streamed to Redis, so clients can follow it live, where the
        # engine can continue a partial answer; elsewhere a failed attempt starts afresh.
        stream=request.stream or (request.background and any(t.resume for t in targets)),
        target=targets[0],
        next_targets=tuple(targets[1:]),
        heartbeat_timeout_seconds=heartbeat_timeout_of(route),
        queue_timeout_seconds=accepted.queue_timeout,
        events_key=accepted.events_key,
        timeout_seconds=route.timeout_seconds,
        retry=retry_of(route.retry),
        pipeline=pipeline,
        pipeline_options=json.loads(route.pipeline.options_json or "{}"),
    )


def _pipeline_takes(request: ApiRequest, model: str) -> None:
    """A pipeline answers chat messages; it has no single engine to pass anything else to."""
    if not isinstance(request.ask, Chat):
        raise InvalidRequest(
            f"The model `{model}` is a pipeline: it answers chat completions only.",
            param="model",
        )
    if request.ask.extra or request.ask.params:
        name = sorted({**request.ask.extra, **request.ask.params})[0]
        raise InvalidRequest(
            f"'{name}' is not supported by the pipeline model `{model}`.", param=name
        )
