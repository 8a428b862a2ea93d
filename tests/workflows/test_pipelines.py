"""Every shipped pipeline's workflow, on stand-in engines and a stand-in router (catalog.py):
which steps ran on which deployments, what each was asked, what the run returned or raised, and
what the pipeline itself published to the client's stream.

The stand-in engines report each answer's usage (its words): what a later step or an error
says was spent is checked against what the earlier steps' answers reported."""

from __future__ import annotations

import time
from typing import Any

from temporalio.client import Client

from tests.workflows import catalog
from tests.workflows.scenarios import Run, play


def error_published(run: Run) -> dict[str, Any]:
    """The one thing the pipeline published: an error for the client's stream."""
    (published,) = run.published
    assert published["events_key"] == f"tiller:events:{run.handle.id}"
    error: dict[str, Any] = published["error"]
    return error


# --- summarize-then-answer --------------------------------------------------------------------


async def test_summarize_then_answer_answers_the_last_message_with_the_summary(
    client: Client,
) -> None:
    run = await play(client, catalog.SUMMARIZE_THEN_ANSWER)
    assert run.own.resolved == ["small", "big"]
    assert run.tried == [("summarize", "small-a", 1), ("answer", "big-a", 1)]
    summarize = run.asked("summarize")
    assert summarize.messages == [
        ("user", "Summarize:\nuser: My name is Ada.\nassistant: Hello Ada.")
    ]
    # An intermediate step writes a stream of its own, unstreamed, and cannot be continued.
    assert summarize.events_key == "tiller:events:summarize-then-answer:summarize"
    assert (summarize.stream, summarize.resumable) == (False, [False])
    answer = run.asked("answer")
    assert answer.messages == [
        ("system", "The conversation so far, summarized: The user is Ada."),
        ("user", "What is my name?"),
    ]
    assert answer.events_key == "tiller:events:summarize-then-answer"
    assert (answer.stream, answer.resumable) == (True, [True])
    assert answer.spent == run.used("summarize@small-a")  # charged with the answer
    assert run.result is not None
    assert (run.result["text"], run.result["deployment"]) == ("Your name is Ada.", "big-a")
    assert run.published == []  # the final step streams to the client itself


async def test_a_step_model_the_router_does_not_know_fails_the_run_and_tells_the_client(
    client: Client,
) -> None:
    run = await play(client, catalog.SUMMARIZE_UNKNOWN_MODEL)
    assert run.own.resolved == ["small", "gone"]
    assert run.tried == [("summarize", "small-a", 1)]
    error = error_published(run)
    assert (error["reason"], error["message"]) == (
        "ModelNotFound",
        "The model `gone` does not exist.",
    )
    assert error["spent"] == run.used("summarize@small-a")  # it ran: the key pays for it
    assert run.failure_chain()[-1] == "ModelNotFound: The model `gone` does not exist."


# --- draft-then-refine ------------------------------------------------------------------------


async def test_draft_then_refine_drafts_critiques_and_rewrites(client: Client) -> None:
    run = await play(client, catalog.DRAFT_THEN_REFINE)
    assert run.own.resolved == ["fast", "strong"]  # once per model, though strong runs twice
    assert run.tried == [
        ("draft", "fast-a", 1),
        ("draft", "fast-a", 2),
        ("draft", "fast-b", 1),  # the draft's model failed over to its next deployment
        ("critique", "strong-a", 1),
        ("rewrite", "strong-a", 1),
    ]
    assert run.asked("draft").messages == [("user", "Why is the sky blue?")]
    critique = run.asked("critique")
    assert critique.messages[0][0] == "system"  # the critique prompt, not the model's own
    assert critique.messages[1] == (
        "user",
        "Question:\nWhy is the sky blue?\n\nDraft answer:\nBecause of scattering.",
    )
    assert critique.resumable == [False, False] and not critique.stream
    rewrite = run.asked("rewrite")
    assert rewrite.messages[1] == (
        "user",
        "Question:\nWhy is the sky blue?\n\nDraft answer:\nBecause of scattering.\n\n"
        "Critique:\nIt does not say which scattering.",
    )
    assert (rewrite.resumable, rewrite.stream, rewrite.next_deployments) == (
        [True, True],
        True,
        ["strong-b"],
    )
    assert rewrite.spent == run.used("draft@fast-b", "critique@strong-a")
    assert run.result is not None
    assert run.result["text"] == "Rayleigh scattering favours short wavelengths."
    assert run.published == []


async def test_a_failing_intermediate_step_is_published_with_what_the_steps_spent(
    client: Client,
) -> None:
    run = await play(client, catalog.DRAFT_THEN_REFINE_CRITIQUE_FAILS)
    assert run.tried == [("draft", "fast-a", 1), ("critique", "strong-a", 1)]  # no rewrite
    error = error_published(run)
    assert (error["reason"], error["message"]) == (
        "InvalidRequest",
        "The critique is too long for `strong`.",
    )
    assert error["spent"] == run.used("draft@fast-a")
    assert run.failure_chain()[-1] == "InvalidRequest: The critique is too long for `strong`."


# --- classify-then-generate -------------------------------------------------------------------


