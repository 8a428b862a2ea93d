"""A router `Route` in the terms of a run (Target, Retry, Sampling): the gateway builds a
request's plan from it, and a pipeline's steps build theirs from their own model's route."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from tiller.contract.requests import (
    HEARTBEAT_TIMEOUT_SECONDS,
    QUEUE_TIMEOUT_SECONDS,
    SAMPLING_FIELDS,
    Message,
    Retry,
    Sampling,
    Target,
    known_fields,
)
from tiller.protos.router.v1 import router_pb2


def target_of(deployment: router_pb2.Deployment, model: str) -> Target:
    return Target(
        deployment=deployment.name,
        adapter=deployment.adapter,
        endpoint=deployment.endpoint,
        engine_model=deployment.engine_model,
        task_queue=deployment.task_queue,
        model=deployment.model or model,
        # Only the same model may continue a partial answer; a fallback starts afresh (before
        # the first token) or not at all.
        resume=deployment.resume and (deployment.model or model) == model,
        options=json.loads(deployment.options_json) if deployment.options_json else {},
    )


def targets_of(route: router_pb2.Route) -> list[Target]:
    """Every deployment the route may try, in order: its own, then its fallbacks'."""
    return [target_of(d, route.model) for d in (*route.deployments, *route.fallbacks)]


def retry_of(policy: router_pb2.RetryPolicy) -> Retry:
    return Retry(
        max_attempts=policy.max_attempts,
        initial_interval_seconds=policy.initial_interval_seconds,
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval_seconds=policy.maximum_interval_seconds,
    )


def retry_policy_of(retry: Retry) -> router_pb2.RetryPolicy:
    """The inverse of retry_of: a model's retry policy as the router sends it."""
    return router_pb2.RetryPolicy(**dataclasses.asdict(retry))


def heartbeat_timeout_of(route: router_pb2.Route) -> float:
    return route.heartbeat_timeout_seconds or HEARTBEAT_TIMEOUT_SECONDS  # 0: an older router


def queue_timeout_of(route: router_pb2.Route) -> float:
    return route.queue_timeout_seconds or QUEUE_TIMEOUT_SECONDS  # 0: an older router


DEFAULTABLE = tuple(name for name in SAMPLING_FIELDS if name != "stop")  # stop is a list


def defaults_of(defaults: router_pb2.SamplingDefaults) -> Sampling:
    """A model's sampling defaults (models.yaml); None (or no stop) where it sets none."""
    set_ = {name: getattr(defaults, name) for name in DEFAULTABLE if defaults.HasField(name)}
    return Sampling(**set_, stop=tuple(defaults.stop))


def filled(sampling: Sampling, defaults: Sampling) -> Sampling:
    """`sampling`, with `defaults` wherever it set nothing."""
    values = {
        name: getattr(defaults, name)
        for name in SAMPLING_FIELDS
        if getattr(sampling, name) in (None, ()) and getattr(defaults, name) not in (None, ())
    }
    return dataclasses.replace(sampling, **values) if values else sampling


def with_system_prompt(messages: tuple[Message, ...], system_prompt: str) -> tuple[Message, ...]:
    """The model's system prompt (models.yaml) first, unless the request brings its own."""
    if not system_prompt or any(m.role in ("system", "developer") for m in messages):
        return messages
    return (Message("system", system_prompt), *messages)


@dataclass(frozen=True)
class StepRoute:
    """What a pipeline's step needs of its model's route: the `tiller.pipeline.route`
    activity's result."""

    model: str
    targets: tuple[Target, ...]
    retry: Retry
    timeout_seconds: float
    heartbeat_timeout_seconds: float
    queue_timeout_seconds: float
    defaults: Sampling
    system_prompt: str

    @classmethod
    def of(cls, route: router_pb2.Route) -> StepRoute:
        return cls(
            model=route.model,
            targets=tuple(targets_of(route)),
            retry=retry_of(route.retry),
            timeout_seconds=route.timeout_seconds,
            heartbeat_timeout_seconds=heartbeat_timeout_of(route),
            queue_timeout_seconds=queue_timeout_of(route),
            defaults=defaults_of(route.defaults),
            system_prompt=route.system_prompt,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StepRoute:
        return cls(
            model=data["model"],
            targets=tuple(Target.from_dict(t) for t in data["targets"]),
            retry=Retry(**known_fields(Retry, data["retry"])),
            timeout_seconds=data["timeout_seconds"],
            heartbeat_timeout_seconds=data["heartbeat_timeout_seconds"],
            queue_timeout_seconds=data["queue_timeout_seconds"],
            defaults=Sampling.from_dict(data["defaults"]),
            system_prompt=data["system_prompt"],
        )
