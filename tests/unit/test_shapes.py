from __future__ import annotations

from tiller.contract.results import InferenceResult, Usage
from tiller.gateway import shapes


def test_completion_matches_openai_fields() -> None:
    body = shapes.completion("chatcmpl-1", "demo", 10, InferenceResult("hi", "stop", Usage(2, 1)))
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "hi", "refusal": None}
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}


def test_chunks_carry_usage_null_only_when_usage_was_asked_for() -> None:
    plain = shapes.chunk("c", "demo", 1, {"content": "x"})
    assert "usage" not in plain and plain["choices"][0]["finish_reason"] is None
    asked = shapes.chunk("c", "demo", 1, {"content": "x"}, with_usage_field=True)
    assert asked["usage"] is None
    last = shapes.usage_chunk("c", "demo", 1, Usage(3, 4))
    assert last["choices"] == [] and last["usage"]["total_tokens"] == 7


def test_reset_durations_use_openai_format() -> None:
    assert shapes.duration(0.02) == "20ms"
    assert shapes.duration(1.5) == "1.5s"
    assert shapes.duration(59.2) == "59.2s"
    assert shapes.duration(360) == "6m0s"


def test_a_worker_reads_a_newer_gateways_request() -> None:
    """Fields it does not know are dropped, not fatal (rolling upgrades in either order); a
    request from before requests were typed (messages beside prompt and inputs) still reads."""
    from tiller.contract.requests import Chat, InferenceInput

    data = {
        "request_id": "r",
        "model": "m",
        "messages": [{"role": "user", "content": "hi", "mood": "curious"}],
        "sampling": {},
        "stream": False,
        "target": {
            "deployment": "d",
            "adapter": "openai",
            "endpoint": "http://e/v1",
            "engine_model": "m",
            "task_queue": "q",
            "weight": 3,
        },
        "events_key": "k",
        "timeout_seconds": 1.0,
        "retry": {},
    }
    request = InferenceInput.from_dict(data)
    assert isinstance(request.ask, Chat) and request.target.deployment == "d"
    assert request.ask.messages[0].content == "hi"
