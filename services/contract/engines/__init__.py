"""The engine kinds a deployment may name (models.yaml `adapter:`), and what each one's
`endpoint` and `options:` must be.

The router checks a deployment against this when it loads models.yaml; the worker's adapter
registry (worker/adapters/__init__.py) has one adapter for each kind here. Option checkers are
pure Python: the router validates a Triton deployment without tritonclient.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tiller.contract.engines import http_options, triton_options


@dataclass(frozen=True)
class Kind:
    transport: Literal["http", "grpc"]  # what the endpoint is: a base URL, or host:port
    check_options: Callable[[dict[str, Any]], None]  # raises ValueError for bad `options:`
    # Whether its engine takes request parameters Tiller does not read (top_k, …) as given.
    forwards_params: bool = False


HTTP = Kind("http", http_options.check_options)
OPENAI = Kind("http", http_options.check_options, forwards_params=True)

KINDS: dict[str, Kind] = {
    # vLLM serves the OpenAI HTTP API; so do llama.cpp, SGLang, Ollama, hosted APIs and our
    # demo engine. The two kinds differ in defaults (vLLM can continue a partial answer).
    "vllm": OPENAI,
    "openai": OPENAI,
    # Hugging Face text-generation-inference: its Messages API and native /generate.
    "tgi": HTTP,
    # NVIDIA Triton over gRPC (tritonclient): KServe v2 infer, and decoupled streaming models.
    "triton": Kind("grpc", triton_options.check_options),
}


def check_endpoint(kind: str, endpoint: str) -> str:
    """The endpoint, normalised, or ValueError saying what the adapter expects."""
    if KINDS[kind].transport == "http":
        if not re.match(r"^https?://[^/\s]+", endpoint):
            raise ValueError(f"expected an http:// or https:// URL, got {endpoint!r}")
        return endpoint.rstrip("/")
    address = re.sub(r"^grpcs?://", "", endpoint).rstrip("/")
    if not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):[0-9]{1,5}", address):
        raise ValueError(f"expected host:port (or grpc:// or grpcs:// before it), got {endpoint!r}")
    return endpoint.rstrip("/")


def check_options(kind: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the bad option, for the router to refuse models.yaml."""
    try:
        KINDS[kind].check_options(options)
    except ValueError as error:  # the caller names the `options` field itself
        raise ValueError(str(error).removeprefix("options.")) from None
