"""A router `Route` in the worker's terms (Target, Sampling, Retry): the gateway builds a
request's plan from it, and a pipeline's steps build theirs from their own model's route."""

from __future__ import annotations

import dataclasses
import json

from tiller.protos.router.v1 import router_pb2
from tiller.worker.shared import SAMPLING_FIELDS, Message, Retry, Sampling, Target


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


def retry_of(policy: router_pb2.RetryPolicy) -> Retry:
    return Retry(
        max_attempts=policy.max_attempts,
        initial_interval_seconds=policy.initial_interval_seconds,
        backoff_coefficient=policy.backoff_coefficient,
        maximum_interval_seconds=policy.maximum_interval_seconds,
    )


def with_defaults(sampling: Sampling, defaults: router_pb2.SamplingDefaults) -> Sampling:
    """The request's sampling, with the model's defaults (models.yaml) where it set nothing."""
    return filled(sampling, defaults_of(defaults))


def defaults_of(defaults: router_pb2.SamplingDefaults) -> Sampling:
    """A model's sampling defaults (models.yaml); None (or no stop) where it sets none."""
    set_ = {name: getattr(defaults, name) for name in DEFAULTABLE if defaults.HasField(name)}
    return Sampling(**set_, stop=list(defaults.stop))


def filled(sampling: Sampling, defaults: Sampling) -> Sampling:
    """`sampling`, with `defaults` wherever it set nothing."""
    values = {
        name: getattr(defaults, name)
        for name in SAMPLING_FIELDS
        if getattr(sampling, name) in (None, []) and getattr(defaults, name) not in (None, [])
    }
    return dataclasses.replace(sampling, **values) if values else sampling


DEFAULTABLE = tuple(name for name in SAMPLING_FIELDS if name != "stop")  # stop is a list


def with_system_prompt(messages: list[Message], system_prompt: str) -> list[Message]:
    """The model's system prompt (models.yaml) first, unless the request brings its own."""
    if not system_prompt or any(m.role in ("system", "developer") for m in messages):
        return messages
    return [Message("system", system_prompt), *messages]
