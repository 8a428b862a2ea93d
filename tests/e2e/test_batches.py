"""OpenAI's Batch API through the whole stack, with the official openai SDK: files in, a
batch workflow in Temporal, each line a live request of the batch's key, files out."""

from __future__ import annotations

import time
from typing import Any, Final, cast

import httpx
import openai
import orjson
import pytest

from tests.support import Stack

CHAT: Final = "/v1/chat/completions"


def chat_line(custom_id: str, text: str, model: str = "demo", **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(line) + b"\n" for line in lines)


def new_key(stack: Stack, **spec: Any) -> str:
    spec.setdefault("name", f"batch-{time.monotonic_ns()}")
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    reply = httpx.post(f"{stack.base_url[:-3]}/admin/keys", json=spec, headers=headers, timeout=30)
    assert reply.status_code == 201, reply.text
    secret: str = reply.json()["key"]
    return secret


def client_of(stack: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=30)


def wait_for_end(client: openai.OpenAI, batch_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {timeout} s")


def lines_of(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [orjson.loads(x) for x in client.files.content(file_id).read().splitlines()]


def usage_totals(stack: Stack, key: str) -> dict[str, int]:
    reply = httpx.get(
        f"{stack.base_url}/usage", headers={"authorization": f"Bearer {key}"}, timeout=30
    )
    totals: dict[str, int] = reply.json()["totals"]
    return totals


def test_a_batch_through_the_sdk_answers_every_line_once_and_charges_its_usage(
    stack: Stack,
) -> None:
    key = new_key(stack)
    lines = [chat_line(f"req-{i}", f"question number {i}") for i in range(40)]
    with client_of(stack, key) as client:
        upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id,
            endpoint=CHAT,
            completion_window="24h",
            metadata={"job": "nightly"},
        )
        assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
        done = wait_for_end(client, batch.id)
        assert done.status == "completed", done
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (40, 40)
        assert done.request_counts.failed == 0 and done.error_file_id is None
        assert done.in_progress_at and done.finalizing_at and done.completed_at
        output = lines_of(client, done.output_file_id)
        assert [o["custom_id"] for o in output] == [f"req-{i}" for i in range(40)]
        for i, o in enumerate(output):
            answer = o["response"]["body"]["choices"][0]["message"]["content"]
            assert answer == f"You said: question number {i}"
            assert o["response"]["status_code"] == 200
            assert o["response"]["request_id"].startswith("chatcmpl-")
        assert client.files.retrieve(done.output_file_id).purpose == "batch_output"
        assert [b.id for b in client.batches.list(limit=5)] == [batch.id]
    charged = {"prompt_tokens": 0, "completion_tokens": 0}
    for o in output:
        for name in charged:
            charged[name] += o["response"]["body"]["usage"][name]
    for _ in range(50):  # the last settlement may still be on its way
        totals = usage_totals(stack, key)
        if totals["requests"] == 40:
            break
        time.sleep(0.1)
    assert totals["requests"] == 40
    assert {k: totals[k] for k in charged} == charged


def test_each_endpoint_runs_as_a_batch(stack: Stack) -> None:
    bodies = {
        "/v1/completions": {"model": "demo", "prompt": "finish this", "max_tokens": 8},
        "/v1/embeddings": {"model": "demo", "input": ["one", "two"]},
        "/v1/responses": {"model": "demo", "input": "hello there"},
    }
    key = new_key(stack)
    with client_of(stack, key) as client:
        for endpoint, body in bodies.items():
            line = {"custom_id": "x", "method": "POST", "url": endpoint, "body": body}
            upload = client.files.create(file=("in.jsonl", jsonl([line])), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id,
                endpoint=cast(Any, endpoint),
                completion_window="24h",
            )
            done = wait_for_end(client, batch.id)
            assert done.status == "completed", (endpoint, done)
            (out,) = lines_of(client, done.output_file_id)
            reply = out["response"]["body"]
            kind = {"/v1/completions": "text_completion", "/v1/embeddings": "list"}
            assert reply["object"] == kind.get(endpoint, "response"), reply
            if endpoint == "/v1/embeddings":
                assert len(reply["data"]) == 2


def test_a_malformed_file_fails_validation_with_an_error_file_naming_the_lines(
    stack: Stack,
) -> None:
    lines = [
        orjson.dumps(chat_line("a", "fine")),
        b"{broken",
        orjson.dumps(chat_line("a", "the same id again")),
        orjson.dumps(chat_line("c", "no such model", model="no-such-model")),
        orjson.dumps({**chat_line("d", "x"), "url": "/v1/embeddings"}),
    ]
    with client_of(stack, new_key(stack)) as client:
        upload = client.files.create(file=("bad.jsonl", b"\n".join(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        done = wait_for_end(client, batch.id)
        assert done.status == "failed" and done.failed_at and done.output_file_id is None
        assert done.errors is not None and done.errors.data is not None
        assert [e.line for e in done.errors.data] == [2, 3, 4, 5]
        named = lines_of(client, done.error_file_id)
        assert [e["error"]["line"] for e in named] == [2, 3, 4, 5]
        assert named[2]["error"]["code"] == "model_not_found"
        assert named[1]["custom_id"] == "a" and "line 1" in named[1]["error"]["message"]


def test_a_line_naming_an_unknown_model_fails_the_file(stack: Stack) -> None:
    lines = [chat_line("a", "fine"), chat_line("b", "x", model="no-such-model")]
    with client_of(stack, new_key(stack)) as client:
        upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        done = wait_for_end(client, batch.id)
        assert done.status == "failed"
        (named,) = lines_of(client, done.error_file_id)
        assert named["custom_id"] == "b" and named["error"]["code"] == "model_not_found"


def test_cancel_mid_batch_keeps_the_lines_that_finished(stack: Stack) -> None:
    long = " ".join(["word"] * 150)  # the demo engine answers a token a millisecond
    lines = [chat_line(f"r{i}", long) for i in range(300)]
    with client_of(stack, new_key(stack)) as client:
        upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        deadline = time.monotonic() + 60
        while client.batches.retrieve(batch.id).request_counts.completed < 5:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status == "cancelling" and cancelling.cancelling_at
        done = wait_for_end(client, batch.id)
        assert done.status == "cancelled" and done.cancelled_at
        output = lines_of(client, done.output_file_id)
        counts = done.request_counts
        assert counts is not None and 5 <= counts.completed < 300
        assert len(output) == counts.completed
        assert len({o["custom_id"] for o in output}) == len(output)
        again = httpx.post(
            f"{stack.base_url}/batches/{batch.id}/cancel",
            headers={"authorization": f"Bearer {client.api_key}"},
        )
        assert again.status_code == 400 and "cancelled" in again.json()["error"]["message"]


def test_a_spent_budget_fails_lines_with_429_and_other_keys_cannot_see_the_batch(
    stack: Stack,
) -> None:
    key = new_key(stack, limits={"tokens_per_day": 60})
    lines = [chat_line(f"r{i}", "spend some tokens here", max_tokens=10) for i in range(12)]
    with client_of(stack, key) as client:
        upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        done = wait_for_end(client, batch.id)
    assert done.status == "completed"
    counts = done.request_counts
    assert counts is not None and counts.failed > 0 and counts.completed + counts.failed == 12
    with client_of(stack, key) as client:
        failed = lines_of(client, done.error_file_id)
    assert {f["response"]["status_code"] for f in failed} == {429}
    assert "budget" in failed[0]["response"]["body"]["error"]["message"].lower()
    with client_of(stack, new_key(stack)) as other:
        with pytest.raises(openai.NotFoundError):
            other.batches.retrieve(batch.id)
        with pytest.raises(openai.NotFoundError):
            other.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h")
    viewer = client_of(stack, new_key(stack, role="viewer"))
    with viewer, pytest.raises(openai.PermissionDeniedError):
        viewer.batches.create(input_file_id=upload.id, endpoint=CHAT, completion_window="24h")


def test_personal_data_in_a_line_is_masked_before_the_engine_and_the_files(stack: Stack) -> None:
    email, phone = "kim.minsu@example.co.kr", "010-1234-5678"
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.demo_port}", timeout=10) as engine:
        engine.delete("/received").raise_for_status()
        with client_of(stack, new_key(stack)) as client:
            line = chat_line("pii", f"mail {email}, phone {phone}")
            upload = client.files.create(file=("in.jsonl", jsonl([line])), purpose="batch")
            batch = client.batches.create(
                input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
            )
            done = wait_for_end(client, batch.id)
            (out,) = lines_of(client, done.output_file_id)
        sent = engine.get("/received").json()["data"]
    answer = out["response"]["body"]["choices"][0]["message"]["content"]
    assert answer == "You said: mail <EMAIL_1>, phone <PHONE_1>"  # the demo model masks
    assert sent and all(email not in str(r) and phone not in str(r) for r in sent)


def test_a_batch_whose_input_file_is_deleted_ends_instead_of_hanging(stack: Stack) -> None:
    lines = [chat_line(f"r{i}", "x") for i in range(20)]
    with client_of(stack, new_key(stack)) as client:
        upload = client.files.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h"
        )
        client.files.delete(upload.id)
        done = wait_for_end(client, batch.id, timeout=60)
        if done.status == "failed":  # the validation found the file gone
            named = lines_of(client, done.error_file_id)
            assert named[0]["error"]["code"] == "file_not_found"
        else:  # the validation read it first: its gateway kept its lines
            assert done.status == "completed", done
