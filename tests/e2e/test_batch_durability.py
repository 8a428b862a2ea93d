"""A batch outlives its processes: SIGKILL of the worker and of the gateway mid-batch, and a
restart of Temporal, on a stack of its own. The batch completes with every line answered exactly
once, and the key is charged exactly the usage its output lines report."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import httpx
import openai
import orjson

from tests.own_stack import OwnStack
from tests.support import wait_for

LINES = 240
TEXT = " ".join(f"w{i}" for i in range(60))  # about 60 ms of answer a line, at 1 ms a token


def counts(client: openai.OpenAI, batch_id: str) -> tuple[str, int]:
    batch = client.batches.retrieve(batch_id)
    assert batch.request_counts is not None
    return batch.status, batch.request_counts.completed + batch.request_counts.failed


def wait_until(client: openai.OpenAI, batch_id: str, answered: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, done = counts(client, batch_id)
        except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError):
            time.sleep(0.5)  # the gateway or Temporal is restarting
            continue
        if done >= answered or status in ("completed", "failed", "cancelled", "expired"):
            return status
        time.sleep(0.1)
    raise AssertionError(f"fewer than {answered} lines answered in {timeout} s")


def new_key(stack: OwnStack) -> str:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    reply = httpx.post(
        f"{stack.base_url[:-3]}/admin/keys", json={"name": "batch"}, headers=headers, timeout=30
    )
    assert reply.status_code == 201, reply.text
    time.sleep(1.5)  # past Redis's once-a-second fsync: the key survives what follows
    secret: str = reply.json()["key"]
    return secret


def test_a_batch_survives_sigkill_of_worker_and_gateway_and_a_temporal_restart(
    own_stack: OwnStack,
) -> None:
    stack = own_stack
    key = new_key(stack)
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "demo", "messages": [{"role": "user", "content": f"{i} {TEXT}"}]},
        }
        for i in range(LINES)
    ]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    client = openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0, timeout=10)
    upload = client.files.create(file=("in.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait_until(client, batch.id, LINES // 6, 60) == "in_progress"
    stack.kill("worker")
    stack.start("worker")
    assert wait_until(client, batch.id, LINES // 3, 120) == "in_progress"
    stack.kill("gateway")
    stack.start("gateway")
    assert wait_for(stack.ready, timeout=60)
    assert wait_until(client, batch.id, LINES // 2, 120) == "in_progress"
    stack.kill("temporal")
    stack.start("temporal")
    status = wait_until(client, batch.id, LINES + 1, 240)
    done = client.batches.retrieve(batch.id)
    assert status == "completed" and done.request_counts is not None, done
    assert (done.request_counts.completed, done.request_counts.failed) == (LINES, 0)
    output = [
        orjson.loads(x) for x in client.files.content(done.output_file_id or "").read().splitlines()
    ]
    ids = Counter(o["custom_id"] for o in output)
    assert ids == Counter(f"line-{i}" for i in range(LINES))  # each once, none missing
    for o in output:
        i = int(o["custom_id"].split("-")[1])
        assert o["response"]["body"]["choices"][0]["message"]["content"] == f"You said: {i} {TEXT}"
    charged: dict[str, Any] = {"requests": LINES, "prompt_tokens": 0, "completion_tokens": 0}
    for o in output:
        for name in ("prompt_tokens", "completion_tokens"):
            charged[name] += o["response"]["body"]["usage"][name]
    headers = {"authorization": f"Bearer {key}"}
    for _ in range(100):
        totals = httpx.get(f"{stack.base_url}/usage", headers=headers, timeout=10).json()["totals"]
        if totals["requests"] >= LINES:
            break
        time.sleep(0.1)
    assert {k: totals[k] for k in charged} == charged
