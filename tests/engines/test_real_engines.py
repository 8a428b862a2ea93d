"""Tiller in front of real engines: vLLM on CPU, Triton (pytriton's), the TGI stand-in and the
demo engine, all through the whole stack (`tiller up`) with the official openai SDK.

The same SDK calls (tests/engines/sdk_script.py) go to every engine, only the model name
changes; then error mapping against real vLLM: an over-long prompt is the client's 400 with
vLLM's reason, and a killed vLLM is retried, then answered by the fallback model. Part of the
real-engine tier (./dev test-engines): the engines need cached environments of their own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.engines import sdk_script, tgi_standin, vllm_server
from tests.engines.conftest import TritonServer
from tests.support import (
    ROOT,
    TEST_MODELS,
    closed_port,
    free_port,
    stack_env,
    start_up,
    stop_up,
    wait_for,
    wait_until_up,
)

ENGINE_MODELS = """\
  vllm-tiny:  # real vLLM, a tiny random Llama: gibberish, but the protocol is real
    retry: {{max_attempts: 2, initial_interval_seconds: 0.2, maximum_interval_seconds: 0.5}}
    deployments:
      - name: vllm-cpu
        adapter: vllm
        endpoint: {vllm_url}
        engine_model: tiny-llama
        task_queue: engines.vllm
        max_concurrency: 8
        options: {{api_key_env: VLLM_TIER_API_KEY}}  # vLLM runs with --api-key
    fallbacks: [demo]
  vllm-tiny-alone:  # the same engine with no fallback: its failures reach the client
    retry: {{max_attempts: 2, initial_interval_seconds: 0.2, maximum_interval_seconds: 0.5}}
    queue_timeout_seconds: 3  # how long a request waits for its engine once vLLM is killed
    deployments:
      - name: vllm-cpu-alone
        adapter: vllm
        endpoint: {vllm_url}
        engine_model: tiny-llama
        task_queue: engines.vllm-alone
        max_concurrency: 8
        options: {{api_key_env: VLLM_TIER_API_KEY}}
  vllm-tiny-keyless:  # the same engine without its key: refused by vLLM
    deployments:
      - name: vllm-cpu-keyless
        adapter: vllm
        endpoint: {vllm_url}
        engine_model: tiny-llama
        task_queue: engines.vllm-keyless
  vllm-tiny-strict:  # the same engine, taking only the parameters Tiller reads
    engine_parameters: refuse
    deployments:
      - name: vllm-cpu-strict
        adapter: vllm
        endpoint: {vllm_url}
        engine_model: tiny-llama
        task_queue: engines.vllm-strict
        options: {{api_key_env: VLLM_TIER_API_KEY}}
  vllm-pair:  # two vLLM servers of the same model, replicas behind one deployment
    deployments:
      - name: vllm-pair
        adapter: vllm
        endpoints:
          - {{url: {vllm_url}, max_concurrency: 4}}
          - {{url: {vllm_replica_url}, max_concurrency: 4}}
        engine_model: tiny-llama
        task_queue: engines.vllm-pair
        options: {{api_key_env: VLLM_TIER_API_KEY}}
  vllm-tiny-embed:
    deployments:
      - name: vllm-cpu-pooling
        adapter: vllm
        endpoint: {vllm_embed_url}
        engine_model: tiny-llama
        task_queue: engines.vllm-embed
  triton-text:
    deployments:
      - name: triton-tiny-text
        adapter: triton
        endpoint: {triton}
        engine_model: tiny-text
        task_queue: engines.triton
        options:
          inputs: {{prompt: text_input, max_tokens: max_tokens}}
          outputs: {{text: text_output, completion_tokens: completion_tokens}}
          prompt_template: {{message: "{{content}}\\n", suffix: ""}}
  triton-stream:
    deployments:
      - name: triton-tiny-stream
        adapter: triton
        endpoint: grpc://{triton}
        engine_model: tiny-stream
        task_queue: engines.triton
        options:
          decoupled: true
          inputs: {{prompt: text_input, max_tokens: max_tokens}}
          outputs: {{text: text_output}}
          prompt_template: {{message: "{{content}}\\n", suffix: ""}}
  triton-embed:
    deployments:
      - name: triton-tiny-embed
        adapter: triton
        endpoint: {triton}
        engine_model: tiny-embed
        task_queue: engines.triton
        options:
          inputs: {{prompt: text_input}}
          outputs: {{embedding: embedding}}
  tgi-standin:  # the TGI stand-in (tests/engines/tgi_standin.py), not TGI
    deployments:
      - name: tgi-standin
        adapter: tgi
        endpoint: {tgi_url}
        engine_model: tgi
        task_queue: engines.tgi
