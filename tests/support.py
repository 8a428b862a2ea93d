"""Helpers for tests that run real processes: free ports, `tiller up`, waiting."""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import dataclasses
import functools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import orjson
from temporalio.client import Client

from tiller.cli import certs
from tiller.common.grpc_client import channel
from tiller.common.internal_tls import InternalTls
from tiller.common.payload_codec import PayloadKeys, new_key_line
from tiller.common.sealing import Sealer
from tiller.common.temporal import sealed_converter
from tiller.gateway.settings import GatewaySettings

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 180


def service_env_names() -> set[str]:
    """Every environment variable the services' settings classes read."""
    from tiller.common.settings import env_names
    from tiller.demo_engine.settings import PREFIX as DEMO_PREFIX
    from tiller.demo_engine.settings import DemoSettings
    from tiller.gateway.settings import PREFIX as GATEWAY_PREFIX
    from tiller.gateway.settings import GatewaySettings
    from tiller.quota.settings import PREFIX as QUOTA_PREFIX
    from tiller.quota.settings import QuotaSettings
    from tiller.router.settings import PREFIX as ROUTER_PREFIX
    from tiller.router.settings import RouterSettings
    from tiller.worker.settings import PREFIX as WORKER_PREFIX
    from tiller.worker.settings import WorkerSettings

    return (
        env_names(GatewaySettings, GATEWAY_PREFIX)
        | env_names(RouterSettings, ROUTER_PREFIX)
        | env_names(QuotaSettings, QUOTA_PREFIX)
        | env_names(WorkerSettings, WORKER_PREFIX)
        | env_names(DemoSettings, DEMO_PREFIX)
    )


def _ephemeral_low() -> int:
    """The lowest port the kernel hands to outgoing connections."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


_EPHEMERAL_LOW = _ephemeral_low()
_handed_out: set[int] = set()


def free_port() -> int:
    """A port free now, for a server a test starts, chosen below the kernel's ephemeral range:
    a port chosen in that range (bind to 0) can be taken by any outgoing connection before the
    server binds it (seen in CI: a worker's metrics port, "Address already in use"). Each port
    is handed out once per test run."""
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randrange(10_000, max(10_001, _EPHEMERAL_LOW))
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # below the range is full: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def closed_port() -> int:
    """A port with nothing listening (bound and released, so nothing else is likely there)."""
    return free_port()


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]
    admin_key: str
    gateway_port: int
    grpc_port: int
    router_port: int
    quota_port: int
    redis_port: int
    temporal_port: int
    demo_port: int
    data_dir: Path
    process: subprocess.Popen[str]
    output: list[str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}/v1"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"


TEST_PAYLOAD_KEYS = new_key_line("test-1")
# Opens and seals what the stack's services keep in Redis (they have TEST_PAYLOAD_KEYS).
TEST_SEALER = Sealer(PayloadKeys.parse(TEST_PAYLOAD_KEYS))


@functools.cache
def tls_dir_of_tests() -> str:
    """The internal plane's certificates every service of the test session presents (as
    TEST_PAYLOAD_KEYS are its payload keys): made once, removed at exit."""
    directory = tempfile.mkdtemp(prefix="tiller-test-tls-")
    atexit.register(shutil.rmtree, directory, True)
    certs.make(Path(directory), None)
    return directory


def internal_tls(identity: str) -> InternalTls:
    """`identity`'s certificate and key, for a test that calls a service as that one would."""
    return InternalTls.load(tls_dir_of_tests(), identity)


def internal_channel(address: str, server: str, caller: str) -> grpc.aio.Channel:
    """A channel to the internal service `server` at `address`, as service `caller`."""
    return channel(address, internal_tls(caller), server)


