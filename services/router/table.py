"""models.yaml, step two: the immutable routing table the router answers from."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from tiller.common.errors import ModelNotFound
from tiller.common.pii.findings import BUILT_IN_TYPES, DEFAULT_MIN_SCORE
from tiller.contract.engines import KINDS
from tiller.contract.names import FAILOVER_TASK_QUEUE, PIPELINE_TASK_QUEUE
from tiller.contract.requests import Retry
from tiller.router import config

DEFAULT_HEALTH = config.HealthFile()


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    max_concurrency: int  # attempts one worker sends it at once
    weight: float  # its share while every replica has free slots
    drain: bool  # takes no new request


@dataclass(frozen=True, slots=True)
class Deployment:
    name: str
    adapter: str
    endpoint: str  # the first endpoint's URL
    engine_model: str
    task_queue: str
    max_concurrency: int  # the sum of its endpoints' capacities
    model: str  # the model it serves
    resume: bool  # the engine can continue a partial answer
    options_json: str  # the adapter's `options:`, as JSON
    endpoints: tuple[Endpoint, ...] = ()
    health: config.HealthFile = DEFAULT_HEALTH


@dataclass(frozen=True, slots=True)
class Pipeline:
    workflow: str  # its registered name (services/pipelines/)
    options_json: str  # its `options:`, as JSON
    steps: tuple[str, ...]  # canonical names of the models it calls


@dataclass(frozen=True, slots=True)
class Model:
    name: str
    aliases: tuple[str, ...]
    owned_by: str
    created: int
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    queue_timeout_seconds: float
    retry: Retry
    deployments: tuple[Deployment, ...]
    fallbacks: tuple[str, ...]  # canonical names of the models tried after this one
    defaults: config.DefaultsFile
    system_prompt: str | None
    limits: config.LimitsFile
    pii: tuple[config.PiiPolicyFile, ...]  # its own, or the file's default
    pipeline: Pipeline | None = None  # set for a pipeline model (then no deployments)
    engine_parameters: str | None = None  # "forward", "refuse", or unset: by its engines


@dataclass(frozen=True, slots=True)
class PiiDetection:
    """How the gateway finds personal data: the same for every model."""

    min_score: float
    recognizers_json: str  # the custom recognizers, as JSON ("" = none)
    types: tuple[str, ...] = BUILT_IN_TYPES  # the built-in ones and the recognizers'


@dataclass(frozen=True)
class RoutingTable:
    version: int  # derived from the file's bytes: equal files, equal versions
    models: Mapping[str, Model]
    names: Mapping[str, Model]  # every model name and alias
    pii: PiiDetection = PiiDetection(DEFAULT_MIN_SCORE, "")

    def resolve(self, name: str) -> Model:
        try:
            return self.names[name]
        except KeyError:
            shown = name if len(name) <= 80 else f"{name[:80]}…"
            raise ModelNotFound(
                f"The model `{shown}` does not exist or you do not have access to it.",
                param="model",
            ) from None

    def pii_policies(self, model: Model) -> tuple[config.PiiPolicyFile, ...]:
        """The policies a request to `model` is under: its own, and its fallback models', its
        pipeline steps' and their fallback models' (they may see the request too), without
        repeats."""
        steps = model.pipeline.steps if model.pipeline else ()
        step_fallbacks = (f for step in steps for f in self.models[step].fallbacks)
        others = (*model.fallbacks, *steps, *step_fallbacks)
        policies = [*model.pii, *(p for name in others for p in self.models[name].pii)]
        return tuple(p for i, p in enumerate(policies) if p not in policies[:i])

    def fallback_deployments(self, model: Model) -> tuple[Deployment, ...]:
        """The deployments of `model`'s fallback models, in the order they are tried."""
        return tuple(d for name in model.fallbacks for d in self.models[name].deployments)

    def engine_parameters(self, model: Model) -> str:
        """What happens to request parameters Tiller does not read: the model's own rule, or
        "forward" where every engine that may answer it takes them (a pipeline: none)."""
        if model.engine_parameters is not None:
            return model.engine_parameters
        deployments = (*model.deployments, *self.fallback_deployments(model))
        forwarded = bool(deployments) and all(KINDS[d.adapter].forwards_params for d in deployments)
        return "forward" if forwarded else "refuse"


def compile_file(path: Path) -> RoutingTable:
    return compile_source(config.read(path), path)


def compile_source(source: bytes, path: Path) -> RoutingTable:
    """The table of one read of the file: its content and its version come from the same bytes."""
    parsed = config.parse(config.decode(source, path), str(path))
    return compile_models(parsed, source)


