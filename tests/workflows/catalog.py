"""Every workflow scenario, by name: the tests run them and assert what happened, and
record_histories.py records each one's history for the replay test (histories/<name>.json).

A scenario's name is its workflow id and its history's file name: renaming one orphans its
history. Inputs stay small (one or three messages, two or three deployments), so a recorded
history shows the workflow's decisions, not payload.
"""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import WorkflowHandle

from tests.workflows.scenarios import (
    FAILOVER_WORKFLOW,
    Drive,
    EngineError,
    EngineUnavailable,
    Hang,
    InvalidRequest,
    OnceHanging,
    Scenario,
    Script,
    Silent,
    StepRoute,
    chat_request,
    deployment,
    model_route,
    pipeline_request,
    pipeline_workflow,
)

# --- the failover workflow: model `m` on deployments a, b, then fallback model `fb` on c ------

A, B, C = deployment("a", "m"), deployment("b", "m"), deployment("c", "fb")
DOWN = EngineUnavailable("The model engine is unavailable.")


def failover(
    name: str, script: Script | None = None, unpolled: frozenset[str] = frozenset(), **request: Any
) -> Scenario:
    return Scenario(
        name,
        FAILOVER_WORKFLOW,
        chat_request(name, "m", "Why is the sky blue?", [A, B, C], **request),
        script=script or {},
        unpolled=unpolled,
    )


FAILOVER_FIRST_ANSWERS = failover("failover-first-answers")
FAILOVER_RETRYABLE = failover("failover-retryable-error-moves-on", {"a": [DOWN, DOWN]})
FAILOVER_ENGINE_ERROR = failover(
    "failover-engine-error-moves-on-at-once",
    {"a": [EngineError("The model engine returned 404 for `m`.")]},
)
FAILOVER_HEARTBEAT_TIMEOUT = failover(
    "failover-heartbeat-timeout-moves-on",
    {"a": [Silent(), Silent()]},
    heartbeat_timeout_seconds=1.0,  # real seconds: the test server skips no time under it
)
FAILOVER_QUEUE_TIMEOUT = failover(
    "failover-queue-timeout-moves-on",
    unpolled=frozenset({"a"}),  # no worker polls a's queue
    queue_timeout_seconds=1.0,  # real seconds, as above
)
FAILOVER_INVALID_REQUEST = failover(
    "failover-invalid-request-stops",
    {"a": [InvalidRequest("This model's maximum context length is 8 tokens.")]},
)
FAILOVER_TO_FALLBACK = failover(
    "failover-reaches-the-fallback-model", {"a": [DOWN, DOWN], "b": [DOWN, DOWN]}
)
FAILOVER_ALL_FAIL = failover(
    "failover-every-deployment-fails",
    {"a": [DOWN, DOWN], "b": [DOWN, DOWN], "c": [EngineUnavailable("The last one is down.")] * 2},
)

# --- pipelines ---------------------------------------------------------------------------------


def pipeline(
    name: str,
    workflow: str,
    options: dict[str, Any],
    messages: list[tuple[str, str]],
    routes: dict[str, StepRoute],
    script: Script | None = None,
    drive: Drive | None = None,
) -> Scenario:
    return Scenario(
        name,
        pipeline_workflow(workflow),
        pipeline_request(name, workflow, options, messages),
        script=script or {},
        routes=routes,
        drive=drive,
    )


CHAT = [("user", "My name is Ada."), ("assistant", "Hello Ada."), ("user", "What is my name?")]
SUMMARIZE = {"summarize": "small", "answer": "big"}
SMALL_AND_BIG = {"small": model_route("small", "small-a"), "big": model_route("big", "big-a")}
SUMMARIZE_THEN_ANSWER = pipeline(
    "summarize-then-answer",
    "summarize-then-answer",
    SUMMARIZE,
    CHAT,
    SMALL_AND_BIG,
    {"summarize@small-a": ["The user is Ada."], "answer@big-a": ["Your name is Ada."]},
)
SUMMARIZE_UNKNOWN_MODEL = pipeline(
    "summarize-then-answer-unknown-model",
    "summarize-then-answer",
    {"summarize": "small", "answer": "gone"},
    CHAT,
    SMALL_AND_BIG,
    {"summarize@small-a": ["The user is Ada."]},
)

QUESTION = [("user", "Why is the sky blue?")]
REFINE = {"draft": "fast", "refine": "strong"}
FAST_AND_STRONG = {
    "fast": model_route("fast", "fast-a", "fast-b"),
    "strong": model_route("strong", "strong-a", "strong-b", system_prompt="Be exact."),
}
DRAFT_THEN_REFINE = pipeline(
    "draft-then-refine",
    "draft-then-refine",
    REFINE,
    QUESTION,
    FAST_AND_STRONG,
    {
        "draft@fast-a": [DOWN, DOWN],  # the draft's model fails over to its second deployment
        "draft@fast-b": ["Because of scattering."],
        "critique@strong-a": ["It does not say which scattering."],
        "rewrite@strong-a": ["Rayleigh scattering favours short wavelengths."],
    },
)
DRAFT_THEN_REFINE_CRITIQUE_FAILS = pipeline(
    "draft-then-refine-critique-fails",
    "draft-then-refine",
    REFINE,
    QUESTION,
    FAST_AND_STRONG,
    {
        "draft@fast-a": ["Because of scattering."],
        "critique@strong-a": [InvalidRequest("The critique is too long for `strong`.")],
    },
)