TEST_MODELS = """\
models:
  demo:
    aliases: [demo-latest]
    owned_by: tiller-demo-engine
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        task_queue: test.demo
        max_concurrency: 64
        resume: continue  # the demo engine continues a partial answer, as vLLM does
  single:  # one engine slot: requests queue in Temporal, in priority order
    deployments:
      - name: demo-one-slot
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.single
        max_concurrency: 1
        resume: continue
  broken:  # its engine is never there: requests wait for it 1 s, then get a clear 503
    retry: {{max_attempts: 2, initial_interval_seconds: 0.1, maximum_interval_seconds: 0.2}}
    queue_timeout_seconds: 1
    deployments:
      - name: nowhere
        adapter: vllm
        endpoint: http://127.0.0.1:{closed_port}/v1
        task_queue: test.broken
  durable:  # served only by workers a test starts (and kills)
    heartbeat_timeout_seconds: 3
    deployments:
      - name: demo-durable
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.durable
        resume: continue
  failover:  # refused, then HTTP 500s, then the fallback model
    retry: {{max_attempts: 2, initial_interval_seconds: 0.1, maximum_interval_seconds: 0.2}}
    deployments: &down
      - name: refused
        adapter: openai
        endpoint: http://127.0.0.1:{closed_port}/v1
        task_queue: test.refused
      - name: errors-500
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: failing
        task_queue: test.failing
    fallbacks: [demo]
  mixed:  # breaks off mid-answer on a deployment that cannot continue; the next one can
    deployments:
      - name: breaks-midway
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: breaking
        task_queue: test.breaking
        resume: none
      - name: continues
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        resume: continue
  terse:  # defaults and a system prompt from YAML, on the demo engine
    defaults: {{max_tokens: 3, temperature: 0.1}}
    system_prompt: Be brief.
    deployments:
      - name: terse-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        max_concurrency: 64
  briefed:  # a long system prompt from YAML (tests/e2e/test_reservations.py)
    system_prompt: "@BRIEFING@"
    deployments:
      - name: briefed-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
  unserved:  # no worker polls its queue: the queue timeout answers
    queue_timeout_seconds: 1
    deployments:
      - name: nobody-home
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.unserved
  unpolled:  # no worker polls its queue, and the request waits there a minute
    deployments:
      - name: nobody-listens
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.unpolled
  stalled:  # its draft waits on that queue: the pipeline's own timeout ends the run
    timeout_seconds: 2
    pipeline:
      workflow: draft-then-refine
      options: {{draft: unpolled, refine: demo}}
  private:  # personal data masked for the engine, the originals restored for the caller
    pii: mask+restore
    deployments:
      - name: private-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        max_concurrency: 64
  guarded:  # refuses resident numbers and cards outright; masks the rest (the default)
    pii: [mask, {{mode: block, types: [KR_RRN, KR_FRN, CARD]}}]
    deployments:
      - name: guarded-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        max_concurrency: 64
  raw:  # no masking: the engine sees what the caller sent
    pii: off
    deployments:
      - name: raw-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        max_concurrency: 64
  all-down:
    retry: {{max_attempts: 2, initial_interval_seconds: 0.1, maximum_interval_seconds: 0.2}}
    timeout_seconds: 5
    queue_timeout_seconds: 5
    deployments: *down
  quoting:  # no masking, and its engine's errors quote the prompt: nothing may keep them
    pii: off
    retry: {{max_attempts: 2, initial_interval_seconds: 0.1, maximum_interval_seconds: 0.2}}
    deployments:
      - name: quoting-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: quoting
        task_queue: test.demo
        max_concurrency: 64
  quoting-twice:  # the same through the failover workflow (its history holds the failures)
    pii: off
    retry: {{max_attempts: 1}}
    deployments:
      - name: quoting-first
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: quoting
        task_queue: test.demo
      - name: quoting-second
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: quoting
        task_queue: test.demo
  reviewer:  # a second demo model for pipelines: the demo engine under another system prompt
    system_prompt: You review answers.
    deployments:
      - name: reviewer-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: demo
        task_queue: test.demo
        max_concurrency: 64
  flaky:  # its engine fails every other request (the first of two): one retry answers
    retry: {{max_attempts: 3, initial_interval_seconds: 0.1, maximum_interval_seconds: 0.2}}
    deployments:
      - name: flaky-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo_port}/v1
        engine_model: flaky
        task_queue: test.demo
        max_concurrency: 64
  careful:  # pipelines (services/pipelines/) over the demo engine
    pipeline:
      workflow: draft-then-refine
      options: {{draft: demo, refine: reviewer}}
  careful-flaky:
    pipeline:
      workflow: draft-then-refine
      options: {{draft: flaky, refine: reviewer}}
  helpdesk:  # the demo engine stands in for the classifier: it echoes, so a label in the
    pipeline:  # question is the label it "answers" (the real Triton classifier: tests/engines)
      workflow: classify-then-generate
      options:
        classifier: demo
        default: general
        routes:
          code: {{model: reviewer, system: You are a senior engineer. Answer with code.}}
          general: {{model: demo}}
  panel:
    pipeline:
      workflow: fan-out-merge
      options: {{models: [demo, reviewer], merge: demo}}
  panel-down:  # one of its models cannot answer
    pipeline:
      workflow: fan-out-merge
      options: {{models: [demo, broken], merge: demo}}
  panel-twice:  # one model asked twice at once: its route is looked up once
    pipeline:
      workflow: fan-out-merge
      options: {{models: [demo, demo], merge: demo}}
  panel-all-down:  # both of its steps fail, together
    timeout_seconds: 60
    pipeline:
      workflow: fan-out-merge
      options: {{models: [broken, broken], merge: demo}}
  long-chats:
    pipeline:
      workflow: summarize-then-answer
      options: {{summarize: demo, answer: reviewer}}
  approved:
    timeout_seconds: 120
    pipeline:
      workflow: human-approval
      options: {{draft: demo, approval_timeout_seconds: 60}}
  approved-quickly:
    pipeline:
      workflow: human-approval
      options: {{draft: demo, approval_timeout_seconds: 1}}
"""
# The system prompt of the `briefed` model: 200 words, which the demo engine counts as 200 tokens.
BRIEFING = " ".join(f"w{i}" for i in range(200))
TEST_MODELS = TEST_MODELS.replace("@BRIEFING@", BRIEFING)
# The stack's own worker: every queue but test.durable, whose workers the tests run themselves.
STACK_TASK_QUEUES = "test.demo,test.single,test.broken,test.refused,test.failing,test.breaking"