"""


# The generation server's key: the worker reads it from the variable its deployments name.
VLLM_KEY = "tier-" + secrets.token_hex(8)


@dataclass
class Engines:
    base_url: str
    key: str
    vllm: vllm_server.VllmServer
    vllm_replica: vllm_server.VllmServer  # a second generation server: vllm-pair's other half


@dataclass
class VllmServers:
    generation: vllm_server.VllmServer
    replica: vllm_server.VllmServer  # the same model and flags as `generation`
    pooling: vllm_server.VllmServer


@pytest.fixture(scope="module")
def vllm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServers]:
    python = os.environ.get("TILLER_VLLM_PYTHON")
    if not python:
        pytest.fail("TILLER_VLLM_PYTHON is not set: run the tier with ./dev test-engines")
    model_dir = vllm_server.ensure_model(python=python)
    logs = tmp_path_factory.mktemp("vllm")

    def generation(name: str) -> vllm_server.VllmServer:
        key = ("--api-key", VLLM_KEY)
        return vllm_server.launch(
            model_dir, free_port(), python=python, log_path=logs / name, extra_args=key
        )

    # All three start at once: on 2 cores, sooner than one after another.
    servers = VllmServers(
        generation=generation("gen.log"),
        replica=generation("replica.log"),
        pooling=vllm_server.launch(
            model_dir, free_port(), python=python, embeddings=True, log_path=logs / "embed.log"
        ),
    )
    every = (servers.generation, servers.replica, servers.pooling)
    try:
        began = time.monotonic()
        for server in every:
            server.wait_ready()
        print(f"\nvLLM: 3 servers ready in {time.monotonic() - began:.1f} s")
        yield servers
    finally:
        for server in every:
            server.begin_stop()
        for server in every:
            server.stop()


@pytest.fixture(scope="module")
def engines(
    vllm: VllmServers, triton_server: TritonServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engines]:
    data_dir = tmp_path_factory.mktemp("engines-stack")
    env, ports = stack_env(data_dir, VLLM_TIER_API_KEY=VLLM_KEY)
    models = data_dir / "models.yaml"
    with tgi_standin.running() as tgi_url:
        models.write_text(
            TEST_MODELS.format(demo_port=ports["demo"], closed_port=closed_port())
            + ENGINE_MODELS.format(
                vllm_url=vllm.generation.url,
                vllm_replica_url=vllm.replica.url,
                vllm_embed_url=vllm.pooling.url,
                triton=triton_server.grpc,
                tgi_url=tgi_url,
            )
        )
        process = start_up(env, "--models", str(models))
        output: list[str] = []
        wait_until_up(process, output)
        try:
            yield Engines(
                f"http://127.0.0.1:{ports['gateway']}/v1",
                env["TILLER_ADMIN_KEY"],
                vllm.generation,
                vllm.replica,
            )
        finally:
            stop_up(process)


def run_sdk_script(engines: Engines, model: str, *args: str) -> str:
    argv = ["--base-url", engines.base_url, "--key", engines.key, *args, model]
    return subprocess.run(
        [sys.executable, "-m", "tests.engines.sdk_script", *argv],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout.strip()


@pytest.fixture
def client(engines: Engines) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=engines.base_url, api_key=engines.key, max_retries=0) as client:
        yield client


@pytest.mark.parametrize(
    "model", ["vllm-tiny", "triton-text", "triton-stream", "tgi-standin", "demo"]
)
def test_the_same_sdk_script_answers_from_every_engine(
    client: openai.OpenAI, engines: Engines, model: str
) -> None:
    print("\n" + run_sdk_script(engines, model))  # the script as a user runs it
    answers = sdk_script.chat(client, model)
    assert answers.whole and answers.streamed
    # Greedy decoding (temperature 0): the same text whole and streamed, on every engine.
    assert answers.whole == answers.streamed
    assert answers.whole_finish == answers.streamed_finish
    assert answers.whole_finish in ("stop", "length")
    assert answers.chunks > 2 if model != "triton-text" else answers.chunks >= 2
    assert answers.usage[1] > 0


def test_engines_answer_as_themselves(client: openai.OpenAI) -> None:
    """Not a canned answer: each engine's own (deterministic) text."""
    words = sdk_script.PROMPT.split()
    assert sdk_script.chat(client, "triton-text").whole == " ".join(reversed(words))
    assert sdk_script.chat(client, "demo").whole == f"You said: {sdk_script.PROMPT}"
    vllm = sdk_script.chat(client, "vllm-tiny", max_tokens=5)
    assert vllm.whole_finish == "length" and vllm.usage[1] == 5  # real token counts


