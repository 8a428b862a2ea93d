"""Start and stop a real vLLM OpenAI server on CPU, for the tests that talk to a real engine.

Standard library only, so any python can import it. The venv comes from `engine_env.sh vllm`
(cached) and the model from tiny_llama.py (built once into the directory given). From pytest:

    model_dir = vllm_server.ensure_model()  # the venv and the model: built once, then cached
    server = vllm_server.start(model_dir, port)  # chat, completions, tools; waits until ready
    ... server.url ...  # "http://127.0.0.1:PORT/v1"
    server.stop()

A server's processes end with the process that started it, even a SIGKILLed one
(group_guard.py). One vLLM server runs one runner: generation or pooling (embeddings), never
both; for both, start two side by side (on 2 cores: ~30 s for one alone, ~40 s for both launched together):

    gen, emb = vllm_server.launch(d, p1), vllm_server.launch(d, p2, embeddings=True)
    gen.wait_ready(); emb.wait_ready()

By hand:  python tests/engines/vllm_server.py [--embeddings] [--port N] [--model-dir D] [-- ARGS]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if not __package__:  # run as a script: python tests/engines/vllm_server.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.engines import group_guard

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("TILLER_ENGINE_CACHE", Path.home() / ".cache" / "tiller-engines"))
# Named after the builder's content: a changed tiny_llama.py builds a new model, not reuses one.
_BUILDER = hashlib.sha256((HERE / "tiny_llama.py").read_bytes()).hexdigest()[:12]
DEFAULT_MODEL_DIR = CACHE / f"tiny-llama-{_BUILDER}"
MODEL_NAME = "tiny-llama"
MAX_MODEL_LEN = 4096
# One runner per server: generation (chat, completions, tools) or pooling (embeddings).
GENERATION_ARGS = (
    # Tool calls as <tool_call>{json}</tool_call>; the parser needs no special tokens.
    "--enable-auto-tool-choice", "--tool-call-parser", "hermes",
    # Forced tool calls (required, named) follow each tool's schema, as if `strict: true`.
    "--tool-strict-level", "parameter",
    # No free whitespace in grammar-constrained JSON: a random model ends it sooner.
    "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}',
)  # fmt: skip
EMBEDDING_ARGS = ("--runner", "pooling", "--convert", "embed")


def venv_python() -> str:
    """The vLLM venv's python, installing it the first time (minutes; then instant)."""
    out = subprocess.run(
        ["bash", str(HERE / "engine_env.sh"), "vllm"], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    return out.strip().splitlines()[-1]


def ensure_model(model_dir: Path = DEFAULT_MODEL_DIR, python: str | None = None) -> Path:
    """Build the tiny random Llama into model_dir unless it is already there."""
    subprocess.run(
        [python or venv_python(), str(HERE / "tiny_llama.py"), str(model_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return model_dir


@dataclass
class VllmServer:
    proc: subprocess.Popen[bytes]  # the API server
    url: str  # the OpenAI base URL, ending in /v1
    log_path: Path
    guard: subprocess.Popen[bytes]  # its process group's leader: see group_guard.py

    def stop(self) -> None:
        """SIGTERM the server's process group (engine core included), then SIGKILL it; return
        once every process of the group is gone (the memory and the port are free again)."""
        group_guard.stop(self.guard, self.proc)

    def begin_stop(self) -> None:
        """stop() without waiting: several servers then stop side by side (call stop() next)."""
        group_guard.begin_stop(self.guard)

    def kill(self) -> None:
        """SIGKILL the whole group at once (gone, not draining), and reap it."""
        group_guard.kill(self.guard, self.proc)

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Wait until GET /health answers (it needs no key, unlike /v1 with --api-key); stop
        the server and raise if it never does."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vLLM exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                health = self.url.removesuffix("/v1") + "/health"
                with urllib.request.urlopen(health, timeout=5) as response:
                    if response.status == 200:
                        return
            except OSError:  # URLError included: not listening yet
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"vLLM not ready after {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(1.0)

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def launch(
    model_dir: Path | str,
    port: int,
    *,
    host: str = "127.0.0.1",
    embeddings: bool = False,
    served_model_name: str = MODEL_NAME,
    max_model_len: int = MAX_MODEL_LEN,
    extra_args: tuple[str, ...] = (),
    log_path: Path | None = None,
    python: str | None = None,
) -> VllmServer:
    """Start vLLM's OpenAI server without waiting for it (see VllmServer.wait_ready)."""
    python = python or venv_python()
    log_path = log_path or CACHE / "logs" / f"vllm-{port}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    args = [
        python, "-m", "vllm.entrypoints.openai.api_server",  # `vllm serve` wants dist "vllm"
        "--model", str(model_dir),
        "--served-model-name", served_model_name,
        "--host", host,
        "--port", str(port),
        "--dtype", "float32",
        "--enforce-eager",
        "--max-model-len", str(max_model_len),
        *(EMBEDDING_ARGS if embeddings else GENERATION_ARGS),
        *extra_args,
    ]  # fmt: skip
    env = {
        **os.environ,
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache; the default takes far more
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    with log_path.open("wb") as log:
        # In a process group that ends with this process, however it ends (group_guard.py);
        # stop() ends the engine core too.
        guard, proc = group_guard.launch(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    return VllmServer(proc, f"http://{host}:{port}/v1", log_path, guard)


def start(model_dir: Path | str, port: int, *, timeout: float = 300.0, **kw: Any) -> VllmServer:
    """Start vLLM's OpenAI server and return once GET /health answers (see launch)."""
    server = launch(model_dir, port, **kw)
    server.wait_ready(timeout)
    return server


def main() -> None:
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description="Run a vLLM OpenAI server on CPU.")
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--embeddings", action="store_true", help="pooling runner: /v1/embeddings")
    parser.add_argument("--max-model-len", type=int, default=MAX_MODEL_LEN)
    ns = parser.parse_args(argv[:split])
    python = venv_python()
    ensure_model(ns.model_dir, python)
    began = time.monotonic()
    server = start(
        ns.model_dir,
        ns.port,
        host=ns.host,
        embeddings=ns.embeddings,
        max_model_len=ns.max_model_len,
        extra_args=tuple(argv[split + 1 :]),  # after `--`: to vLLM as they are
        python=python,
    )
    print(f"vLLM ready at {server.url} in {time.monotonic() - began:.1f}s (log {server.log_path})")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on SIGTERM too
    try:
        server.proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
