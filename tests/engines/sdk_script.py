"""One openai SDK script for every engine: only the model name changes.

    python -m tests.engines.sdk_script --base-url http://127.0.0.1:8080/v1 --key tk-... MODEL
    python -m tests.engines.sdk_script ... --embeddings MODEL

It asks for a chat completion whole and streamed (with usage), or for embeddings, and prints
what came back. The engine tier (tests/engines/test_real_engines.py) runs it against real vLLM,
real Triton, the TGI stand-in and the demo engine.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass

import openai
from openai.types.chat import ChatCompletionMessageParam

PROMPT = "Write one line about a boat's tiller."


@dataclass
class Answers:
    whole: str
    whole_finish: str
    streamed: str
    streamed_finish: str
    chunks: int
    usage: tuple[int, int]


def chat(client: openai.OpenAI, model: str, max_tokens: int = 12) -> Answers:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": PROMPT}]
    completion = client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
    )
    texts, finish, usage, chunks = [], "", (0, 0), 0
    for chunk in client.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ):
        chunks += 1
        for choice in chunk.choices:
            texts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
    return Answers(
        completion.choices[0].message.content or "",
        completion.choices[0].finish_reason,
        "".join(texts),
        finish,
        chunks,
        usage,
    )


def embed(client: openai.OpenAI, model: str) -> list[list[float]]:
    reply = client.embeddings.create(model=model, input=["a tiller", "a rudder", "a tiller"])
    return [item.embedding for item in reply.data]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--embeddings", action="store_true")
    args = parser.parse_args()
    with openai.OpenAI(base_url=args.base_url, api_key=args.key, max_retries=0) as client:
        if args.embeddings:
            vectors = embed(client, args.model)
            print(f"{args.model}: {len(vectors)} vectors of {len(vectors[0])} floats;")
            print(f"  first: {[round(x, 4) for x in vectors[0][:4]]}...")
            print(f"  equal texts, equal vectors: {vectors[0] == vectors[2]}")
            return
        answers = chat(client, args.model)
        print(f"{args.model}:")
        print(f"  whole:    {json.dumps(answers.whole)} ({answers.whole_finish})")
        print(
            f"  streamed: {json.dumps(answers.streamed)} ({answers.streamed_finish}, "
            f"{answers.chunks} chunks, usage prompt/completion {answers.usage})"
        )


if __name__ == "__main__":
    main()
