from __future__ import annotations

from pathlib import Path

import pytest

from tiller.common.errors import ModelNotFound
from tiller.router.config import ConfigError, parse
from tiller.router.table import compile_models

GOOD = """\
models:
  llama:
    aliases: [llama-latest]
    deployments:
      - name: gpu-a
        adapter: vllm
        endpoint: http://vllm-a:8000/v1/
        engine_model: meta-llama/Llama-3.1-8B-Instruct
        task_queue: tiller.llama
        max_concurrency: 32
  small:
    deployments:
      - adapter: openai
        endpoint: http://llamacpp:8080/v1
"""


def test_a_valid_file_compiles_with_defaults_filled_in() -> None:
    table = compile_models(parse(GOOD), GOOD.encode(), created=1)
    llama = table.resolve("llama-latest")
    assert llama.name == "llama"
    assert llama.deployments[0].endpoint == "http://vllm-a:8000/v1"
    small = table.resolve("small").deployments[0]
    assert (small.name, small.engine_model, small.task_queue) == (
        "small-0",
        "small",
        "tiller.small-0",
    )
    assert small.max_concurrency == 64
    assert table.version == compile_models(parse(GOOD), GOOD.encode()).version


def test_unknown_model_is_model_not_found() -> None:
    table = compile_models(parse(GOOD), GOOD.encode())
    with pytest.raises(ModelNotFound, match="`nope` does not exist"):
        table.resolve("nope")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("adapter: vllm", "adapter: vlm"),
            "models.yaml:6: models.llama.deployments[0].adapter: unknown adapter 'vlm' (known: openai, tgi, triton, vllm)",
        ),
        (
            ("max_concurrency: 32", "max_concurrency: 0"),
            "models.yaml:10: models.llama.deployments[0].max_concurrency: Input should be greater than or equal to 1",
        ),
        (
            ("engine_model: meta", "engine_modle: meta"),
            "models.yaml:8: models.llama.deployments[0].engine_modle: unknown field",
        ),
        (
            ("endpoint: http://llamacpp:8080/v1", "endpoint: llamacpp:8080"),
            "models.yaml:14: models.small.deployments[0].endpoint: expected an http:// or https:// URL",
        ),
        (
            ("adapter: openai", "adapter: triton"),
            "models.yaml:14: models.small.deployments[0].endpoint: expected host:port (or grpc:// or grpcs:// before it), got 'http://llamacpp:8080/v1'",
        ),
        (
            ("max_concurrency: 32", "options: {api_key: sk-1}"),
            "models.yaml:10: models.llama.deployments[0].options: unknown option 'api_key' (known: api_key_env, api_key_file)",
        ),
        (
            ("max_concurrency: 32", "options: {api_key_env: A, api_key_file: /k}"),
            "models.yaml:10: models.llama.deployments[0].options: set one of api_key_env and api_key_file, not both",
        ),
        (
            ("aliases: [llama-latest]", "aliases: [small]"),
            "models.yaml:3: models.llama.aliases[0]: 'small' already names model 'small'",
        ),
    ],
)
def test_errors_name_the_line_and_the_key_path(edit: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse(GOOD.replace(*edit))
    assert expected in str(caught.value)


def test_missing_deployments_and_bad_yaml() -> None:
    with pytest.raises(
        ConfigError, match=r"models.yaml:2: models.m: a model needs 'deployments' \(at least one\)"
    ):
        parse("models:\n  m:\n    aliases: []\n")
    with pytest.raises(ConfigError, match=r"models.yaml:3: not valid YAML: found character '\\t'"):
        parse("models:\n  m:\n\t- x\n")
    with pytest.raises(ConfigError, match="top-level 'models'"):
        parse("- just a list\n")


def test_a_shared_task_queue_must_agree_on_concurrency() -> None:
    text = GOOD.replace(
        "      - adapter: openai", "      - adapter: openai\n        task_queue: tiller.llama"
    )
    with pytest.raises(ConfigError, match=r"task queue 'tiller\.llama': max_concurrency 64"):
        compile_models(parse(text), text.encode())


def test_the_repository_example_is_valid() -> None:
    path = Path(__file__).resolve().parents[2] / "models.yaml"
    table = compile_models(parse(path.read_text(), str(path)), path.read_bytes())
    assert "demo" in table.models


def test_adapter_options_reach_the_table_as_json() -> None:
    source = GOOD.replace("max_concurrency: 32", "options: {api_key_env: LLAMA_KEY}")
    table = compile_models(parse(source), source.encode())
    assert table.resolve("llama").deployments[0].options_json == '{"api_key_env": "LLAMA_KEY"}'
    assert table.resolve("small").deployments[0].options_json == ""


def test_a_triton_deployment_without_options_is_refused() -> None:
    source = GOOD.replace("adapter: openai", "adapter: triton").replace(
        "http://llamacpp:8080/v1", "triton:8001"
    )
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.options: inputs"):
        parse(source)


def test_a_grpc_endpoint_is_host_and_port() -> None:
    source = GOOD.replace("adapter: openai", "adapter: triton").replace(
        "http://llamacpp:8080/v1", "grpc://triton:8001"
    )
    source = source.replace(
        "endpoint: grpc://triton:8001",
        "endpoint: grpc://triton:8001\n        options: {inputs: {prompt: text_input}, outputs: {text: text_output}}",
    )
    table = compile_models(parse(source), source.encode())
    assert table.resolve("small").deployments[0].endpoint == "grpc://triton:8001"
    broken = source.replace("text_input", "''")
    with pytest.raises(ConfigError, match=r"deployments\[0\]\.options: inputs\.prompt: "):
        parse(broken)


def test_model_access_patterns_match_names_or_aliases() -> None:
    from tiller.common.model_access import model_allowed
    from tiller.quota.keys import lua_pattern

    assert model_allowed([], "anything")
    assert model_allowed(["llama-*"], "llama-3b") and not model_allowed(["llama-*"], "mistral")
    assert model_allowed(["demo-latest"], "demo", "demo-latest")  # an alias is enough
    assert lua_pattern("llama-3.?b*") == "^llama%-3%..b.*$"


def test_a_key_pattern_with_too_many_wildcards_is_refused() -> None:
    from tiller.quota.keys import KeySpec

    KeySpec("ok", models=("llama-*-?b*",)).check()
    with pytest.raises(ValueError, match="more than 4 wildcards"):
        KeySpec("slow", models=("*a*a*a*a*b",)).check()
