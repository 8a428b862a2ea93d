"""How a pipeline's step request is built from the caller's request and the step model's route:
only the final step streams, to the client's stream, with the caller's sampling and the usage of
the steps before it."""

from __future__ import annotations

import dataclasses

from tiller.contract.requests import Chat, InferenceInput, Message, Retry, Sampling, Target
from tiller.contract.results import Usage
from tiller.contract.routes import StepRoute
from tiller.pipelines.steps import Steps

CALLER = InferenceInput(
    request_id="chatcmpl-1",
    model="careful",
    ask=Chat((Message("user", "Hi"),)),
    sampling=Sampling(max_tokens=50, temperature=0.0),
    stream=True,
    target=Target("pipeline:draft-then-refine", "pipeline", "", "", "tiller.pipelines"),
    events_key="tiller:events:chatcmpl-1",
    pipeline="draft-then-refine",
    pipeline_options={"draft": "fast", "refine": "strong"},
)
ROUTE = StepRoute(
    model="strong",
    targets=(
        Target("strong-a", "vllm", "http://a/v1", "s", "q.a", "strong", resume=True),
        Target("strong-b", "vllm", "http://b/v1", "s", "q.b", "strong", resume=True),
    ),
    retry=Retry(max_attempts=5),
    timeout_seconds=30.0,
    heartbeat_timeout_seconds=4.0,
    queue_timeout_seconds=6.0,
    defaults=Sampling(max_tokens=10, temperature=0.7, top_p=0.9, stop=("END",)),
    system_prompt="Be strong.",
)


def steps() -> Steps:
    made = Steps(dataclasses.asdict(CALLER))
    made.spent = Usage(7, 11)
    return made


def test_an_intermediate_step_is_private_unstreamed_and_uses_its_models_settings() -> None:
    step = steps()._input("draft", ROUTE, [Message("user", "Draft it")], final=False)
    assert step.events_key == "tiller:events:chatcmpl-1:draft"  # no client reads it
    assert not step.stream and not any(t.resume for t in step.targets)
    assert step.sampling == ROUTE.defaults  # the caller's max_tokens shapes its answer only
    assert step.spent == Usage()
    assert [t.deployment for t in step.targets] == ["strong-a", "strong-b"]
    assert (step.retry, step.timeout_seconds, step.queue_timeout_seconds) == (
        ROUTE.retry, 30.0, 6.0,
    )  # fmt: skip
    assert step.ask == Chat((Message("system", "Be strong."), Message("user", "Draft it")))
    assert step.pipeline == "" and step.request_id == "chatcmpl-1"  # cancels reach it


def test_the_final_step_streams_to_the_client_with_its_sampling_and_the_usage_so_far() -> None:
    step = steps()._input(
        "rewrite", ROUTE, [Message("system", "Mine"), Message("user", "Go")], True
    )
    assert step.events_key == CALLER.events_key and step.stream
    assert [t.resume for t in step.targets] == [True, True]
    # The caller's values stand (temperature 0 too); the model's fill what it left unset.
    assert step.sampling == Sampling(max_tokens=50, temperature=0.0, top_p=0.9, stop=("END",))
    assert step.spent == Usage(7, 11)
    assert isinstance(step.ask, Chat)
    assert step.ask.messages[0] == Message("system", "Mine")  # its own system message is kept
