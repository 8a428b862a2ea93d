"""The router over real gRPC, and its refusal to start on a bad models.yaml."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.support import free_port, internal_channel, tls_dir_of_tests
from tiller.common.errors import ModelNotFound, TillerError
from tiller.protos.router.v1 import router_pb2, router_pb2_grpc
from tiller.router.server import create_server
from tiller.router.settings import RouterSettings

MODELS = """\
models:
  chat:
    aliases: [chat-latest, assistant]
    deployments:
      - name: primary
        adapter: vllm
        endpoint: http://engine:8000/v1
        engine_model: org/chat-7b
        task_queue: tiller.chat
        max_concurrency: 8
"""


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[router_pb2_grpc.RouterStub]:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS)
    settings = RouterSettings(
        port=free_port(), models_file=str(models), internal_tls_dir=tls_dir_of_tests()
    )
    server, _ = create_server(settings)
    await server.start()
    async with internal_channel(server.address, "router", "gateway") as ch:
        yield router_pb2_grpc.RouterStub(ch)
    await server.stop(0)


async def test_an_alias_resolves_to_the_model_route(router: router_pb2_grpc.RouterStub) -> None:
    route = await router.Resolve(router_pb2.ResolveRequest(model="assistant"), timeout=5)
    assert (route.model, route.requested) == ("chat", "assistant")
    deployment = route.deployments[0]
    assert (deployment.adapter, deployment.engine_model) == ("vllm", "org/chat-7b")
    assert (deployment.task_queue, deployment.max_concurrency) == ("tiller.chat", 8)
    assert route.retry.max_attempts == 3 and route.config_version > 0


async def test_an_unknown_model_is_not_found_with_its_reason(
    router: router_pb2_grpc.RouterStub,
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await router.Resolve(router_pb2.ResolveRequest(model="gpt-5"), timeout=5)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    error = TillerError.from_grpc(caught.value)
    assert type(error) is ModelNotFound and error.param == "model"


async def test_list_models(router: router_pb2_grpc.RouterStub) -> None:
    listing = await router.ListModels(router_pb2.ListModelsRequest(), timeout=5)
    assert [(m.id, list(m.aliases)) for m in listing.models] == [
        ("chat", ["chat-latest", "assistant"])
    ]


def test_an_invalid_file_stops_start_up_with_a_clear_message(tmp_path: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(MODELS.replace("adapter: vllm", "adapter: tensorrt"))
    result = subprocess.run(
        [sys.executable, "-m", "tiller.router"],
        env={"TILLER_ROUTER_MODELS_FILE": str(models), "TILLER_ROUTER_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("tiller router: invalid models file:")
    assert (
        "models.yaml:6: models.chat.deployments[0].adapter: unknown adapter 'tensorrt'"
        in result.stderr
    )
