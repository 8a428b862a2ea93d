"""The prompt's bound (gateway/reservations.py): never below what an engine counts, whatever the
text, and counting what Tiller adds (the model's system prompt, a Triton deployment's template)."""

from __future__ import annotations

import json
import math

import pytest

from tiller.contract.engines.triton_options import PromptTemplate
from tiller.contract.requests import Chat, Embedding, Message, Part, TextCompletion, ToolCall
from tiller.demo_engine.generation import prompt_tokens
from tiller.gateway.reservations import (
    CHARS_PER_TOKEN,
    MEDIA_TOKENS,
    MESSAGE_TOKENS,
    TEXT_TOKENS,
    as_sent,
    prompt_of,
)
from tiller.protos.router.v1 import router_pb2

TEMPLATE = 32
ROUTE = router_pb2.Route(model="m")

TEXTS = [
    " ".join("abcdefghijklmnopqrstuvwxyzabcdefghijklmn"),  # forty one-letter words
    "hi",
    "x" * 1000,  # one long word: one token for the demo engine, many for a real tokenizer
    "数据库连接失败了请稍后再试" * 20,  # three bytes a character
    "🙂 " * 50,  # four bytes a character
    "a\tb\nc  d",
]


def chat(*messages: tuple[str, str]) -> Chat:
    return Chat(tuple(Message(role, content) for role, content in messages))


def bytes_of(text: str) -> int:
    return len(text.encode())


@pytest.mark.parametrize("text", TEXTS)
def test_the_bound_is_never_below_a_token_a_byte(text: str) -> None:
    """A BPE or SentencePiece token covers at least one byte: a text's bytes bound its tokens,
    and so bound the demo engine's word count too."""
    bound = prompt_of(chat(("user", text)), ROUTE, TEMPLATE).bound
    assert bound >= bytes_of(text) + bytes_of("user") + MESSAGE_TOKENS + TEMPLATE
    assert bound >= prompt_tokens([{"role": "user", "content": text}])


def test_forty_one_letter_words_are_not_reserved_as_a_quarter_of_their_characters() -> None:
    """The outside measurement: with tpm 30, these and max_tokens 1 were admitted (reserved 25),
    while the engine counted 40 prompt tokens; now the reservation alone exceeds 30."""
    text = TEXTS[0]
    prompt = prompt_of(chat(("user", text)), ROUTE, TEMPLATE)
    assert prompt_tokens([{"role": "user", "content": text}]) == 40
    assert prompt.bound + 1 > 30
    assert prompt.estimate == math.ceil(len(text) / CHARS_PER_TOKEN) + 4  # charged if left


def test_the_models_system_prompt_is_counted() -> None:
    system = " ".join(f"w{i}" for i in range(200))
    route = router_pb2.Route(model="m", system_prompt=system)
    sent = as_sent(chat(("user", "hi")), route)
    assert isinstance(sent, Chat) and sent.messages[0] == Message("system", system)
    prompt = prompt_of(sent, route, TEMPLATE)
    engine = prompt_tokens([{"role": m.role, "content": m.text} for m in sent.messages])
    assert engine == 201
    assert prompt.bound >= bytes_of(system) + 2 + 2 * MESSAGE_TOKENS + TEMPLATE > engine
    assert prompt.estimate >= math.ceil(len(system) / CHARS_PER_TOKEN)
    # A request that brings its own system message keeps it: the model's is not added.
    own = chat(("system", "mine"), ("user", "hi"))
    assert as_sent(own, route) == own


def test_tool_calls_tools_and_media_count_their_bytes() -> None:
    call = ToolCall("call_1", "lookup", json.dumps({"city": "Paris"}))
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    image = Part("image_url", {"image_url": {"url": "data:image/png;base64," + "A" * 400}})
    ask = Chat(
        (
            Message("user", (Part("text", {"text": "what is this"}), image)),
            Message("assistant", None, tool_calls=(call,)),
            Message("tool", "sunny", tool_call_id="call_1"),
        ),
        extra={"tools": tools},
    )
    bound = prompt_of(ask, ROUTE, 0).bound
    assert bound >= (
        bytes_of("what is this" + call.arguments + "sunny")
        + len(json.dumps(tools, separators=(",", ":")))
        + 400
        + bytes_of("call_1lookupcall_1")
    )


def test_a_triton_deployments_own_template_is_counted() -> None:
    template = {"prefix": "<long preamble> " * 20, "message": "{role}: {content}\n"}
    options = {"inputs": {"prompt": "text_input"}, "outputs": {"text": "text_output"}}
    triton = router_pb2.Deployment(
        adapter="triton", options_json=json.dumps({**options, "prompt_template": template})
    )
    route = router_pb2.Route(model="m", deployments=[triton])
    ask = chat(("user", "hi"))
    rendered = PromptTemplate(prefix=template["prefix"]).render([("user", "hi", "")])
    assert prompt_of(ask, route, 0).bound >= bytes_of(rendered) + TEXT_TOKENS
    assert prompt_of(ask, route, 0).bound > prompt_of(ask, ROUTE, 0).bound


def test_completions_and_embeddings_are_bounded_by_their_bytes() -> None:
    assert prompt_of(TextCompletion("héllo"), ROUTE, 0).bound == 6 + TEXT_TOKENS
    embedding = Embedding(("a", "bb"))
    assert prompt_of(embedding, ROUTE, 0).bound == 3 + 2 * TEXT_TOKENS


def test_an_inline_image_counts_at_most_what_an_engine_makes_of_one_image() -> None:
    # A 1 MB data URL is a picture an engine resizes to a pixel budget, not a million tokens.
    image = Part("image_url", {"image_url": {"url": "data:image/png;base64," + "A" * 1_000_000}})
    ask = Chat((Message("user", (Part("text", {"text": "what is this"}), image)),))
    bound = prompt_of(ask, ROUTE, 0).bound
    assert MEDIA_TOKENS <= bound < MEDIA_TOKENS + 100
