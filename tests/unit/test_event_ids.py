"""Event-stream helpers: ordering of stream ids and merging of deltas."""

from __future__ import annotations

from tiller.common.events import CLAIM, DELTA, DONE, Delivered, Event, coalesce, newer


def delta(entry_id: str, text: str) -> Event:
    return Event(entry_id, DELTA, {"text": text})


def test_stream_ids_order_numerically() -> None:
    assert newer("1700000000001-0", "1700000000000-5")
    assert newer("10-2", "10-10") is False
    assert newer("10-10", "10-2")
    assert newer("5-0", "0")


def test_runs_of_deltas_merge_and_keep_the_last_id() -> None:
    done = Event("4-0", DONE, {"result": {}})
    merged = coalesce([delta("1-0", "a"), delta("2-0", "b"), delta("3-0", "c"), done])
    assert merged == [Event("3-0", DELTA, {"text": "abc", "n": 3}), done]
    assert coalesce([delta("1-0", "x")]) == [delta("1-0", "x")]
    assert coalesce([]) == []


def test_claims_carry_no_answer_and_are_dropped() -> None:
    claim = Event("2-0", CLAIM, {})
    assert coalesce([claim]) == []
    merged = coalesce([delta("1-0", "a"), claim, delta("3-0", "b")])
    assert merged == [Event("3-0", DELTA, {"text": "ab", "n": 2})]


def test_a_delta_without_text_still_counts_as_delivered() -> None:
    """A tool call or another choice's chunk has no `text`: a retry must not send it again."""
    call = [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]
    delivered = Delivered.of([Event("1-0", DELTA, {"text": "", "n": 1, "c": [call]})])
    assert delivered.any and delivered.text == ""
    assert not Delivered.of([]).any
