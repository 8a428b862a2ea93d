"""What Temporal stores of a request is sealed: read back raw (a client without the key, as the
Temporal UI or CLI would), neither the prompt nor the answer appears, for a standalone activity
(one deployment) and for the failover workflow's history; with the key, the prompt is there."""

from __future__ import annotations

import secrets

import httpx
from temporalio.api.workflowservice.v1 import DescribeActivityExecutionRequest
from temporalio.client import Client

from tests.support import Stack, temporal_client


async def ask(stack: Stack, model: str, marker: str) -> tuple[str, str]:
    """The request id and the answer of a chat whose prompt carries `marker`."""
    body = {"model": model, "messages": [{"role": "user", "content": f"secret {marker}"}]}
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        reply = await http.post("/chat/completions", json=body, headers=headers)
    assert reply.status_code == 200, reply.text
    return reply.headers["x-request-id"], reply.json()["choices"][0]["message"]["content"]


async def test_an_activitys_input_and_result_are_sealed(stack: Stack) -> None:
    marker = secrets.token_hex(8)
    request_id, answer = await ask(stack, "demo", marker)
    assert marker in answer  # the demo engine echoes it: the answer carries it too
    raw = await Client.connect(stack.temporal_address)  # no key: what Temporal holds
    description = await raw.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace="default", activity_id=request_id, include_input=True, include_outcome=True
        )
    )
    stored = description.SerializeToString()
    assert len(stored) > 200 and marker.encode() not in stored
    assert b"binary/encrypted" in stored
    opened = await (await temporal_client(stack)).get_activity_handle(request_id).result()
    assert marker in opened["text"]  # with the key, it opens
    print(f"\nactivity {request_id}: {len(stored)} bytes stored, the prompt's marker in none")


async def test_a_failover_workflows_history_is_sealed(stack: Stack) -> None:
    marker = secrets.token_hex(8)
    request_id, _ = await ask(stack, "failover", marker)
    raw = await Client.connect(stack.temporal_address)
    history = await raw.get_workflow_handle(request_id).fetch_history()
    stored = history.to_json().encode()
    assert len(history.events) > 4 and marker.encode() not in stored
    assert b"binary/encrypted" in stored or b"YmluYXJ5L2VuY3J5cHRlZA" in stored
    print(f"\nworkflow {request_id}: {len(history.events)} events, the prompt's marker in none")