@pytest.mark.parametrize("model", ["vllm-tiny-embed", "triton-embed"])
def test_embeddings(client: openai.OpenAI, engines: Engines, model: str) -> None:
    print("\n" + run_sdk_script(engines, model, "--embeddings"))
    vectors = sdk_script.embed(client, model)
    assert len(vectors) == 3 and len(vectors[0]) == len(vectors[1]) >= 8
    assert vectors[0] == pytest.approx(vectors[2], abs=1e-5)
    assert vectors[0] != pytest.approx(vectors[1], abs=1e-5)


def test_a_forced_tool_call_from_real_vllm(client: openai.OpenAI) -> None:
    """vLLM's own tool calling (hermes parser, schema-constrained arguments), whole and
    streamed. A random model writes whitespace freely inside constrained JSON, so the schema is
    an enum and the budget generous (tests/engines/vllm_server.py)."""
    city = {"type": "string", "enum": ["Paris", "Seoul"]}
    tool = {
        "type": "function",
        "function": {
            "name": "weather",
            "parameters": {
                "type": "object",
                "properties": {"city": city},
                "required": ["city"],
                "additionalProperties": False,
            },
        },
    }
    asked: dict[str, Any] = {
        "model": "vllm-tiny",
        "messages": [{"role": "user", "content": "Weather?"}],
        "tools": [tool],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "max_tokens": 256,
        "seed": 1,
    }
    chat: Any = client.chat.completions
    whole = chat.create(**asked)
    (call,) = whole.choices[0].message.tool_calls or []
    assert call.function.name == "weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Seoul")
    with chat.stream(**asked) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    (streamed,) = final.choices[0].message.tool_calls or []
    assert streamed.function.name == "weather" and streamed.id
    assert json.loads(streamed.function.arguments)["city"] in ("Paris", "Seoul")
    print(f"\ntool call: {call.function.arguments!r}; streamed: {streamed.function.arguments!r}")


def test_several_choices_with_logprobs_from_real_vllm(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="vllm-tiny",
        messages=[{"role": "user", "content": sdk_script.PROMPT}],
        n=2,
        logprobs=True,
        top_logprobs=2,
        max_tokens=4,
        seed=1,
    )
    assert [c.index for c in completion.choices] == [0, 1]
    for choice in completion.choices:
        assert choice.logprobs is not None and len(choice.logprobs.content or []) == 4
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content or [])
    assert completion.usage is not None and completion.usage.completion_tokens == 8


def test_an_over_long_prompt_is_the_clients_400_with_vllms_reason(client: openai.OpenAI) -> None:
    prompt = "tiller " * (vllm_server.MAX_MODEL_LEN + 50)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="vllm-tiny", messages=[{"role": "user", "content": prompt}], max_tokens=4
        )
    error = caught.value.body
    print(f"\n400: {error}")
    assert isinstance(error, dict) and error["code"] == "context_length_exceeded"
    assert str(vllm_server.MAX_MODEL_LEN) in error["message"]  # vLLM's own words


def test_an_engine_without_tools_refuses_them_by_name(client: openai.OpenAI) -> None:
    chat: Any = client.chat.completions
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    history = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        chat.create(model="triton-text", messages=history)
    assert caught.value.body["param"] == "messages"  # type: ignore[index]
    tool = {"type": "function", "function": {"name": "f"}}
    with pytest.raises(openai.BadRequestError) as caught:
        chat.create(model="triton-stream", messages=history[:1], tools=[tool])
    assert caught.value.body["param"] == "tools"  # type: ignore[index]
    assert "triton-tiny-stream" in caught.value.body["message"]  # type: ignore[index]


