"""How many tokens a request may use, bounded before it runs: what quota reserves against
tokens-per-minute limits and budgets at admission, and replaces with the engine's count when the
request settles.

The prompt is counted as the engine gets it: with the model's `system_prompt` (models.yaml) and
with the template around its messages. Its bound is never below the engine's count, so a
reservation cannot be undercut however the prompt is written: every BPE or SentencePiece token of
a text covers at least one of its UTF-8 bytes, so a text has no more tokens than bytes. What has
no bytes in the request (a chat template's role markers, a beginning-of-text token, a default
system prompt an engine's template adds) is an allowance: `MESSAGE_TOKENS` per message and the
gateway's `template_tokens` per request; a Triton deployment's template is Tiller's own
(`options.prompt_template`), counted by its bytes. The answer is bounded by its cap: `max_tokens`
(the request's or the model's default) for each of `n` choices, or `default_completion` when
neither sets one (then not a bound: the engine is not capped).

The bound is loose by design (English runs about four bytes a token), which only makes admission
stricter: a long prompt holds more of a tokens-per-minute window until it settles. What a caller
is charged for a prompt whose answer did not finish is `estimate`, the old rule of thumb (a token
per four characters, plus four per message): a charge should be near the real count, not above it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass
from typing import Any

import orjson

from tiller.contract.engines.triton_options import PromptTemplate, parse_options
from tiller.contract.requests import Ask, Chat, Embedding, Message, Sampling, texts_of
from tiller.contract.routes import with_system_prompt
from tiller.gateway.protocol import ApiRequest
from tiller.protos.router.v1 import router_pb2

# A chat template's special tokens around one message besides its role's text (ChatML's
# <|im_start|>, newlines and <|im_end|>; Llama 3's header and end-of-turn tokens: four or five).
MESSAGE_TOKENS = 6
# Tokens a Triton deployment's prompt may hold besides the bytes of its text: the tokenizer's
# beginning- and end-of-text tokens.
TEXT_TOKENS = 2
# The most tokens one image (or audio clip, or file) becomes: engines resize images to a pixel
# budget (Qwen2-VL's default is 16,384 patches; LLaVA's 576 to 2,880), so an inline image's
# bytes, hundreds of thousands, would overstate it a hundredfold.
MEDIA_TOKENS = 16_384
# The rule of thumb of `estimate`.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


@dataclass(frozen=True)
class Prompt:
    bound: int  # never below the engine's count: what is reserved
    estimate: int  # about the engine's count: what an unfinished answer is charged


def as_sent(ask: Ask, route: router_pb2.Route) -> Ask:
    """The request as its engine gets it: a chat with the model's system prompt."""
    if isinstance(ask, Chat):
        messages = with_system_prompt(ask.messages, route.system_prompt)
        return dataclasses.replace(ask, messages=messages)
    return ask


def prompt_of(ask: Ask, route: router_pb2.Route, template_tokens: int) -> Prompt:
    """The prompt of `ask` (as sent: `as_sent`) bounded and estimated."""
    texts = texts_of(ask)
    estimate = math.ceil(sum(len(t) for t in texts) / CHARS_PER_TOKEN)
    bound = sum(len(t.encode()) for t in texts) + template_tokens
    if isinstance(ask, Chat):
        estimate += TOKENS_PER_MESSAGE * len(ask.messages)
        bound += _json_bytes(ask.extra) + _json_bytes(ask.params)  # tools, template arguments
        bound += sum(_outside_texts(m) for m in ask.messages)
        templates = [_triton_template(d, ask.messages) for d in _deployments(route)]
        bound += max([MESSAGE_TOKENS * len(ask.messages), *templates])
    elif isinstance(ask, Embedding):
        bound += TEXT_TOKENS * len(ask.texts)
    else:
        bound += TEXT_TOKENS
    return Prompt(bound, estimate)


def reservation(
    request: ApiRequest, sampling: Sampling, prompt: int, default_completion: int
) -> int:
    """Tokens to reserve: the prompt's bound plus every choice's cap."""
    if isinstance(request.ask, Embedding):
        return prompt
    choices = int(request.ask.extra.get("n") or 1)
    return prompt + (sampling.max_tokens or default_completion) * choices


def _outside_texts(message: Message) -> int:
    """Bytes of a message the engine reads besides its texts (`texts_of`): its role, its tool
    calls' ids and names (their arguments are texts), the call a tool message answers, and its
    images, audio and files as sent (a data URL's bytes, up to MEDIA_TOKENS each; a linked
    file's are not a bound)."""
    size = len(message.role.encode()) + len((message.tool_call_id or "").encode())
    for call in message.tool_calls:  # and the template's markers around each call
        size += len(call.id.encode()) + len(call.name.encode()) + MESSAGE_TOKENS
    return size + sum(min(_json_bytes(p.body), MEDIA_TOKENS) for p in message.media)


def _json_bytes(value: Any) -> int:
    return len(orjson.dumps(value)) if value else 0


def _deployments(route: router_pb2.Route) -> list[router_pb2.Deployment]:
    return [*route.deployments, *route.fallbacks]


def _triton_template(deployment: router_pb2.Deployment, messages: tuple[Message, ...]) -> int:
    """A Triton deployment's own template around `messages`: its bytes with no text in it."""
    if deployment.adapter != "triton":
        return 0
    template = _template_of(deployment.options_json)
    if template is None:
        return 0
    empty = [(m.role, "", "") for m in messages]
    return len(template.render(empty).encode()) + TEXT_TOKENS


@functools.lru_cache(maxsize=64)
def _template_of(options_json: str) -> PromptTemplate | None:
    """Parsed once per distinct `options:` (a route's options change only with models.yaml)."""
    try:
        return parse_options(json.loads(options_json or "{}")).prompt_template
    except ValueError:
        return None  # the router refuses such options; the worker reports them