def compile_models(
    parsed: config.ModelsFile, source: bytes, created: int | None = None
) -> RoutingTable:
    created = int(time.time()) if created is None else created
    canonical = {name: name for name in parsed.models}
    for name, spec in parsed.models.items():
        canonical.update((alias, name) for alias in spec.aliases)
    models = {
        name: _model(name, spec, created, canonical, parsed.pii)
        for name, spec in parsed.models.items()
    }
    _check_shared_queues(models)
    _check_reserved_queues(models)
    names = dict(models)
    for model in models.values():
        names.update((alias, model) for alias in model.aliases)
    version = int.from_bytes(hashlib.sha256(source).digest()[:7], "big")
    recognizers = [r.model_dump(exclude_defaults=True) for r in parsed.pii.recognizers]
    pii = PiiDetection(
        parsed.pii.min_score,
        json.dumps(recognizers, ensure_ascii=False) if recognizers else "",
        (*BUILT_IN_TYPES, *dict.fromkeys(r.type for r in parsed.pii.recognizers)),
    )
    return RoutingTable(version, MappingProxyType(models), MappingProxyType(names), pii)


def _model(
    name: str,
    spec: config.ModelFile,
    created: int,
    canonical: Mapping[str, str],  # every name and alias -> the model's name
    pii: config.PiiFile,
) -> Model:
    deployments = tuple(_deployment(name, i, d) for i, d in enumerate(spec.deployments))
    retry = Retry(**spec.retry.model_dump())
    return Model(
        name=name,
        aliases=tuple(spec.aliases),
        owned_by=spec.owned_by,
        created=created,
        timeout_seconds=spec.timeout_seconds,
        heartbeat_timeout_seconds=spec.heartbeat_timeout_seconds,
        queue_timeout_seconds=spec.queue_timeout_seconds,
        retry=retry,
        deployments=deployments,
        fallbacks=tuple(canonical[f] for f in spec.fallbacks),
        defaults=spec.defaults,
        system_prompt=spec.system_prompt,
        limits=spec.limits,
        pii=tuple(spec.pii if spec.pii is not None else pii.policy),
        pipeline=_pipeline(spec.pipeline, canonical) if spec.pipeline else None,
        engine_parameters=spec.engine_parameters,
    )


def _deployment(model: str, index: int, d: config.DeploymentFile) -> Deployment:
    endpoints = tuple(
        Endpoint(e.url, e.max_concurrency or d.max_concurrency, e.weight, e.drain)
        for e in d.replicas()
    )
    return Deployment(
        name=d.name or f"{model}-{index}",
        adapter=d.adapter,
        endpoint=endpoints[0].url,
        engine_model=d.engine_model or model,
        task_queue=d.task_queue or f"tiller.{d.name or f'{model}-{index}'}",
        max_concurrency=sum(e.max_concurrency for e in endpoints),
        model=model,
        resume=(d.resume or ("continue" if d.adapter == "vllm" else "none")) == "continue",
        options_json=json.dumps(d.options, sort_keys=True) if d.options else "",
        endpoints=endpoints,
        health=d.health,
    )


def _pipeline(spec: config.PipelineFile, canonical: Mapping[str, str]) -> Pipeline:
    named = spec.settings().named_models().values()
    steps = tuple(dict.fromkeys(canonical[m] for m in named))  # each model once, in order
    return Pipeline(spec.workflow, json.dumps(spec.options, sort_keys=True), steps)


def _check_shared_queues(models: dict[str, Model]) -> None:
    """A task queue is one worker pool; deployments sharing it must agree on its concurrency,
    and an endpoint two of them list is one engine, with one capacity."""
    limits: dict[str, tuple[int, str]] = {}
    capacities: dict[tuple[str, str, str], tuple[int, str]] = {}
    for model in models.values():
        for d in model.deployments:
            where = f"models.{model.name} deployment {d.name!r}"
            seen = limits.setdefault(d.task_queue, (d.max_concurrency, where))
            if seen[0] != d.max_concurrency:
                raise config.ConfigError(
                    f"task queue {d.task_queue!r}: max_concurrency {d.max_concurrency} in {where} "
                    f"differs from {seen[0]} in {seen[1]}"
                )
            for e in d.endpoints:
                key = (d.task_queue, d.adapter, e.url)
                known = capacities.setdefault(key, (e.max_concurrency, where))
                if known[0] != e.max_concurrency:
                    raise config.ConfigError(
                        f"task queue {d.task_queue!r}: endpoint {e.url!r} has max_concurrency "
                        f"{e.max_concurrency} in {where} but {known[0]} in {known[1]}"
                    )


def _check_reserved_queues(models: dict[str, Model]) -> None:
    for model in models.values():
        for d in model.deployments:
            if d.task_queue in (FAILOVER_TASK_QUEUE, PIPELINE_TASK_QUEUE):
                raise config.ConfigError(
                    f"models.{model.name} deployment {d.name!r}: task queue {d.task_queue!r} is "
                    "reserved for Tiller's failover and pipeline workflows; name the deployment "
                    "or its task_queue otherwise"
                )
