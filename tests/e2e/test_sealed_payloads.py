"""What Temporal stores of a request is sealed: read back raw (a client without the key, as the
Temporal UI or CLI would), neither the prompt nor the answer appears, for a standalone activity
(one deployment) and for the failover workflow's history; with the key, the prompt is there."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess

import httpx
from temporalio.api.workflowservice.v1 import DescribeActivityExecutionRequest
from temporalio.client import Client

from tests.support import Stack, temporal_client
from tiller.cli.processes import find_binary


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


async def test_on_call_opens_a_history_with_the_admin_key_through_the_codec_endpoint(
    stack: Stack,
) -> None:
    """`temporal workflow show` with the gateway as its remote codec: readable, and masked."""
    marker = secrets.token_hex(8)
    body = {
        "model": "failover",
        "messages": [{"role": "user", "content": f"call 010-1234-5678 about {marker}"}],
    }
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60) as http:
        reply = await http.post("/chat/completions", json=body, headers=headers)
        assert reply.status_code == 200, reply.text
        request_id = reply.headers["x-request-id"]
        member = await http.post(
            f"http://127.0.0.1:{stack.gateway_port}/admin/keys",
            json={"name": "codec-member"},
            headers=headers,
        )
    show = [
        find_binary("", "temporal", ""),
        "workflow",
        "show",
        "--workflow-id",
        request_id,
        "--address",
        stack.temporal_address,
        "--output",
        "json",
    ]
    sealed = payload_texts(
        subprocess.run(show, capture_output=True, text=True, timeout=60, check=True).stdout
    )
    assert sealed and all(encoding == "binary/encrypted" for encoding, _ in sealed)
    codec = ["--codec-endpoint", f"http://127.0.0.1:{stack.gateway_port}/admin/codec"]
    opened = " ".join(
        data
        for _, data in payload_texts(
            subprocess.run(
                [*show, *codec, "--codec-auth", f"Bearer {stack.admin_key}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            ).stdout
        )
    )
    assert marker in opened  # readable with the admin key...
    assert "<PHONE_1>" in opened and "010-1234-5678" not in opened  # ...and masked all along
    refused = subprocess.run(
        [*show, *codec, "--codec-auth", f"Bearer {member.json()['key']}"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and marker not in refused.stdout + refused.stderr
    print(f"\n{request_id}: sealed without the codec; opened with it, the phone number masked")


def payload_texts(history_json: str) -> list[tuple[str, str]]:
    """Every payload in a `temporal workflow show --output json`: its encoding and its data."""
    found: list[tuple[str, str]] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "data" in node and isinstance(node.get("metadata"), dict):
                encoding = base64.b64decode(node["metadata"].get("encoding", "")).decode()
                data = base64.b64decode(node["data"])
                found.append((encoding, data.decode(errors="replace")))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(json.loads(history_json))
    return found