def stack_env(data_dir: Path, **overrides: str) -> tuple[dict[str, str], dict[str, int]]:
    ports = {
        name: free_port()
        for name in (
            "gateway",
            "grpc",
            "router",
            "quota",
            "redis",
            "temporal",
            "temporal_ui",
            "demo",
            "router_metrics",
            "quota_metrics",
            "worker_metrics",
            "worker_sdk_metrics",
        )
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")}
    env.update(
        {
            "TILLER_UP_DATA_DIR": str(data_dir),
            "TILLER_UP_REDIS_PORT": str(ports["redis"]),
            "TILLER_UP_TEMPORAL_PORT": str(ports["temporal"]),
            "TILLER_UP_TEMPORAL_UI_PORT": str(ports["temporal_ui"]),
            "TILLER_GATEWAY_PORT": str(ports["gateway"]),
            "TILLER_GATEWAY_GRPC_PORT": str(ports["grpc"]),
            # Every gateway of the run (tiller up's, and those a test starts) shares it.
            "TILLER_GATEWAY_FILES_DIR": str(data_dir / "files"),
            "TILLER_ROUTER_PORT": str(ports["router"]),
            "TILLER_QUOTA_PORT": str(ports["quota"]),
            "TILLER_DEMO_PORT": str(ports["demo"]),
            "TILLER_UP_ROUTER_METRICS_PORT": str(ports["router_metrics"]),
            "TILLER_UP_QUOTA_METRICS_PORT": str(ports["quota_metrics"]),
            "TILLER_UP_WORKER_METRICS_PORT": str(ports["worker_metrics"]),
            "TILLER_UP_WORKER_SDK_METRICS_PORT": str(ports["worker_sdk_metrics"]),
            "TILLER_DEMO_TOKEN_DELAY_MS": "1",
            "TILLER_DEMO_LOG_LEVEL": "info",  # the cancellation test reads its "stream aborted"
            "TILLER_DEMO_SERVED_MODELS": "demo,breaking,flaky",
            "TILLER_DEMO_FLAKY_MODELS": "flaky",
            "TILLER_DEMO_FAILING_MODELS": "failing",
            "TILLER_DEMO_BREAKING_MODELS": "breaking",
            "TILLER_DEMO_QUOTING_MODELS": "quoting",
            "TILLER_DEMO_RECORD_REQUESTS": "256",  # GET /received: what the engine was sent
            "TILLER_ADMIN_KEY": "tk-test-" + secrets.token_urlsafe(16),
            # Every service and every extra one a test starts seals payloads with this key.
            "TILLER_PAYLOAD_KEYS": TEST_PAYLOAD_KEYS,
            # And with these certificates they trust each other.
            "TILLER_INTERNAL_TLS_DIR": tls_dir_of_tests(),
        }
    )
    env.update(overrides)
    return env, ports


_PR_SET_PDEATHSIG = 1


def dies_with_this_thread(sig: int = signal.SIGTERM) -> Callable[[], None]:
    """For Popen's preexec_fn: the kernel sends the child `sig` when the thread starting it
    ends (PR_SET_PDEATHSIG; pytest's main thread: the run), so a run killed outright leaves no
    process behind. Linux; elsewhere, nothing."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)  # looked up in the parent
    parent = os.getpid()

    def ask() -> None:  # pragma: no cover - runs in the child between fork and exec
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, sig)
            if os.getppid() != parent:  # the run died before the kernel was asked
                os._exit(1)

    return ask


def start_up(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tiller", "up", *args],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A killed run's `tiller up` gets SIGTERM and stops its stack, as on Ctrl-C.
        preexec_fn=dies_with_this_thread(),
    )


def collect_output(process: subprocess.Popen[str], output: list[str]) -> threading.Event:
    """Read the process's output into `output` in a thread; the event is set at the banner."""
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout
        with process.stdout:
            for line in process.stdout:
                output.append(line.rstrip("\n"))
                if line.startswith("Tiller is up."):
                    ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    return ready


def wait_until_up(process: subprocess.Popen[str], output: list[str]) -> None:
    ready = collect_output(process, output)
    if not ready.wait(START_TIMEOUT) or process.poll() is not None:
        process.kill()
        process.wait()
        raise RuntimeError("tiller up did not start:\n" + "\n".join(output))


def stop_up(process: subprocess.Popen[str]) -> int:
    process.send_signal(signal.SIGINT)
    try:
        return process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def gateway_settings(stack: Stack, **overrides: Any) -> GatewaySettings:
    """Settings of a gateway run in the test's own process, over the stack's services."""
    settings = GatewaySettings(
        redis_url=stack.redis_url,
        temporal_address=stack.temporal_address,
        router_address=f"127.0.0.1:{stack.router_port}",
        quota_address=f"127.0.0.1:{stack.quota_port}",
        idle_check_seconds=0.5,
        payload_keys=TEST_PAYLOAD_KEYS,
        internal_tls_dir=tls_dir_of_tests(),
        files_dir=str(stack.data_dir / "files"),
    )
    return dataclasses.replace(settings, **overrides)


async def temporal_client(stack: Stack) -> Client:
    """A Temporal client that opens the stack's sealed payloads (TEST_PAYLOAD_KEYS)."""
    keys = PayloadKeys.parse(TEST_PAYLOAD_KEYS)
    return await Client.connect(stack.temporal_address, data_converter=sealed_converter(keys))


def wait_for(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval)
    return False


def wiring(
    redis_port: int, temporal_port: int, router_port: int, quota_port: int
) -> dict[str, str]:
    """How services find their dependencies and each other (what `tiller up` tells them)."""
    return {
        "TILLER_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "TILLER_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "TILLER_ROUTER_ADDRESS": f"127.0.0.1:{router_port}",
        "TILLER_QUOTA_ADDRESS": f"127.0.0.1:{quota_port}",
        "TILLER_INTERNAL_TLS_DIR": tls_dir_of_tests(),
        "PYTHONUNBUFFERED": "1",
    }


def service_env(stack: Stack, **extra: str) -> dict[str, str]:
    """The environment `tiller up` gives its services, for one more started by a test."""
    env = {k: v for k, v in stack.env.items() if k != "TILLER_ADMIN_KEY"}
    ports = (stack.redis_port, stack.temporal_port, stack.router_port, stack.quota_port)
    return env | wiring(*ports) | extra


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A process of a test's own, its output appended to `log`; SIGKILLed by the kernel if the
    run dies first, so a killed run leaves no server behind. The kernel's signal follows the
    thread that started the process, and a test may restart a server from a thread of its own
    that ends at once: every one is started from one thread that lives as long as the run."""

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            return subprocess.Popen(
                argv,
                env=env,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=dies_with_this_thread(signal.SIGKILL),
            )

    return _SPAWNER.submit(start).result()


# The thread every spawned process is started from (see spawn): idle, it lives to the run's end.
_SPAWNER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="spawner")


def start_service(stack: Stack, module: str, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    """One more service process (e.g. a second worker) beside the stack's, logging to `log`."""
    return spawn([sys.executable, "-m", module], service_env(stack, **extra), log)


def stop_service(process: subprocess.Popen[bytes]) -> None:
    stop_all([process])


def stop_all(processes: Iterable[subprocess.Popen[bytes]], timeout: float = 20) -> None:
    """SIGTERM every one still running (all at once: they stop in parallel), then wait for
    each up to `timeout`, SIGKILL if it is not gone by then."""
    processes = list(processes)
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def chunks_of(line: str) -> dict[str, Any] | None:
    """The JSON of one SSE data line; None for anything else (and for [DONE])."""
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    chunk: dict[str, Any] = orjson.loads(line[6:])
    return chunk


def text_of(lines: list[str]) -> str:
    """The answer an SSE stream of chat chunks carries."""
    return "".join(
        choice["delta"].get("content") or ""
        for line in lines
        if (chunk := chunks_of(line)) is not None
        for choice in chunk.get("choices") or []
    )


def resume_handed_over(
    base_url: str, message: str, lines: list[str], headers: dict[str, str]
) -> list[str]:
    """The rest of a stream a stopping gateway handed over: read where its last error event
    (`message`) says, from the last event id the client got (`lines`), through `base_url`
    (…/v1). It must end with [DONE]."""
    request_id = message.split("/v1/chat/completions/")[1].split("/")[0]
    last_id = [line for line in lines if line.startswith("id: ")][-1].removeprefix("id: ")
    with httpx.stream(
        "GET",
        f"{base_url}/chat/completions/{request_id}/stream",
        headers=headers | {"last-event-id": last_id},
        timeout=120,
    ) as resumed:
        assert resumed.status_code == 200
        rest = list(resumed.iter_lines())
    assert rest[-2:] == ["data: [DONE]", ""] or rest[-1] == "data: [DONE]"
    return rest


@dataclass
class Replica:
    """A quota and a gateway on it, beside the stack's, on the stack's Redis and Temporal."""

    url: str  # the gateway's base URL (no /v1)
    quota: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    quota_address: str = ""

    def stop(self) -> None:
        stop_service(self.gateway)
        stop_service(self.quota)


def start_replica(stack: Stack, name: str, **quota_settings: str) -> Replica:
    """A second quota and gateway (`name` names their logs); returns once the gateway is ready."""
    logs = stack.data_dir / "logs"
    quota_port, gateway_port, grpc_port = free_port(), free_port(), free_port()
    quota = start_service(
        stack,
        "tiller.quota",
        logs / f"quota-{name}.log",
        TILLER_QUOTA_PORT=str(quota_port),
        **quota_settings,
    )
    gateway = start_service(
        stack,
        "tiller.gateway",
        logs / f"gateway-{name}.log",
        TILLER_QUOTA_ADDRESS=f"127.0.0.1:{quota_port}",
        TILLER_GATEWAY_PORT=str(gateway_port),
        TILLER_GATEWAY_GRPC_PORT=str(grpc_port),
    )
    replica = Replica(f"http://127.0.0.1:{gateway_port}", quota, gateway, f"127.0.0.1:{quota_port}")

    def ready() -> bool:
        try:
            return httpx.get(f"{replica.url}/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    if not wait_for(ready, timeout=60):
        replica.stop()
        raise RuntimeError(f"the {name} gateway did not become ready")
    return replica
