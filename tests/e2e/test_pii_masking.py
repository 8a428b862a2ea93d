"""Personal data is masked before anything leaves the gateway: the demo engine records exactly
what it was sent (GET /received), and Temporal's stored copy holds neither the originals nor
any plaintext. Under mask+restore the caller gets the originals back, whole and streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import httpx
import openai
import pytest
from temporalio.api.workflowservice.v1 import DescribeActivityExecutionRequest
from temporalio.client import Client

from tests.support import Stack, temporal_client
from tiller.common.grpc_client import channel
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

RRN, PHONE, EMAIL, CARD = (
    "900101-1234567",
    "010-1234-5678",
    "kim.minsu@example.co.kr",
    "4111-1111-1111-1111",
)
PROMPT = f"제 주민번호는 {RRN}, 휴대폰 {PHONE}, 메일 {EMAIL}, 카드 {CARD} 입니다."
MASKED = "제 주민번호는 <KR_RRN_1>, 휴대폰 <PHONE_1>, 메일 <EMAIL_1>, 카드 <CARD_1> 입니다."
ORIGINALS = (RRN, PHONE, EMAIL, CARD)


@pytest.fixture
def client(stack: Stack) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stack.base_url, api_key=stack.admin_key, max_retries=0) as client:
        yield client


@pytest.fixture
def engine(stack: Stack) -> Iterator[httpx.Client]:
    """The demo engine itself, emptied of what earlier tests sent it."""
    with httpx.Client(base_url=f"http://127.0.0.1:{stack.demo_port}", timeout=10) as http:
        http.delete("/received").raise_for_status()
        yield http


def received(engine: httpx.Client) -> list[dict[str, Any]]:
    return [r["body"] for r in engine.get("/received").json()["data"]]


def sent_text(body: dict[str, Any]) -> str:
    """Every text of one request the engine got, as JSON (contents, arguments, prompt, input)."""
    return json.dumps(body, ensure_ascii=False)


def chat(client: openai.OpenAI, model: str, **asked: Any) -> Any:
    create: Any = client.chat.completions.create  # its overloads do not follow **asked
    return create(model=model, messages=[{"role": "user", "content": PROMPT}], **asked)


def test_the_engine_sees_placeholders_and_the_caller_its_originals(
    client: openai.OpenAI, engine: httpx.Client
) -> None:
    answer = chat(client, "private").choices[0].message.content
    [body] = received(engine)
    assert body["messages"] == [{"role": "user", "content": MASKED}]
    assert answer == f"You said: {PROMPT}"
    print(f"\nengine received: {body['messages'][0]['content']}\nclient got:      {answer}")

    stream = chat(client, "private", stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert "".join(pieces) == f"You said: {PROMPT}"
    assert not any("<" in p for p in pieces)  # no placeholder, whole or in part, reached it
    [_, streamed_body] = received(engine)
    assert streamed_body["messages"][0]["content"] == MASKED
    print(f"streamed ({len(pieces)} chunks): {''.join(pieces)}")


def test_mask_keeps_the_placeholders_in_the_answer(
    client: openai.OpenAI, engine: httpx.Client
) -> None:
    answer = chat(client, "demo").choices[0].message.content
    assert answer == f"You said: {MASKED}"
    assert sent_text(received(engine)[0]).count("<") == 4


def test_off_sends_the_prompt_as_it_is(client: openai.OpenAI, engine: httpx.Client) -> None:
    chat(client, "raw")
    assert received(engine)[0]["messages"][0]["content"] == PROMPT


def test_block_names_the_types_and_sends_nothing(
    client: openai.OpenAI, engine: httpx.Client
) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        chat(client, "guarded")
    error = refused.value.body
    assert isinstance(error, dict) and error["code"] == "pii_detected"
    assert "CARD, KR_RRN" in error["message"]
    assert not any(v in error["message"] for v in ORIGINALS)
    answer = client.chat.completions.create(
        model="guarded", messages=[{"role": "user", "content": f"call {PHONE}"}]
    )
    assert answer.choices[0].message.content == "You said: call <PHONE_1>"  # masked, not blocked
    assert [sent_text(b) for b in received(engine)] == [sent_text(received(engine)[0])]


def test_every_text_the_engine_sees_is_masked(
    client: openai.OpenAI, engine: httpx.Client, stack: Stack
) -> None:
    client.chat.completions.create(
        model="demo",
        messages=[
            {"role": "system", "content": f"Escalate to {EMAIL}."},
            {
                "role": "user",
                "name": EMAIL,  # the engine sees a message's name too
                "content": [{"type": "text", "text": f"my card {CARD}"}],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps({"rrn": RRN})},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": f"phone {PHONE}"},
        ],
    )
    client.completions.create(model="demo", prompt=f"Complete: {PHONE}")
    client.embeddings.create(model="demo", input=[f"mail {EMAIL}", "plain"])
    sent = [sent_text(b) for b in received(engine)]
    assert len(sent) == 3
    for text in sent:
        assert not any(v in text for v in ORIGINALS), text
    assert json.loads(
        json.loads(sent[0])["messages"][2]["tool_calls"][0]["function"]["arguments"]
    ) == {"rrn": "<KR_RRN_1>"}
    assert json.loads(sent[2])["input"] == ["mail <EMAIL_1>", "plain"]


def test_a_tool_calls_arguments_are_restored(client: openai.OpenAI, engine: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "echo", "parameters": {"type": "object"}}}]
    forced = {"type": "function", "function": {"name": "echo"}}
    whole = chat(client, "private", tools=tools, tool_choice=forced)
    arguments = whole.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"said": f"You said: {PROMPT}"}
    completions: Any = client.chat.completions
    with completions.stream(
        model="private",
        messages=[{"role": "user", "content": PROMPT}],
        tools=tools,
        tool_choice=forced,
    ) as stream:
        final = stream.get_final_completion()
    streamed = final.choices[0].message.tool_calls[0].function.arguments
    assert json.loads(streamed) == {"said": f"You said: {PROMPT}"}
    assert all(MASKED in sent_text(b) for b in received(engine))


def test_a_keys_policy_adds_to_the_models(
    client: openai.OpenAI, engine: httpx.Client, stack: Stack
) -> None:
    admin = {"authorization": f"Bearer {stack.admin_key}"}
    created = httpx.post(
        f"http://127.0.0.1:{stack.gateway_port}/admin/keys",
        json={"name": "no-mail", "pii": {"mode": "block", "types": ["EMAIL"]}},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    assert created.json()["pii"] == {"mode": "block", "types": ["EMAIL"]}
    key = created.json()["key"]
    for bad in ("hide", {"mode": "mask", "types": ["CRAD"]}, {"mode": 3}):
        refused = httpx.post(
            f"http://127.0.0.1:{stack.gateway_port}/admin/keys",
            json={"name": "bad-pii", "pii": bad},
            headers=admin,
        )
        assert refused.status_code == 400 and "pii" in refused.json()["error"]["message"]
    with openai.OpenAI(base_url=stack.base_url, api_key=key, max_retries=0) as own:
        with pytest.raises(openai.BadRequestError, match="EMAIL"):
            chat(own, "raw")  # the model masks nothing; the key blocks email
        reply = own.chat.completions.create(
            model="raw", messages=[{"role": "user", "content": f"call {PHONE}"}]
        )
    assert reply.choices[0].message.content == f"You said: call {PHONE}"


def test_background_is_refused_when_originals_would_be_restored(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="background"):
        chat(client, "private", extra_body={"background": True})
    done = chat(client, "demo", extra_body={"background": True})  # mask: nothing to keep
    assert done.id


@pytest.fixture
async def stub(stack: Stack) -> AsyncIterator[inference_pb2_grpc.InferenceStub]:
    async with channel(f"127.0.0.1:{stack.grpc_port}") as ch:
        yield inference_pb2_grpc.InferenceStub(ch)


async def test_grpc_requests_are_masked_and_restored(
    stack: Stack, stub: inference_pb2_grpc.InferenceStub, engine: httpx.Client
) -> None:
    auth = (("authorization", f"Bearer {stack.admin_key}"),)
    message = inference_pb2.ChatMessage(role="user", content=PROMPT)
    reply = await stub.Generate(
        inference_pb2.GenerateRequest(model="private", messages=[message]),
        metadata=auth,
        timeout=30,
    )
    assert reply.text == f"You said: {PROMPT}"
    chunks = [
        c
        async for c in stub.GenerateStream(
            inference_pb2.GenerateRequest(model="private", messages=[message]),
            metadata=auth,
            timeout=30,
        )
    ]
    assert "".join(c.delta for c in chunks) == reply.text
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Generate(
            inference_pb2.GenerateRequest(model="guarded", messages=[message]),
            metadata=auth,
            timeout=30,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert all(sent_text(b).count(MASKED) == 1 for b in received(engine))


async def test_temporal_stores_neither_the_originals_nor_plaintext(
    stack: Stack, client: openai.OpenAI
) -> None:
    reply = chat(client, "private").model_dump()
    request_id = reply["id"]
    raw = await Client.connect(stack.temporal_address)  # no key: what Temporal holds
    description = await raw.workflow_service.describe_activity_execution(
        DescribeActivityExecutionRequest(
            namespace="default", activity_id=request_id, include_input=True, include_outcome=True
        )
    )
    stored = description.SerializeToString()
    for plain in (*ORIGINALS, "주민번호", "You said", "<KR_RRN_1>"):
        assert plain.encode() not in stored, plain
    opened = await (await temporal_client(stack)).get_activity_handle(request_id).result()
    assert opened["text"] == f"You said: {MASKED}"  # with the key: placeholders only
    print(
        f"\nactivity {request_id}: {len(stored)} bytes stored; no original, no plaintext;"
        f"\nopened with the key: {opened['text']}"
    )
