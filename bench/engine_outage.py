"""The engine killed under load and started again: how many requests end in an error?

    ./dev shell bench/engine_outage.py [--streams 20] [--arriving 10] [--down 20] [--runs 2]

Runs a stack of separate processes (tests/own_stack.py: Redis, Temporal, the demo engine at
30 ms a token, router, quota, one worker, one gateway), starts `--streams` streamed chat
completions at once (about 6 s of answer each), SIGKILLs the demo engine once every stream has
text, sends `--arriving` more while it is down, and starts it again after `--down` seconds.
Every answer is checked against the demo engine's deterministic one ("You said: " and the
prompt): whole, cut short, repeated (longer than it should be), or an error (with its message).
It prints one line per run and the errors by message.

It measures the checkout it runs from (it imports `tests` from the working directory, which
`./dev shell` sets to the repository's root), so the same script measures an older commit:
`cd ../older && ./dev shell /path/to/this/bench/engine_outage.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import openai

sys.path.insert(0, os.getcwd())

from tests.own_stack import OwnStack

WORDS = 200  # "You said: " and these: about 6 s at 30 ms a token


@dataclass
class Outcome:
    expected: str
    text: str = ""
    error: str | None = None
    seconds: float = 0.0
    begun: asyncio.Event = field(default_factory=asyncio.Event)  # text or an error came

    @property
    def verdict(self) -> str:
        if self.error is not None:
            return "error"
        if self.text == self.expected:
            return "whole"
        return "repeated" if len(self.text) > len(self.expected) else "cut"


async def stream(client: openai.AsyncOpenAI, prompt: str, outcome: Outcome) -> None:
    started = time.monotonic()
    try:
        answer = await client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": prompt}], stream=True
        )
        async for chunk in answer:
            if chunk.choices:
                outcome.text += chunk.choices[0].delta.content or ""
                outcome.begun.set()
    except openai.APIError as error:
        outcome.error = error.message
    outcome.begun.set()
    outcome.seconds = time.monotonic() - started


def prompt_of(n: int) -> str:
    return " ".join(f"r{n}w{i}" for i in range(WORDS))


async def one_run(stack: OwnStack, streams: int, arriving: int, down: float) -> list[Outcome]:
    client = openai.AsyncOpenAI(
        base_url=stack.base_url, api_key=stack.admin_key, max_retries=0, timeout=300
    )
    first = [Outcome(f"You said: {prompt_of(n)}") for n in range(streams)]
    tasks = [asyncio.create_task(stream(client, prompt_of(n), o)) for n, o in enumerate(first)]
    await asyncio.wait_for(asyncio.gather(*(o.begun.wait() for o in first)), 60)
    await asyncio.to_thread(stack.kill, "demo-engine")
    killed = time.monotonic()
    mid = sum(1 for o in first if o.text and o.text != o.expected)
    print(f"  engine SIGKILLed with {mid} of {streams} streams mid-answer", flush=True)
    later = [Outcome(f"You said: {prompt_of(streams + n)}") for n in range(arriving)]
    for n, outcome in enumerate(later):
        tasks.append(asyncio.create_task(stream(client, prompt_of(streams + n), outcome)))
        await asyncio.sleep(down / 2 / max(arriving, 1))  # arriving over the first half
    await asyncio.sleep(max(0.0, down - (time.monotonic() - killed)))
    stack.start("demo-engine")
    print(f"  engine started again after {time.monotonic() - killed:.1f} s", flush=True)
    await asyncio.gather(*tasks)
    await client.close()
    return first + later


def report(label: str, outcomes: list[Outcome], streams: int) -> None:
    verdicts = Counter(o.verdict for o in outcomes[:streams])
    arrived = Counter(o.verdict for o in outcomes[streams:])
    slowest = max(o.seconds for o in outcomes)
    print(
        f"{label}: in flight at the kill {dict(verdicts)}; arriving while down {dict(arrived)}; "
        f"client errors {sum(o.error is not None for o in outcomes)} of {len(outcomes)}; "
        f"slowest {slowest:.1f} s",
        flush=True,
    )
    for message, count in Counter(o.error for o in outcomes if o.error).most_common():
        print(f"    {count} x {message}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--arriving", type=int, default=10)
    parser.add_argument("--down", type=float, default=20.0)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tiller-outage-") as data:
        stack = OwnStack(Path(data))  # its models.yaml: `demo` on the demo engine, resumable
        stack.env["TILLER_DEMO_TOKEN_DELAY_MS"] = "30"
        try:
            stack.start_all()
            for run in range(1, args.runs + 1):
                print(f"run {run}:", flush=True)
                outcomes = asyncio.run(one_run(stack, args.streams, args.arriving, args.down))
                report(f"run {run}", outcomes, args.streams)
        finally:
            stack.stop()


if __name__ == "__main__":
    main()
