"""Every service of compose.yaml comes up healthy, and callers reach it through nginx as they
would: the official openai SDK on plain HTTP (8080) and on TLS (8443), and the Inference gRPC
service on 50051 and over TLS on 50443."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from tests.compose.stack import (
    GRPC,
    GRPC_TLS,
    HTTP,
    HTTPS,
    ONE_SHOT,
    SERVICES,
    Project,
    compose,
    containers,
)
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc


def test_every_service_is_up_and_healthy(project: Project) -> None:
    print("\n$ docker-compose ps\n" + compose("ps"))
    found = containers()
    assert {c.service for c in found} == set(SERVICES) | set(ONE_SHOT)
    for container in found:
        if container.service in ONE_SHOT:
            assert container.state == "exited", container  # done (dependants start only then)
            continue
        assert (container.state, container.health) == ("running", "healthy"), container


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello Tiller"}]


@pytest.fixture(params=[HTTP, HTTPS], ids=["http-8080", "https-8443"])
def client(project: Project, request: pytest.FixtureRequest) -> Iterator[OpenAI]:
    with project.openai(request.param) as client:
        yield client


def test_the_openai_sdk_through_nginx(client: OpenAI) -> None:
    reply = client.chat.completions.create(model="demo", messages=HELLO)
    assert reply.choices[0].message.content == "You said: Hello Tiller"

    stream = client.chat.completions.create(
        model="demo", messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "You said: Hello Tiller"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (2, 4)

    embeddings = client.embeddings.create(model="demo", input=["one", "two"])
    assert [e.index for e in embeddings.data] == [0, 1]
    assert len(embeddings.data[0].embedding) == 8  # the demo engine's vectors
    print(
        f"\n{client.base_url}: chat {reply.choices[0].message.content!r}; stream {text!r}, "
        f"then {usage}; embeddings {len(embeddings.data)} x {len(embeddings.data[0].embedding)}"
    )


@pytest.mark.parametrize("tls", [False, True], ids=["plain-50051", "tls-50443"])
def test_grpc_through_nginx(project: Project, tls: bool) -> None:
    if tls:
        credentials = grpc.ssl_channel_credentials(project.ca.read_bytes())
        channel = grpc.secure_channel(GRPC_TLS, credentials)
    else:
        channel = grpc.insecure_channel(GRPC)
    request = inference_pb2.GenerateRequest(
        model="demo", messages=[inference_pb2.ChatMessage(role="user", content="over gRPC")]
    )
    auth = (("authorization", f"Bearer {project.admin_key}"),)
    with channel:
        stub = inference_pb2_grpc.InferenceStub(channel)
        reply = stub.Generate(request, metadata=auth, timeout=30)
        streamed = "".join(c.delta for c in stub.GenerateStream(request, metadata=auth, timeout=30))
    assert reply.text == streamed == "You said: over gRPC"


def test_metrics_stay_inside(project: Project) -> None:
    assert httpx.get(f"{HTTP}/metrics").status_code == 404
    (gateway,) = [c for c in containers("gateway") if c.state == "running"][:1]
    assert "tiller_requests_total" in httpx.get(f"http://{gateway.ip}:8080/metrics").text