async def test_the_classifiers_label_picks_the_model_and_its_system_prompt(
    client: Client,
) -> None:
    run = await play(client, catalog.CLASSIFY_CODE)
    assert run.own.resolved == ["topic", "coder"]
    assert run.tried == [("classify", "topic-a", 1), ("answer-code", "coder-a", 1)]
    assert run.asked("classify").messages == [("user", "Show me a loop in Python.")]
    # The route's system prompt replaces the caller's.
    assert run.asked("answer-code").messages == [
        ("system", "You write code."),
        ("user", "Show me a loop in Python."),
    ]
    assert run.result is not None and run.result["text"] == "for i in range(3): ..."


async def test_without_a_label_the_default_route_answers_the_conversation_as_sent(
    client: Client,
) -> None:
    run = await play(client, catalog.CLASSIFY_DEFAULT)
    assert run.tried == [("classify", "topic-a", 1), ("answer-general", "chat-a", 1)]
    assert run.asked("answer-general").messages == [
        ("system", "Be kind."),
        ("user", "Show me a loop in Python."),
    ]
    assert run.result is not None and run.result["text"] == "Here is a loop."


# --- fan-out-merge ----------------------------------------------------------------------------


async def test_fan_out_asks_every_model_at_once_and_merges_their_answers_in_order(
    client: Client,
) -> None:
    run = await play(client, catalog.FAN_OUT_MERGE)
    assert sorted(run.own.resolved) == ["one", "three", "two"]  # `one` once, for two steps
    asks = {(step, deployment) for step, deployment, _ in run.tried[:3]}
    assert asks == {("ask-1", "one-a"), ("ask-2", "two-a"), ("ask-3", "three-a")}
    for step in ("ask-1", "ask-2", "ask-3"):
        assert run.asked(step).messages == [("user", "Name a prime.")]
    # At once: every ask resolves its model before any activity of the run has completed.
    events = await run.activity_events()
    first_completed = next(i for i, (what, _) in enumerate(events) if what == "completed")
    scheduled = [name for what, name in events[:first_completed] if what == "scheduled"]
    assert scheduled == ["route@one", "route@two", "route@three"]
    assert run.tried[-1] == ("merge", "one-a", 1)
    assert run.asked("merge").messages[1] == (
        "user",
        "Question:\nName a prime.\n\nAnswer 1:\n2\n\nAnswer 2:\n3\n\nAnswer 3:\n5",
    )
    assert run.result is not None and run.result["text"] == "2, 3 and 5 are primes."


async def test_the_first_failing_model_cancels_the_others_and_fails_the_run(
    client: Client,
) -> None:
    run = await play(client, catalog.FAN_OUT_ONE_FAILS)
    assert {step for step, _, _ in run.tried} == {"ask-1", "ask-2", "ask-3"}  # no merge
    events = await run.activity_events()
    assert ("cancel_requested", "ask-1@one-a") in events
    assert ("cancel_requested", "ask-3@three-a") in events
    assert {call.activity_id for call in run.engines.cancelled} == {"ask-1@one-a", "ask-3@three-a"}
    error = error_published(run)  # once, though three steps ended
    assert (error["reason"], error["message"]) == ("InvalidRequest", "`two` refuses the question.")
    assert run.failure_chain()[-1] == "InvalidRequest: `two` refuses the question."


# --- human-approval ---------------------------------------------------------------------------

DRAFT = "Your refund is on its way."


def answer_published(run: Run) -> dict[str, Any]:
    (published,) = run.published
    assert published["events_key"] == f"tiller:events:{run.handle.id}"
    result: dict[str, Any] = published["result"]
    assert run.result == result  # the run returns what it sent
    return result


async def test_an_approved_draft_is_sent_whole_to_the_client(client: Client) -> None:
    run = await play(client, catalog.APPROVED)
    assert run.tried == [("draft", "writer-a", 1)]
    assert run.observed == {"draft": DRAFT}  # the reviewer read it with the `draft` query
    result = answer_published(run)
    assert (result["text"], result["finish_reason"], result["model"]) == (
        DRAFT,
        "stop",
        "human-approval-model",
    )
    assert result["usage"] == run.used("draft@writer-a")


async def test_a_reviewers_edit_is_sent_instead_of_the_draft(client: Client) -> None:
    run = await play(client, catalog.APPROVED_EDITED)
    assert answer_published(run)["text"] == "Your refund was sent today."


async def test_a_rejected_draft_fails_the_run_with_the_reviewers_reason(client: Client) -> None:
    run = await play(client, catalog.REJECTED)
    error = error_published(run)
    assert (error["reason"], error["message"]) == (
        "NotApproved",
        "The reviewer rejected the answer: too risky.",
    )
    assert error["spent"] == run.used("draft@writer-a")
    assert run.failure_chain()[-1] == "NotApproved: The reviewer rejected the answer: too risky."


async def test_no_decision_in_time_times_the_approval_out(client: Client) -> None:
    began = time.monotonic()
    run = await play(client, catalog.APPROVAL_TIMED_OUT)
    assert time.monotonic() - began < 10  # the test server skipped the 30 s
    assert await run.timers() == ["started", "fired"]
    error = error_published(run)
    assert (error["reason"], error["message"]) == (
        "ApprovalTimedOut",
        "No reviewer approved the answer within 30 seconds.",
    )
    assert run.failure_chain()[-1] == (
        "ApprovalTimedOut: No reviewer approved the answer within 30 seconds."
    )