def test_the_engines_key_comes_from_the_workers_environment(client: openai.OpenAI) -> None:
    """vLLM runs with --api-key: the deployments that name the variable holding it answer, the
    one that does not is refused by vLLM, and the client hears of it without the key."""
    assert sdk_script.chat(client, "vllm-tiny-alone", max_tokens=2).whole
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="vllm-tiny-keyless", messages=[{"role": "user", "content": "hi"}]
        )
    print(f"\nwithout the key: {caught.value.status_code} {caught.value.body}")
    assert caught.value.status_code == 502 and VLLM_KEY not in str(caught.value.body)


def test_a_client_that_leaves_aborts_the_request_in_vllm(
    client: openai.OpenAI, engines: Engines
) -> None:
    """vLLM counts every token it generates (aborted requests are not in its success counts):
    once the request is gone from its running set, it must have stopped short of max_tokens."""

    def metric(name: str) -> float:
        metrics = urllib.request.urlopen(engines.vllm.url.removesuffix("/v1") + "/metrics")
        for line in metrics.read().decode().splitlines():
            if line.startswith(name + "{"):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"vLLM reports no {name}")

    before = metric("vllm:generation_tokens_total")
    stream = client.chat.completions.create(
        model="vllm-tiny-alone",
        messages=[{"role": "user", "content": "go on"}],
        max_tokens=4000,  # seconds on this CPU: still generating when the client leaves
        stream=True,
    )
    next(iter(stream))
    left = time.monotonic()
    stream.close()
    time.sleep(0.1)
    while metric("vllm:num_requests_running") > 0:
        assert time.monotonic() - left < 10
        time.sleep(0.02)
    generated = metric("vllm:generation_tokens_total") - before
    print(
        f"\nvLLM stopped {time.monotonic() - left:.2f} s after the client left: {generated:.0f} of 4000 tokens"
    )
    assert generated < 4000


# --- what clients send, as they send it (issue 18) ---------------------------------------------

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Seoul"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.mark.parametrize("stream", [False, True])
def test_the_sdk_tool_loop_with_its_own_reply_objects_on_real_vllm(
    client: openai.OpenAI, stream: bool
) -> None:
    """The loop every tutorial writes: the SDK's reply object appended back as it is (with
    its refusal, annotations, audio… fields), the tool's result after it, and a second turn."""
    chat: Any = client.chat.completions
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    asked: dict[str, Any] = {
        "model": "vllm-tiny-alone",
        "tools": [WEATHER_TOOL],
        "tool_choice": "required",  # a random model calls a tool only when made to
        "parallel_tool_calls": False,
        "max_tokens": 256,  # room for a random model's whitespace in constrained JSON
        "seed": 1,
    }
    if stream:
        with chat.stream(messages=messages, **asked) as events:
            for _ in events:
                pass
            reply = events.get_final_completion().choices[0].message
    else:
        reply = chat.create(messages=messages, **asked).choices[0].message
    (call,) = reply.tool_calls or []
    messages.append(reply)  # the SDK's own object
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "sunny"})
    final = chat.create(messages=messages, **{**asked, "tool_choice": "auto", "max_tokens": 8})
    print(f"\nturn 1: {call.function.name}({call.function.arguments}); turn 2: {final.choices[0]}")
    assert final.choices[0].finish_reason in ("stop", "length", "tool_calls")
    # The snippet, as written: tools without tool_choice, the reply appended, again.
    plain = [{"role": "user", "content": "hi"}]
    first = chat.create(model="vllm-tiny-alone", messages=plain, tools=[WEATHER_TOOL], max_tokens=8)
    plain.append(first.choices[0].message)
    second = chat.create(
        model="vllm-tiny-alone", messages=plain, tools=[WEATHER_TOOL], max_tokens=8
    )
    assert second.choices[0].message is not None


