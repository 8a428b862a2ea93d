"""The `options:` of a deployment served by Triton Inference Server, and their validation.

Pure Python (no tritonclient): the router checks models.yaml with `check_options` without the
engine clients. A Triton model has no fixed protocol: its tensors are named by whoever built it,
so the deployment says which tensor carries what.

    options:
      inputs:                    # Tiller field -> the model's input tensor
        prompt: text_input       #   required: the text (one text; a batch of texts to embed)
        max_tokens: max_tokens   #   optional, each sent only when the request (or `defaults`)
        temperature: temperature #   sets it: temperature, top_p, seed, presence_penalty,
        stop: stop_words         #   frequency_penalty, stop (a list of texts), stream (BOOL:
        stream: stream           #   whether Tiller streams), sampling_parameters (one JSON
                                 #   text of every sampling field set, as vLLM's backend takes)
      outputs:                   # Tiller field -> the model's output tensor
        text: text_output        #   the answer (BYTES); or `embedding` for an embedding model
        completion_tokens: n_out #   optional counts (integers) that replace the word counts
        prompt_tokens: n_in
      decoupled: true            # optional: read from the model's config when absent
      stream_output: delta       # decoupled responses hold new text (delta) or all so far
      model_version: ""          # optional: Triton picks by its version policy when empty
      defaults: {max_tokens: 256}  # sampling values used when the request leaves them unset
      prompt_template:           # how chat messages become the one prompt text
        prefix: ""
        message: "{role}: {content}\\n"   # each message; {role}, {content}, {name}
        roles: {system: "{content}\\n\\n"}  # optional: a role's own format
        suffix: "assistant: "     # after the last message: where the answer starts

Input datatypes and shapes come from the model's metadata, so none are configured here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tiller.contract.requests import SAMPLING_FIELDS

# Sampling fields of a request that may be sent as an input tensor.
SAMPLING_INPUTS = SAMPLING_FIELDS
INPUT_FIELDS = ("prompt", *SAMPLING_INPUTS, "stream", "sampling_parameters")
OUTPUT_FIELDS = ("text", "embedding", "completion_tokens", "prompt_tokens")
STREAM_OUTPUTS = ("delta", "cumulative")
TEMPLATE_FIELDS = ("prefix", "message", "roles", "suffix")
KNOWN_OPTIONS = (
    "inputs",
    "outputs",
    "decoupled",
    "stream_output",
    "model_version",
    "defaults",
    "prompt_template",
)


@dataclass(frozen=True)
class PromptTemplate:
    prefix: str = ""
    message: str = "{role}: {content}\n"
    roles: Mapping[str, str] = field(default_factory=dict)
    suffix: str = "assistant: "

    def render(self, messages: list[tuple[str, str, str]]) -> str:
        """The prompt for (role, content, name) messages, in order."""
        parts = [self.prefix]
        for role, content, name in messages:
            layout = self.roles.get(role, self.message)
            parts.append(layout.format(role=role, content=content, name=name))
        parts.append(self.suffix)
        return "".join(parts)


@dataclass(frozen=True)
class TritonOptions:
    inputs: Mapping[str, str]
    outputs: Mapping[str, str]
    decoupled: bool | None = None
    stream_output: str = "delta"
    model_version: str = ""
    defaults: Mapping[str, Any] = field(default_factory=dict)
    prompt_template: PromptTemplate = field(default_factory=PromptTemplate)


def check_options(options: Mapping[str, Any] | None) -> None:
    """Raise ValueError naming the first bad field of a Triton deployment's `options`."""
    parse_options(options)


def check_endpoint(endpoint: str) -> None:
    """Raise ValueError unless `endpoint` is a gRPC address: host:port, grpc:// or grpcs://."""
    parse_endpoint(endpoint)


def parse_endpoint(endpoint: str) -> tuple[str, bool]:
    """The host:port of a gRPC endpoint, and whether it uses TLS (grpcs://)."""
    address, secure = endpoint.strip(), False
    if address.startswith("grpcs://"):
        address, secure = address[len("grpcs://") :], True
    elif address.startswith("grpc://"):
        address = address[len("grpc://") :]
    address = address.rstrip("/")
    host, _, port = address.rpartition(":")
    if "://" in address or "/" in address or not host or not port.isdigit():
        raise ValueError(
            f"endpoint: {endpoint!r} is not a Triton gRPC address (host:port, grpc://host:port "
            "or grpcs://host:port)"
        )
    return address, secure


