"""classify-then-generate with a real classifier: pytriton's Triton serves `tiny-topic`
(tests/engines/triton_server.py), whose label picks the model and system prompt that answer
(the demo engine, under the route's system prompt). The whole stack in front, the openai SDK as
the client, the steps read back from Temporal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from tests.engines.conftest import TritonServer
from tests.support import (
    TEST_MODELS,
    closed_port,
    stack_env,
    start_up,
    stop_up,
    wait_until_up,
)
from tiller.common.payload_codec import PayloadKeys
from tiller.common.temporal import sealed_converter

PIPELINE_MODELS = """\
  topic:  # a real Triton classifier: answers `code`, `billing` or `general`
    deployments:
      - name: topic-triton
        adapter: triton
        endpoint: {triton}
        engine_model: tiny-topic
        task_queue: engines.triton
        options:
          inputs: {{prompt: text_input}}
          outputs: {{text: text_output}}
          prompt_template: {{message: "{{content}}", suffix: ""}}
  support:
    pipeline:
      workflow: classify-then-generate
      options:
        classifier: topic
        default: general
        routes:
          code: {{model: reviewer, system: You are a senior engineer. Answer with code.}}
          billing: {{model: demo, system: You handle billing questions. Be kind.}}
          general: {{model: demo}}
"""


@dataclass
class PipelineStack:
    base_url: str
    key: str
    demo_port: int
    temporal_address: str
    payload_keys: str


@pytest.fixture(scope="module")
def stack(
    triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PipelineStack]:
    data_dir = tmp_path_factory.mktemp("pipeline-stack")
    env, ports = stack_env(data_dir)
    models = data_dir / "models.yaml"
    models.write_text(
        TEST_MODELS.format(demo_port=ports["demo"], closed_port=closed_port())
        + PIPELINE_MODELS.format(triton=triton_server.grpc)
    )
    process = start_up(env, "--models", str(models))
    wait_until_up(process, [])
    try:
        yield PipelineStack(
            f"http://127.0.0.1:{ports['gateway']}/v1",
            env["TILLER_ADMIN_KEY"],
            ports["demo"],
            f"127.0.0.1:{ports['temporal']}",
            env["TILLER_PAYLOAD_KEYS"],
        )
    finally:
        stop_up(process)


async def activity_ids(stack: PipelineStack, request_id: str) -> list[str]:
    client = await Client.connect(
        stack.temporal_address,
        data_converter=sealed_converter(PayloadKeys.parse(stack.payload_keys)),
    )
    handle = client.get_workflow_handle(request_id)
    await handle.result()  # closed: every step's events are written
    history = await handle.fetch_history()
    return [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]


@pytest.mark.parametrize(
    ("question", "label", "answered_by", "system"),
    [
        (
            "My python function raises a TypeError",
            "code",
            "reviewer-local",
            "You are a senior engineer. Answer with code.",
        ),
        (
            "I was charged twice on my last invoice",
            "billing",
            "demo-local",
            "You handle billing questions. Be kind.",
        ),
        ("What a lovely morning", "general", "demo-local", None),
    ],
)
async def test_the_triton_classifiers_label_picks_the_model_and_system_prompt(
    stack: PipelineStack, question: str, label: str, answered_by: str, system: str | None
) -> None:
    async with openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.key, max_retries=0
    ) as client:
        raw = await client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": question}], stream=True
        )
        chunks = [chunk async for chunk in raw.parse()]
    pieces = [
        c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content
    ]
    # Streamed by the demo engine, not one block: its first token goes out alone, and the rest
    # in the worker's appends (one every TILLER_WORKER_STREAM_INTERVAL_SECONDS at most).
    assert "".join(pieces) == f"You said: {question}" and len(pieces) >= 2
    ids = await activity_ids(stack, raw.headers["x-request-id"])
    assert ids == [
        "route@topic",
        "classify@topic-triton",
        f"route@{'reviewer' if label == 'code' else 'demo'}",
        f"answer-{label}@{answered_by}",
    ]
    async with httpx.AsyncClient() as http:
        received = (await http.get(f"http://127.0.0.1:{stack.demo_port}/received")).json()
    sent = next(
        r["body"]["messages"]
        for r in reversed(received["data"])
        if r["body"]["messages"][-1]["content"] == question
    )
    assert (sent[0]["content"] if sent[0]["role"] == "system" else None) == system
    print(f"\n{question!r} -> {label}: {ids}")