def test_engine_parameters_reach_real_vllm(client: openai.OpenAI) -> None:
    """Parameters Tiller does not read go to vLLM as given, and vLLM's answer shows it."""
    chat: Any = client.chat.completions
    ask: dict[str, Any] = {
        "model": "vllm-tiny-alone",
        "messages": [{"role": "user", "content": sdk_script.PROMPT}],
        "max_tokens": 12,
        "temperature": 1.0,
    }
    # As the SDK's users send an engine's own parameters: in extra_body.
    top_1 = {"extra_body": {"top_k": 1}}
    greedy = {chat.create(**ask, **top_1).choices[0].message.content for _ in range(3)}
    sampled = {chat.create(**ask).choices[0].message.content for _ in range(3)}
    print(f"\ntop_k=1 at temperature 1: {greedy}; without: {len(sampled)} different answers")
    assert len(greedy) == 1 and len(sampled) > 1  # top_k=1 is greedy: the same every time
    digits = chat.create(**ask, extra_body={"structured_outputs": {"regex": "[0-9]{4}"}})
    print(f"structured_outputs regex [0-9]{{4}}: {digits.choices[0].message.content!r}")
    assert re.fullmatch(r"[0-9]{4}", digits.choices[0].message.content or "")
    plain = chat.create(**ask, **top_1)
    kwargs = {"banner": "Tiller passes this to the template"}
    banner = chat.create(**ask, extra_body={"top_k": 1, "chat_template_kwargs": kwargs})
    assert plain.usage is not None and banner.usage is not None
    print(
        f"chat_template_kwargs: prompt tokens {plain.usage.prompt_tokens} -> "
        f"{banner.usage.prompt_tokens}"
    )
    assert banner.usage.prompt_tokens > plain.usage.prompt_tokens
    with pytest.raises(openai.BadRequestError) as refused:
        chat.create(**{**ask, "model": "vllm-tiny-strict"}, **top_1)
    print(f"a model set to refuse them: {refused.value.body}")
    assert refused.value.body["param"] == "top_k"  # type: ignore[index]


def test_media_parts_go_to_engines_that_take_them_and_are_refused_by_name_by_others(
    client: openai.OpenAI,
) -> None:
    chat: Any = client.chat.completions
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    content = [{"type": "text", "text": "What is this?"}, image]
    for model, deployment in (("triton-text", "triton-tiny-text"), ("tgi-standin", "tgi-standin")):
        with pytest.raises(openai.BadRequestError) as caught:
            chat.create(model=model, messages=[{"role": "user", "content": content}])
        body: Any = caught.value.body
        print(f"\n{model}: {body['message']} (param {body['param']})")
        assert body["param"] == "messages[0].content[1]" and deployment in body["message"]


def test_the_responses_api_on_real_vllm(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="vllm-tiny-alone",
        input=sdk_script.PROMPT,
        instructions="Answer.",
        max_output_tokens=8,
    )
    assert first.status in ("completed", "incomplete") and first.id.startswith("resp_")
    events = list(
        client.responses.create(
            model="vllm-tiny-alone",
            input="and then?",
            previous_response_id=first.id,
            max_output_tokens=8,
            stream=True,
        )
    )
    kinds = list(dict.fromkeys(e.type for e in events))
    print(f"\nstreamed from vLLM: {' '.join(kinds)}")
    assert kinds[0] == "response.created" and kinds[-1] in (
        "response.completed",
        "response.incomplete",
    )
    tool: Any = {"type": "function", **WEATHER_TOOL["function"]}
    called = client.responses.create(
        model="vllm-tiny-alone",
        input="Weather?",
        tools=[tool],
        tool_choice={"type": "function", "name": "weather"},
        max_output_tokens=256,
    )
    (call,) = [item for item in called.output if item.type == "function_call"]
    assert call.name == "weather" and json.loads(call.arguments)["city"] in ("Paris", "Seoul")
    answered = client.responses.create(
        model="vllm-tiny-alone",
        previous_response_id=called.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}],
        max_output_tokens=8,
    )
    assert answered.status in ("completed", "incomplete")


# --- several endpoints behind one model (issue 23) -------------------------------------------