def parse_options(options: Mapping[str, Any] | None) -> TritonOptions:
    """The typed options, or ValueError("options.<field>: <what is wrong>")."""
    if not isinstance(options, Mapping):
        if options is None:
            raise ValueError("options.inputs.prompt: required (a Triton deployment needs options)")
        raise ValueError("options: must be a mapping")
    for key in options:
        if key not in KNOWN_OPTIONS:
            raise ValueError(f"options.{key}: unknown option (known: {', '.join(KNOWN_OPTIONS)})")
    inputs = _names(options.get("inputs"), "inputs", INPUT_FIELDS)
    if "prompt" not in inputs:
        raise ValueError("options.inputs.prompt: required (the input tensor that takes the text)")
    outputs = _names(options.get("outputs"), "outputs", OUTPUT_FIELDS)
    if "text" not in outputs and "embedding" not in outputs:
        raise ValueError(
            "options.outputs.text: required (the output tensor with the answer), or "
            "options.outputs.embedding for an embedding model"
        )
    decoupled = options.get("decoupled")
    if decoupled is not None and not isinstance(decoupled, bool):
        raise ValueError("options.decoupled: must be true or false")
    stream_output = options.get("stream_output", "delta")
    if stream_output not in STREAM_OUTPUTS:
        raise ValueError(f"options.stream_output: must be one of {', '.join(STREAM_OUTPUTS)}")
    version = options.get("model_version", "")
    if isinstance(version, bool) or not isinstance(version, (str, int)):
        raise ValueError("options.model_version: must be a version number or text")
    return TritonOptions(
        inputs=inputs,
        outputs=outputs,
        decoupled=decoupled,
        stream_output=stream_output,
        model_version=str(version),
        defaults=_defaults(options.get("defaults")),
        prompt_template=_template(options.get("prompt_template")),
    )


def _names(value: Any, where: str, known: tuple[str, ...]) -> dict[str, str]:
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        raise ValueError(f"options.{where}: must be a mapping of Tiller field to tensor name")
    names: dict[str, str] = {}
    for key, tensor in value.items():
        if key not in known:
            raise ValueError(f"options.{where}.{key}: unknown field (known: {', '.join(known)})")
        if not isinstance(tensor, str) or not tensor.strip():
            raise ValueError(f"options.{where}.{key}: must be a tensor name")
        names[key] = tensor
    return names


def _defaults(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError("options.defaults: must be a mapping of sampling field to value")
    defaults: dict[str, Any] = {}
    for key, item in value.items():
        if key not in SAMPLING_INPUTS:
            raise ValueError(
                f"options.defaults.{key}: unknown field (known: {', '.join(SAMPLING_INPUTS)})"
            )
        if key == "stop":
            if not isinstance(item, list) or not all(isinstance(s, str) for s in item):
                raise ValueError("options.defaults.stop: must be a list of texts")
        elif isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ValueError(f"options.defaults.{key}: must be a number")
        elif key in ("max_tokens", "seed") and not isinstance(item, int):
            raise ValueError(f"options.defaults.{key}: must be an integer")
        defaults[key] = item
    return defaults


def _template(value: Any) -> PromptTemplate:
    if value is None:
        return PromptTemplate()
    if not isinstance(value, Mapping):
        raise ValueError(
            "options.prompt_template: must be a mapping (prefix, message, roles, suffix)"
        )
    for key in value:
        if key not in TEMPLATE_FIELDS:
            known = ", ".join(TEMPLATE_FIELDS)
            raise ValueError(f"options.prompt_template.{key}: unknown field (known: {known})")
    default = PromptTemplate()
    texts: dict[str, str] = {}
    for key in ("prefix", "message", "suffix"):
        text = value.get(key, getattr(default, key))
        if not isinstance(text, str):
            raise ValueError(f"options.prompt_template.{key}: must be text")
        texts[key] = text
    _check_layout(texts["message"], "options.prompt_template.message")
    roles = value.get("roles") or {}
    if not isinstance(roles, Mapping):
        raise ValueError("options.prompt_template.roles: must be a mapping of role to format")
    for role, layout in roles.items():
        if not isinstance(layout, str):
            raise ValueError(f"options.prompt_template.roles.{role}: must be text")
        _check_layout(layout, f"options.prompt_template.roles.{role}")
    return PromptTemplate(
        prefix=texts["prefix"],
        message=texts["message"],
        roles={str(role): layout for role, layout in roles.items()},
        suffix=texts["suffix"],
    )


def _check_layout(layout: str, where: str) -> None:
    try:
        layout.format(role="user", content="hello", name="")
    except (KeyError, IndexError, ValueError, AttributeError) as error:
        raise ValueError(
            f"{where}: not a valid format ({error!r}); use {{role}}, {{content}} and {{name}}, "
            "and {{ }} for literal braces"
        ) from None
