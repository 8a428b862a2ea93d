"""The five hostile inputs of issue 19, sent to a stack of this checkout's code, with what each
got back: status, Content-Type, x-request-id, and the start of the body.

    ./dev shell tests/fuzz/reproductions.py

It starts a stack of its own (`tiller up` on free ports, as the tests do) and stops it after.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import grpc
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import TEST_MODELS, closed_port, stack_env, start_up, stop_up, wait_until_up
from tiller.protos.inference.v1 import inference_pb2, inference_pb2_grpc

CHAT = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}


def nested(depth: int) -> Any:
    value: Any = {"type": "string"}
    for _ in range(depth):
        value = {"type": "object", "properties": {"x": value}}
    return value


def show(name: str, response: httpx.Response | str) -> None:
    if isinstance(response, str):  # no answer at all
        print(f"  {name:46} {response}")
        return
    kind = response.headers.get("content-type", "-").split(";")[0]
    named = "x-request-id" if "x-request-id" in response.headers else "no x-request-id"
    body = response.content[:110].decode(errors="replace").replace("\n", " ")
    print(f"  {name:46} {response.status_code}  {kind:17} {named:16} {body}")


def main() -> None:
    with TemporaryDirectory() as data:
        env, ports = stack_env(Path(data))
        models = Path(data) / "models.yaml"
        models.write_text(TEST_MODELS.format(demo_port=ports["demo"], closed_port=closed_port()))
        process = start_up(env, "--models", str(models))
        output: list[str] = []
        try:
            wait_until_up(process, output)
            run(f"http://127.0.0.1:{ports['gateway']}", ports["grpc"], env["TILLER_ADMIN_KEY"])
        finally:
            stop_up(process)


def run(base: str, grpc_port: int, key: str) -> None:
    auth = {"authorization": f"Bearer {key}"}
    with httpx.Client(base_url=base, headers=auth, timeout=120) as http:

        def post(path: str, body: bytes, **headers: Any) -> httpx.Response | str:
            sent = {"content-type": "application/json", **headers}
            try:
                return http.post(path, content=body, headers=sent)
            except httpx.TransportError as error:
                return f"no answer: {type(error).__name__} {error}"

        print("1. a non-ASCII digit in x-tiller-priority (the byte 0xB2)")
        show(
            "chat, x-tiller-priority: \\xb2",
            post(
                "/v1/chat/completions", json.dumps(CHAT).encode(), **{"x-tiller-priority": b"\xb2"}
            ),
        )
        print("2. deep nesting")
        for where in ("tool_choice", "response_format", "tools"):
            for depth in (250, 480):
                body: dict[str, Any] = dict(CHAT)
                if where == "tools":
                    body["tools"] = [
                        {"type": "function", "function": {"name": "f", "parameters": nested(depth)}}
                    ]
                elif where == "response_format":
                    body["response_format"] = {
                        "type": "json_schema",
                        "json_schema": {"name": "s", "schema": nested(depth)},
                    }
                else:
                    body["tool_choice"] = nested(depth)
                show(
                    f"{where}, {depth} levels",
                    post("/v1/chat/completions", json.dumps(body).encode()),
                )
        print("3. bodies of 2-4 MB, under the 4 MiB limit")
        big = {"model": "demo", "messages": [{"role": "user", "content": "x" * 3_000_000}]}
        show("chat, 3 MB", post("/v1/chat/completions", json.dumps(big).encode()))
        euros = {"model": "demo", "input": "€" * 900_000}
        show(
            "embeddings, 900,000 euro signs (2.7 MB)",
            post("/v1/embeddings", json.dumps(euros, ensure_ascii=False).encode()),
        )
        print("4. a long model name")
        for length in (6_000, 10_000, 50_000):
            show(
                f"chat, model of {length:,} characters",
                post("/v1/chat/completions", json.dumps({**CHAT, "model": "m" * length}).encode()),
            )
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = inference_pb2_grpc.InferenceStub(channel)
            request = inference_pb2.GenerateRequest(
                model="m" * 10_000, messages=[inference_pb2.ChatMessage(role="user", content="hi")]
            )
            try:
                stub.Generate(request, metadata=(("authorization", f"Bearer {key}"),), timeout=30)
                print("  gRPC, model of 10,000 characters          OK")
            except grpc.RpcError as error:
                print(
                    f"  gRPC, model of 10,000 characters          {error.code().name}: {(error.details() or '')[:90]}"
                )
        print("5. POST /admin/codec/decode")
        sealed = {"encoding": "YmluYXJ5L2VuY3J5cHRlZA=="}  # binary/encrypted
        for name, payload in (
            (
                "data shorter than 12 bytes",
                {"metadata": {**sealed, "encryption-key-id": "dGVzdC0x"}, "data": "YWJj"},
            ),
            (
                "a key id that is not UTF-8",
                {
                    "metadata": {**sealed, "encryption-key-id": "/w=="},
                    "data": "YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo=",
                },
            ),
            (
                "data that is not base64",
                {"metadata": {"encoding": "anNvbi9wbGFpbg=="}, "data": "!!!not base64!!!"},
            ),
        ):
            show(name, post("/admin/codec/decode", json.dumps({"payloads": [payload]}).encode()))


if __name__ == "__main__":
    main()