def vllm_counts(server: vllm_server.VllmServer) -> dict[str, float]:
    """vLLM's own count of the requests it finished, by finished_reason (stop, length, abort,
    error, repetition), from its Prometheus /metrics."""
    url = server.url.removesuffix("/v1") + "/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("vllm:request_success_total{"):
            reason = re.search(r'finished_reason="([^"]*)"', line)
            assert reason, line
            counts[reason[1]] = counts.get(reason[1], 0.0) + float(line.rsplit(" ", 1)[1])
    assert counts, f"vLLM at {server.url} reports no vllm:request_success_total"
    return counts


def served_since(before: dict[str, float], after: dict[str, float]) -> tuple[int, int]:
    """Requests answered (stop, length, repetition) and failed (abort, error) in between."""
    delta = {reason: after[reason] - before.get(reason, 0.0) for reason in after}
    failed = delta.get("abort", 0.0) + delta.get("error", 0.0)
    return round(sum(delta.values()) - failed), round(failed)


PAIR_REQUESTS = 24  # at 4 + 4 slots: three rounds, so a queue to balance from


def test_two_vllm_servers_behind_one_model_both_serve(
    client: openai.OpenAI, engines: Engines
) -> None:
    """vllm-pair's deployment lists two vLLM servers of the same model as its endpoints, 4 slots
    each. 24 chat completions at once through the gateway, every other one streamed: each
    server's own /metrics must show it answered some, and the two together every one, once."""
    servers = {"vllm": engines.vllm, "vllm-replica": engines.vllm_replica}
    before = {name: vllm_counts(server) for name, server in servers.items()}

    def ask(i: int) -> int:
        """One request, whole or streamed: the tokens of its answer, by its usage."""
        asked: Any = {
            "model": "vllm-pair",
            "messages": [{"role": "user", "content": f"{sdk_script.PROMPT} ({i})"}],
            "max_tokens": 8,
        }
        if i % 2 == 0:
            reply = client.chat.completions.create(**asked)
            assert reply.choices[0].finish_reason in ("stop", "length")
            return reply.usage.completion_tokens if reply.usage else 0
        tokens, finish = 0, None
        stream = client.chat.completions.create(
            **asked, stream=True, stream_options={"include_usage": True}
        )
        for chunk in stream:
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
        assert finish in ("stop", "length")
        return tokens

    began = time.monotonic()
    with ThreadPoolExecutor(PAIR_REQUESTS) as pool:
        tokens = list(pool.map(ask, range(PAIR_REQUESTS)))  # raises the first client error
    took = time.monotonic() - began
    assert all(n > 0 for n in tokens), tokens

    def served() -> dict[str, tuple[int, int]]:
        return {name: served_since(before[name], vllm_counts(s)) for name, s in servers.items()}

    # vLLM counts a request once its output is processed: as the answer goes, or just after.
    wait_for(lambda: sum(ok for ok, _ in served().values()) >= PAIR_REQUESTS, timeout=10)
    counts = served()
    print(
        f"\n{PAIR_REQUESTS} requests through vllm-pair in {took:.1f} s, answered by each vLLM "
        + ", ".join(f"{name}: {ok} (failed {failed})" for name, (ok, failed) in counts.items())
    )
    assert all(failed == 0 for _, failed in counts.values()), counts
    assert all(ok >= 1 for ok, _ in counts.values()), f"not both serving: {counts}"
    assert sum(ok for ok, _ in counts.values()) == PAIR_REQUESTS, counts


# --- last in this module: it kills the vLLM server the tests above use ---------------------


def test_a_killed_vllm_is_retried_then_the_fallback_answers(
    client: openai.OpenAI, engines: Engines
) -> None:
    """Last in this module: it stops the vLLM server the others use."""
    engines.vllm.kill()  # gone at once, not draining
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="vllm-tiny-alone", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
    print(f"\nwithout a fallback: {caught.value.status_code} {caught.value.body}")
    # It waited for the engine up to its queue timeout, then said so.
    assert caught.value.status_code == 503 and "queue timeout" in str(caught.value.body)
    answer = client.chat.completions.create(
        model="vllm-tiny", messages=[{"role": "user", "content": "Hello Tiller"}], max_tokens=8
    )
    print(f"with a fallback: {answer.choices[0].message.content!r}")
    assert answer.choices[0].message.content == "You said: Hello Tiller"  # the demo engine's
