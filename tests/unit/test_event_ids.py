"""Event-stream helpers: ordering of stream ids, merging of deltas, and the events' wire form."""

from __future__ import annotations

import orjson
import pytest

from tiller.common.errors import RateLimited
from tiller.contract.answer_stream import Delivered, coalesce, newer
from tiller.contract.events import Claim, Delta, Done, Failed, decode, encode, with_id
from tiller.contract.results import InferenceResult, Usage


def delta(entry_id: str, text: str) -> Delta:
    return Delta(text, 1, (), entry_id)


def test_stream_ids_order_numerically() -> None:
    assert newer("1700000000001-0", "1700000000000-5")
    assert newer("10-2", "10-10") is False
    assert newer("10-10", "10-2")
    assert newer("5-0", "0")


def test_runs_of_deltas_merge_and_keep_the_last_id() -> None:
    done = Done(InferenceResult("abc", "stop", Usage()), "4-0")
    merged = coalesce([delta("1-0", "a"), delta("2-0", "b"), delta("3-0", "c"), done])
    assert merged == [Delta("abc", 3, (), "3-0"), done]
    assert coalesce([delta("1-0", "x")]) == [delta("1-0", "x")]
    assert coalesce([]) == []


def test_claims_carry_no_answer_and_are_dropped() -> None:
    claim = Claim("2-0")
    assert coalesce([claim]) == []
    merged = coalesce([delta("1-0", "a"), claim, delta("3-0", "b")])
    assert merged == [Delta("ab", 2, (), "3-0")]


def test_a_delta_without_text_still_counts_as_delivered() -> None:
    """A tool call or another choice's chunk has no `text`: a retry must not send it again."""
    call = [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}}]
    delivered = Delivered.of([Delta("", 1, (call,), "1-0")])
    assert delivered.any and delivered.text == ""
    assert not Delivered.of([]).any


def test_each_event_decodes_to_what_was_encoded() -> None:
    call = [{"index": 0, "delta": {"content": "hi"}}]
    result = InferenceResult("hi", "stop", Usage(3, 1), "d", "m", None, [{"index": 0}])
    for event in (
        Delta("hi", 2, (call,)),
        Delta("", 1),
        Done(result),
        Claim(),
    ):
        assert decode("7-1", encode(event)) == with_id(event, "7-1")
    failed = decode("8-0", encode(Failed(RateLimited("slow down", retry_after=2), Usage(5, 6))))
    assert isinstance(failed, Failed) and failed.id == "8-0"
    assert isinstance(failed.error, RateLimited) and failed.error.retry_after == 2
    assert failed.spent == Usage(5, 6)
    assert failed.exception() is not failed.error  # readers each raise their own


def test_the_wire_form_is_the_one_earlier_versions_read_and_wrote() -> None:
    """Rolling upgrades: a gateway and a worker of different versions share a stream."""
    assert orjson.loads(encode(Delta("a", 2))) == {"kind": "delta", "text": "a", "n": 2}
    assert orjson.loads(encode(Claim())) == {"kind": "claim"}
    error = orjson.loads(encode(Failed(RateLimited("x"), Usage(1, 2))))
    assert error["kind"] == "error" and error["error"]["reason"] == "RateLimited"
    assert error["error"]["spent"] == {"prompt_tokens": 1, "completion_tokens": 2}
    earlier = b'{"kind": "delta", "text": "a"}'  # no token count: one
    assert decode("1-0", earlier) == Delta("a", 1, (), "1-0")
    with pytest.raises(ValueError, match="unknown event kind"):
        decode("1-0", b'{"kind": "nonsense"}')
