"""A real Triton Inference Server (from the `nvidia-pytriton` wheel, on CPU) with four tiny,
deterministic models, for the Triton adapter's tests.

    python tests/engines/triton_server.py --grpc-port 8001 --http-port 8000

Run it with a Python that has `nvidia-pytriton` installed (it may be its own venv: pytriton pins
tritonclient[grpc], which pins protobuf<7). It prints `TRITON READY grpc=N http=M` once every
model is loaded, and serves until SIGTERM or SIGINT.

Models (every input is BYTES text or INT32; no tokenizer, a "token" is a whitespace word):

- `tiny-text` (classic, no batching): `text_input` BYTES [1], optional `max_tokens` INT32 [1]
  -> `text_output` BYTES [1] and `completion_tokens` INT32 [1]. The "generation" is the words of
  the prompt's last non-empty line, reversed, cut at `max_tokens` words. A prompt containing
  TRITON_FAIL makes the model raise (Triton answers an error); one containing TRITON_ECHO is
  answered with the whole prompt, verbatim (to check how a client built it).
- `tiny-stream` (decoupled): the same inputs; one response per word of that generation (each
  `text_output` is a word, with a space before every word but the first), then the final flag.
  TRITON_FAIL fails after the first word; TRITON_SLOW waits 0.5 s before each word.
- `tiny-topic` (classic, no batching): `text_input` BYTES [1] -> `text_output` BYTES [1], a
  topic label: `code`, `billing` or `general`, whichever TOPIC_WORDS' words the text has most of
  (none: `general`). A tiny keyword classifier, for the classify-then-generate pipeline.
- `tiny-embed` (classic, dynamic batching up to 4): `text_input` BYTES [-1, 1] -> `embedding`
  FP32 [-1, 8]: a unit vector derived from the SHA-256 of the text.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import signal
import sys
import sysconfig
import threading
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

EMBED_DIM = 8
SLOW_SECONDS = 0.5


TOPIC_WORDS = {
    "code": {"python", "function", "error", "bug", "code", "compile", "typeerror", "exception"},
    "billing": {"invoice", "charged", "refund", "payment", "bill", "subscription", "price"},
}


def topic(text: str) -> str:
    """The label tiny-topic gives `text`."""
    words = {w.strip(".,!?:;()'\"").lower() for w in text.split()}
    labels = list(TOPIC_WORDS)
    scores = np.array([len(words & TOPIC_WORDS[label]) for label in labels])
    return labels[int(scores.argmax())] if scores.max() > 0 else "general"


def generate(prompt: str, max_tokens: int | None) -> list[str]:
    """The words tiny-text answers `prompt` with (tiny-stream sends them one by one)."""
    if "TRITON_ECHO" in prompt:
        return [prompt]
    lines = [line for line in prompt.splitlines() if line.strip()]
    words = list(reversed(lines[-1].split())) if lines else []
    if max_tokens is not None and max_tokens >= 0:
        words = words[:max_tokens]
    return words


def embed(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    vector = np.frombuffer(digest[: EMBED_DIM * 4], dtype=np.int32).astype(np.float64)
    vector /= np.linalg.norm(vector) or 1.0
    return [float(x) for x in vector]


def _text(request: Any) -> str:
    return bytes(np.asarray(request["text_input"]).reshape(-1)[0]).decode("utf-8")


def _max_tokens(request: Any) -> int | None:
    if "max_tokens" not in request:
        return None
    return int(np.asarray(request["max_tokens"]).reshape(-1)[0])


def _bytes(text: str) -> np.ndarray:
    return np.array([text.encode("utf-8")], dtype=np.object_)


def tiny_text(requests: list[Any]) -> list[dict[str, np.ndarray]]:
    responses = []
    for request in requests:
        prompt = _text(request)
        if "TRITON_FAIL" in prompt:
            raise RuntimeError("tiny-text was asked to fail (TRITON_FAIL)")
        words = generate(prompt, _max_tokens(request))
        responses.append(
            {
                "text_output": _bytes(" ".join(words)),
                "completion_tokens": np.array([len(words)], dtype=np.int32),
            }
        )
    return responses


async def tiny_stream(requests: list[Any]) -> AsyncIterator[list[dict[str, np.ndarray]]]:
    # Not batching: Triton hands this model one request at a time.
    (request,) = requests
    prompt = _text(request)
    for index, word in enumerate(generate(prompt, _max_tokens(request))):
        if index and "TRITON_FAIL" in prompt:
            raise RuntimeError("tiny-stream was asked to fail (TRITON_FAIL)")
        if "TRITON_SLOW" in prompt:
            await asyncio.sleep(SLOW_SECONDS)
        yield [{"text_output": _bytes(word if index == 0 else " " + word)}]


def tiny_topic(requests: list[Any]) -> list[dict[str, np.ndarray]]:
    return [{"text_output": _bytes(topic(_text(request)))} for request in requests]


def tiny_embed(requests: list[Any]) -> list[dict[str, np.ndarray]]:
    responses = []
    for request in requests:
        texts = [bytes(item).decode("utf-8") for item in np.asarray(request["text_input"]).ravel()]
        vectors = np.array([embed(text) for text in texts], dtype=np.float32)
        responses.append({"embedding": vectors.reshape(len(texts), EMBED_DIM)})
    return responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=0, help="0: metrics off")
    parser.add_argument(
        "--workspace", default=None, help="pytriton's workspace (default: a temp dir)"
    )
    args = parser.parse_args()

    # Triton's Python backend stub must load this interpreter's libpython, not another one.
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join(
            p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p
        )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")

    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        http_address="127.0.0.1",
        http_port=args.http_port,
        allow_metrics=args.metrics_port > 0,
        metrics_port=args.metrics_port or None,
        exit_timeout_secs=5,  # on stop, in-flight requests get this long (a test's slow ones)
    )
    text_inputs = [
        Tensor(name="text_input", dtype=np.bytes_, shape=(1,)),
        Tensor(name="max_tokens", dtype=np.int32, shape=(1,), optional=True),
    ]
    triton = Triton(config=config, workspace=args.workspace)
    triton.bind(
        model_name="tiny-text",
        infer_func=tiny_text,
        inputs=text_inputs,
        outputs=[
            Tensor(name="text_output", dtype=np.bytes_, shape=(1,)),
            Tensor(name="completion_tokens", dtype=np.int32, shape=(1,)),
        ],
        config=ModelConfig(batching=False),
    )
    triton.bind(
        model_name="tiny-stream",
        infer_func=tiny_stream,
        inputs=text_inputs,
        outputs=[Tensor(name="text_output", dtype=np.bytes_, shape=(1,))],
        config=ModelConfig(batching=False, decoupled=True),
    )
    triton.bind(
        model_name="tiny-topic",
        infer_func=tiny_topic,
        inputs=[Tensor(name="text_input", dtype=np.bytes_, shape=(1,))],
        outputs=[Tensor(name="text_output", dtype=np.bytes_, shape=(1,))],
        config=ModelConfig(batching=False),
    )
    triton.bind(
        model_name="tiny-embed",
        infer_func=tiny_embed,
        inputs=[Tensor(name="text_input", dtype=np.bytes_, shape=(1,))],
        outputs=[Tensor(name="embedding", dtype=np.float32, shape=(EMBED_DIM,))],
        config=ModelConfig(max_batch_size=4, batcher=DynamicBatcher()),
    )

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    triton.run()
    print(f"TRITON READY grpc={args.grpc_port} http={args.http_port}", flush=True)
    try:
        while not stop.wait(1.0):
            if not triton.is_alive():
                print("TRITON DIED", file=sys.stderr, flush=True)
                sys.exit(1)
    finally:
        triton.stop()


if __name__ == "__main__":
    main()
