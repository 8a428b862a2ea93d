"""The failover workflow (`tiller.failover`): one request on each deployment in turn, moving on
only when another engine may succeed where this one failed. Model `m` has deployments a and b,
then the fallback model `fb` has c (catalog.py); the engines are stand-ins."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client

from tests.workflows import catalog
from tests.workflows.scenarios import play

# The catalog's failover requests: a 30 s attempt, 10 s heartbeat, 2 attempts (the tests below
# count them) with at most 0.2 s of backoff, 60 s in the queue: the deployment's bound is
# 60 + 2 * (30 + 0.2) seconds.
ATTEMPT = timedelta(seconds=30)
DEPLOYMENT_BOUND = timedelta(seconds=60 + 2 * 30.2)


async def test_the_first_deployment_that_answers_ends_the_request(client: Client) -> None:
    run = await play(client, catalog.FAILOVER_FIRST_ANSWERS)
    assert run.tried == [("", "a", 1)]
    assert run.result is not None
    assert (run.result["text"], run.result["deployment"], run.result["model"]) == (
        "a: Why is the sky blue?",
        "a",
        "m",
    )
    (call,) = run.engines.calls
    # The attempt knows its place in the plan (its fence, and whether it may continue).
    assert (call.task_queue, call.target_index, call.next_deployments) == ("test.a", 0, ["b", "c"])
    assert call.messages == [("user", "Why is the sky blue?")]
    assert (call.start_to_close, call.heartbeat_timeout) == (ATTEMPT, timedelta(seconds=10))
    assert call.schedule_to_close == DEPLOYMENT_BOUND


async def test_a_retryable_error_is_retried_then_the_next_deployment_gets_the_request(
    client: Client,
) -> None:
    run = await play(client, catalog.FAILOVER_RETRYABLE)
    assert run.tried == [("", "a", 1), ("", "a", 2), ("", "b", 1)]
    second = run.engines.calls[-1]
    assert (second.task_queue, second.target_index, second.next_deployments) == (
        "test.b",
        1,
        ["c"],
    )
    assert second.messages == run.engines.calls[0].messages
    assert run.result is not None and run.result["deployment"] == "b"


async def test_an_error_only_this_deployment_has_moves_on_without_retrying_it(
    client: Client,
) -> None:
    # EngineError (a misconfigured deployment) is not retryable, but may fail over.
    run = await play(client, catalog.FAILOVER_ENGINE_ERROR)
    assert run.tried == [("", "a", 1), ("", "b", 1)]
    assert run.result is not None and run.result["deployment"] == "b"


async def test_a_lost_heartbeat_times_the_deployment_out_and_the_next_one_answers(
    client: Client,
) -> None:
    run = await play(client, catalog.FAILOVER_HEARTBEAT_TIMEOUT)
    assert run.tried == [("", "a", 1), ("", "a", 2), ("", "b", 1)]
    events = await run.activity_events()
    assert ("timed_out:HEARTBEAT", "1") in events  # the first deployment's activity
    assert run.result is not None and run.result["deployment"] == "b"


async def test_a_deployment_nobody_picks_up_in_time_is_skipped(client: Client) -> None:
    run = await play(client, catalog.FAILOVER_QUEUE_TIMEOUT)
    assert run.tried == [("", "b", 1)]  # a's queue has no worker
    assert ("timed_out:SCHEDULE_TO_START", "1") in await run.activity_events()
    assert run.result is not None and run.result["deployment"] == "b"


async def test_an_error_no_engine_can_fix_ends_the_request_on_the_first_deployment(
    client: Client,
) -> None:
    run = await play(client, catalog.FAILOVER_INVALID_REQUEST)
    assert run.tried == [("", "a", 1)]
    assert run.result is None
    assert run.failure_chain()[-1] == (
        "InvalidRequest: This model's maximum context length is 8 tokens."
    )


async def test_the_fallback_models_deployments_come_last(client: Client) -> None:
    run = await play(client, catalog.FAILOVER_TO_FALLBACK)
    assert run.tried == [("", "a", 1), ("", "a", 2), ("", "b", 1), ("", "b", 2), ("", "c", 1)]
    last = run.engines.calls[-1]
    assert (last.target_index, last.next_deployments) == (2, [])
    # The last place to go may first wait for its unreachable engine, up to the queue timeout
    # (60 s), and still has its whole attempt to answer; the others fail over at once.
    assert last.start_to_close == ATTEMPT + timedelta(seconds=60)
    assert run.engines.calls[0].start_to_close == ATTEMPT
    assert run.result is not None
    assert (run.result["deployment"], run.result["model"]) == ("c", "fb")


async def test_when_every_deployment_fails_the_request_fails_with_the_last_error(
    client: Client,
) -> None:
    run = await play(client, catalog.FAILOVER_ALL_FAIL)
    assert [(d, n) for _, d, n in run.tried] == [
        ("a", 1), ("a", 2), ("b", 1), ("b", 2), ("c", 1), ("c", 2),
    ]  # fmt: skip
    assert run.result is None
    assert run.failure_chain()[-1] == "EngineUnavailable: The last one is down."