CLASSIFY = {
    "classifier": "topic",
    "default": "general",
    "routes": {
        "code": {"model": "coder", "system": "You write code."},
        "general": {"model": "chat"},
    },
}
TOPIC_CODER_CHAT = {
    "topic": model_route("topic", "topic-a"),
    "coder": model_route("coder", "coder-a"),
    "chat": model_route("chat", "chat-a"),
}
SYSTEM_AND_QUESTION = [("system", "Be kind."), ("user", "Show me a loop in Python.")]
CLASSIFY_CODE = pipeline(
    "classify-then-generate-code",
    "classify-then-generate",
    CLASSIFY,
    SYSTEM_AND_QUESTION,
    TOPIC_CODER_CHAT,
    {"classify@topic-a": ["Label: CODE."], "answer-code@coder-a": ["for i in range(3): ..."]},
)
CLASSIFY_DEFAULT = pipeline(
    "classify-then-generate-default",
    "classify-then-generate",
    CLASSIFY,
    SYSTEM_AND_QUESTION,
    TOPIC_CODER_CHAT,
    {"classify@topic-a": ["I cannot tell."], "answer-general@chat-a": ["Here is a loop."]},
)

PANEL = {"models": ["one", "two", "three"], "merge": "one"}
ONE_TWO_THREE = {name: model_route(name, f"{name}-a") for name in ("one", "two", "three")}
FAN_OUT_MERGE = pipeline(
    "fan-out-merge",
    "fan-out-merge",
    PANEL,
    [("user", "Name a prime.")],
    ONE_TWO_THREE,
    {
        "ask-1@one-a": ["2"],
        "ask-2@two-a": ["3"],
        "ask-3@three-a": ["5"],
        "merge@one-a": ["2, 3 and 5 are primes."],
    },
)
FAN_OUT_ONE_FAILS = pipeline(
    "fan-out-merge-one-fails",
    "fan-out-merge",
    PANEL,
    [("user", "Name a prime.")],
    ONE_TWO_THREE,
    {
        "ask-1@one-a": [Hang()],
        "ask-2@two-a": [OnceHanging(2, InvalidRequest("`two` refuses the question."))],
        "ask-3@three-a": [Hang()],
    },
)


async def draft_when_ready(handle: WorkflowHandle[Any, Any]) -> str:
    """The `draft` query, asked until the draft step has answered."""
    async with asyncio.timeout(10):
        while (draft := await handle.query("draft")) is None:
            await asyncio.sleep(0.02)
    return str(draft)


def decide(decision: dict[str, Any] | None) -> Drive:
    """The reviewer: reads the draft, then signals `approve` (or, for None, never does)."""

    async def drive(handle: WorkflowHandle[Any, Any]) -> dict[str, Any]:
        draft = await draft_when_ready(handle)
        if decision is not None:
            await handle.signal("approve", decision)
        return {"draft": draft}

    return drive


def approval(name: str, decision: dict[str, Any] | None) -> Scenario:
    return pipeline(
        name,
        "human-approval",
        {"draft": "writer", "approval_timeout_seconds": 30},
        [("user", "Write a refund notice.")],
        {"writer": model_route("writer", "writer-a")},
        {"draft@writer-a": ["Your refund is on its way."]},
        decide(decision),
    )


APPROVED = approval("human-approval-approved", {"approved": True})
APPROVED_EDITED = approval(
    "human-approval-edited", {"approved": True, "text": "Your refund was sent today."}
)
REJECTED = approval("human-approval-rejected", {"approved": False, "reason": "too risky"})
APPROVAL_TIMED_OUT = approval("human-approval-timed-out", None)

ALL: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        FAILOVER_FIRST_ANSWERS,
        FAILOVER_RETRYABLE,
        FAILOVER_ENGINE_ERROR,
        FAILOVER_HEARTBEAT_TIMEOUT,
        FAILOVER_QUEUE_TIMEOUT,
        FAILOVER_INVALID_REQUEST,
        FAILOVER_TO_FALLBACK,
        FAILOVER_ALL_FAIL,
        SUMMARIZE_THEN_ANSWER,
        SUMMARIZE_UNKNOWN_MODEL,
        DRAFT_THEN_REFINE,
        DRAFT_THEN_REFINE_CRITIQUE_FAILS,
        CLASSIFY_CODE,
        CLASSIFY_DEFAULT,
        FAN_OUT_MERGE,
        FAN_OUT_ONE_FAILS,
        APPROVED,
        APPROVED_EDITED,
        REJECTED,
        APPROVAL_TIMED_OUT,
    )
}
