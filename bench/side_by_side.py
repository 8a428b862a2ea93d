"""The engine alone, the bare Temporal floor, and the whole Tiller path, side by side in one run.

    .venv/bin/python bench/side_by_side.py [--seconds 5] [--concurrency 1,16,64]
                                           [--burst 1000] [--targets engine,floor,tiller]
                                           [--scenarios "non-stream 16,stream 16,stream 256"]
                                           [--litellm PATH/TO/litellm]

Starts the engine stand-in (bench/engine.py), then `tiller up` (local Temporal dev server and
Redis, gateway, quota, router, worker) with models `fast` and `slow` served by that engine, and
the floor's worker (bench/floor.py) on the same Temporal and Redis. For every scenario and
concurrency it runs the three targets back to back:
  engine  the load generator straight to the engine;
  floor   one standalone Temporal activity per request, answer back through Redis, no Tiller;
  tiller  the OpenAI REST path through the gateway, with a real key (RPM and concurrency limits).
  litellm (with --litellm) LiteLLM's proxy in front of the same engine, for comparison: install it
          in a throwaway venv (`pip install 'litellm[proxy]'`, not a project dependency); it runs
          with no database, its master key only, one process, as its docs' quick start.
Every response is verified (bench/loadgen.py); a run with any error is reported as FAILED and
the command exits 1. CPU is read from /proc per process before and after each run: Tiller's own
processes (gateway + quota + router + worker), Temporal, Redis, the engine, the floor's worker
and this process (the load generator, or the floor's client).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import floor
import loadgen
import uvloop
from redis.asyncio import Redis
from temporalio.client import Client

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
TILLER = ("gateway", "quota", "router", "worker")
SCENARIOS = [
    loadgen.Scenario("non-stream 16", stream=False, tokens=16),
    loadgen.Scenario("stream 16", stream=True, tokens=16),
    loadgen.Scenario("stream 256", stream=True, tokens=256),
]
MODELS = """\
models:
  fast:
    owned_by: bench-engine
    deployments:
      - name: bench-fast
        adapter: openai
        endpoint: http://127.0.0.1:{engine}/v1
        engine_model: fast
        task_queue: tiller.bench.fast
        max_concurrency: 256
  slow:
    owned_by: bench-engine
    deployments:
      - name: bench-slow
        adapter: openai
        endpoint: http://127.0.0.1:{engine}/v1
        engine_model: slow
        task_queue: tiller.bench.slow
        max_concurrency: 2000
"""
LITELLM_CONFIG = """\
model_list:
  - model_name: fast
    litellm_params: {{model: openai/fast, api_base: "http://127.0.0.1:{engine}/v1", api_key: none}}
  - model_name: slow
    litellm_params: {{model: openai/slow, api_base: "http://127.0.0.1:{engine}/v1", api_key: none}}
general_settings:
  master_key: {master_key}
litellm_settings:
  telemetry: false
"""
FLOOR_QUEUE = "bench.floor"
_children: list[subprocess.Popen[bytes]] = []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def spawn(
    cmd: list[str], env: dict[str, str], log: Path, read: bool = True
) -> subprocess.Popen[bytes]:
    """`read`: its stdout is ours to read (wait_for_line); otherwise it goes to `log` too."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            env=env,
            stdout=subprocess.PIPE if read else out,
            stderr=out,
            start_new_session=True,
        )
    _children.append(proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, sig)
            proc.wait(wait)


def wait_for_line(proc: subprocess.Popen[bytes], pattern: str, timeout: float) -> str:
    """Read stdout until a line matches (returning it); fail if the process dies first."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if re.search(pattern, line):
            return line
    raise RuntimeError(f"{proc.args!r} did not print {pattern!r}:\n{''.join(seen)[-3000:]}")


@dataclass
class Processes:
    """Who to read CPU from: name -> pid."""

    pids: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.pids.items()}


@dataclass
class Run:
    target: str
    report: loadgen.Report
    cpu: dict[str, float]  # CPU seconds used during the measured run, per process

    @property
    def ok(self) -> bool:
        return self.report.errors == 0 and self.report.requests > 0

    def group(self, names: Iterator[str] | tuple[str, ...]) -> float:
        return sum(self.cpu.get(n, 0.0) for n in names)


@dataclass
class Bench:
    args: argparse.Namespace
    procs: Processes
    engine_url: str
    gateway_url: str
    api_key: str
    temporal: Client
    litellm_url: str | None
    litellm_key: str
    redis: Redis
    runs: list[tuple[loadgen.Scenario, int, Run]] = field(default_factory=list)

    async def measured(self, target: str, go: Callable[[], Awaitable[loadgen.Report]]) -> Run:
        before = self.procs.snapshot()
        report = await go()
        after = self.procs.snapshot()
        return Run(target, report, {k: after[k] - before[k] for k in after})

    async def scenario(self, scenario: loadgen.Scenario, concurrency: int) -> None:
        seconds, warm = self.args.seconds, min(1.0, self.args.seconds / 2)
        targets: dict[str, Callable[[float], Awaitable[loadgen.Report]]] = {
            "engine": lambda s: loadgen.run_closed_loop(
                self.engine_url, scenario, concurrency, s, warmup_seconds=0
            ),
            "floor": lambda s: floor.run_closed_loop(
                self.temporal, self.redis, FLOOR_QUEUE, scenario, concurrency, s
            ),
            "tiller": lambda s: loadgen.run_closed_loop(
                self.gateway_url, scenario, concurrency, s, api_key=self.api_key, warmup_seconds=0
            ),
        }
        if self.litellm_url is not None:
            url = self.litellm_url
            targets["litellm"] = lambda s: loadgen.run_closed_loop(
                url, scenario, concurrency, s, api_key=self.litellm_key, warmup_seconds=0
            )
        for name, go in targets.items():
            if name not in self.args.targets:
                continue
            await go(warm)  # warm-up: connections, caches; not measured
            run = await self.measured(name, lambda go=go: go(seconds))  # type: ignore[misc]
            self.runs.append((scenario, concurrency, run))
            print_run(scenario, concurrency, run)

    async def burst(self) -> list[Run]:
        """N slow streams at once: engine, floor, Tiller; the gateway's memory while they run."""
        scenario = loadgen.Scenario("slow stream", True, self.args.burst_tokens, model="slow")
        results = []
        label = f"{self.args.burst} x {scenario.name} {scenario.tokens}"
        names = ("engine", "floor", "tiller") + (("litellm",) if self.litellm_url else ())
        for name in names:
            go: Callable[[], Awaitable[loadgen.Report]]
            if name == "floor":
                go = lambda: floor.run_burst(  # noqa: E731
                    self.temporal, self.redis, FLOOR_QUEUE, scenario, self.args.burst
                )
            else:
                url, key = {
                    "engine": (self.engine_url, None),
                    "tiller": (self.gateway_url, self.api_key),
                    "litellm": (self.litellm_url or "", self.litellm_key),
                }[name]
                go = lambda url=url, key=key: loadgen.run_burst(  # type: ignore[misc]  # noqa: E731
                    url, scenario, self.args.burst, api_key=key
                )
            # The memory of the gateway under test: Tiller's, or LiteLLM's one process.
            watched = {"tiller": "gateway", "litellm": "litellm"}.get(name)
            memory = GatewayMemory(self.procs.pids[watched]) if watched else None
            sampling = asyncio.create_task(memory.sample()) if memory else None
            try:
                run = await self.measured(name, go)
            finally:
                if sampling is not None:
                    sampling.cancel()
            results.append(run)
            print_run(scenario, self.args.burst, run, label=label)
            if memory is not None:
                print(f"    {memory.describe()}", flush=True)
        return results


@dataclass
class GatewayMemory:
    """The gateway's peak RSS during a burst, and how many connections it held then."""

    pid: int
    base_kib: int = 0
    base_fds: int = 0
    peak_kib: int = 0
    fds_at_peak: int = 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def sample(self) -> None:
        self.base_kib, self.base_fds = rss_kib(self.pid), self.fds()
        while True:
            rss = rss_kib(self.pid)
            if rss > self.peak_kib:
                self.peak_kib, self.fds_at_peak = rss, self.fds()
            await asyncio.sleep(0.05)

    def describe(self) -> str:
        connections = max(self.fds_at_peak - self.base_fds, 1)
        per = (self.peak_kib - self.base_kib) / connections
        return (
            f"gateway RSS {self.base_kib / 1024:.1f} MiB before, {self.peak_kib / 1024:.1f} MiB "
            f"at peak with {connections} more open sockets (client connections): "
            f"{per:.1f} KiB per open request"
        )


def print_run(
    scenario: loadgen.Scenario, concurrency: int, run: Run, label: str | None = None
) -> None:
    r = run.report
    status = "ok" if run.ok else f"FAILED {r.errors} errors: {r.error_reasons}"
    label = label or f"{scenario.name} c={concurrency}"
    print(
        f"  {label:<22} {run.target:<6} lat p50 {r.latency_p50_ms:7.1f} p99 "
        f"{r.latency_p99_ms:7.1f} | ttft p50 {r.ttft_p50_ms:7.1f} p99 {r.ttft_p99_ms:7.1f} | "
        f"{r.requests_per_s:7.1f} req/s {r.tokens_per_s:9.0f} tok/s | "
        + cpu_line(run, r)
        + f" | {status}",
        flush=True,
    )


def cpu_line(run: Run, r: loadgen.Report) -> str:
    ok = r.requests - r.errors
    if not ok:
        return "cpu -"
    per = 1000 / ok
    groups = {
        "tiller": run.group(TILLER),
        "temporal": run.cpu.get("temporal", 0.0),
        "redis": run.cpu.get("redis", 0.0),
        "engine": run.cpu.get("engine", 0.0),
        "floor-worker": run.cpu.get("floor-worker", 0.0),
        "client": run.cpu.get("bench", 0.0),
        "litellm": run.cpu.get("litellm", 0.0),
    }
    shown = {
        "engine": ("engine", "client"),
        "floor": ("floor-worker", "client", "temporal", "redis", "engine"),
        "tiller": ("tiller", "temporal", "redis", "engine", "client"),
        "litellm": ("litellm", "engine", "client"),
    }[run.target]
    line = "cpu ms/req " + " ".join(f"{k} {groups[k] * per:.2f}" for k in shown)
    if run.target == "tiller":
        line += " (" + " ".join(f"{k} {run.cpu[k] * per:.2f}" for k in TILLER) + ")"
    return line


def summary(bench: Bench) -> bool:
    """The table of targets, per scenario; True if every run verified."""
    ok = all(run.ok for _, _, run in bench.runs)
    print("\nSummary (p50 / p99 ms; CPU ms per request, or per streamed token)")
    header = (
        f"{'scenario':<16}{'c':>4} {'engine ttft':>14} {'floor lat':>15} {'tiller ttft':>15}"
        f" {'tiller lat':>15} {'req/s e/f/t':>20} {'tok/s tiller':>13} {'tiller cpu':>11}"
        f" {'per tok':>8} {'tiller/floor req/s':>19}"
    )
    print(header)
    rows: dict[tuple[str, int], dict[str, Run]] = {}
    for scenario, c, run in bench.runs:
        rows.setdefault((scenario.name, c), {})[run.target] = run
    for (name, c), runs in rows.items():
        if not {"engine", "floor", "tiller"} <= runs.keys():
            continue  # a subset was asked for
        e, f, t = runs["engine"].report, runs["floor"].report, runs["tiller"].report
        tokens = next(s.tokens for s in SCENARIOS if s.name == name)
        done = max(t.requests - t.errors, 1)
        cpu = runs["tiller"].group(TILLER) * 1000 / done
        print(
            f"{name:<16}{c:>4} {e.ttft_p50_ms:6.1f}/{e.ttft_p99_ms:<7.1f}"
            f" {f.latency_p50_ms:6.1f}/{f.latency_p99_ms:<8.1f}"
            f" {t.ttft_p50_ms:6.1f}/{t.ttft_p99_ms:<8.1f}"
            f" {t.latency_p50_ms:6.1f}/{t.latency_p99_ms:<8.1f}"
            f" {e.requests_per_s:6.0f}/{f.requests_per_s:5.0f}/{t.requests_per_s:5.0f}"
            f" {t.tokens_per_s:13.0f} {cpu:11.2f} {cpu / tokens:8.3f}"
            f" {t.requests_per_s / max(f.requests_per_s, 1e-9):19.2f}"
        )
    if any("litellm" in runs for runs in rows.values()):
        litellm_summary(rows)
    return ok


def litellm_summary(rows: dict[tuple[str, int], dict[str, Run]]) -> None:
    """Tiller beside LiteLLM: throughput, added latency over the engine, CPU per request."""
    print("\nTiller beside LiteLLM (added = p50 minus the engine's; CPU of each gateway's own")
    print("processes per request: Tiller's four services + Temporal + Redis; LiteLLM's one)")
    print(
        f"{'scenario':<16}{'c':>4} {'req/s L/T':>13} {'tok/s L/T':>15} {'T/L req/s':>10}"
        f" {'added ttft L/T':>16} {'added lat L/T':>16} {'cpu ms/req L/T(own+temporal)':>30}"
    )
    for (name, c), runs in rows.items():
        if not {"engine", "tiller", "litellm"} <= runs.keys():
            continue
        e, t, lite = runs["engine"].report, runs["tiller"].report, runs["litellm"].report
        lcpu = runs["litellm"].cpu.get("litellm", 0.0) * 1000 / max(lite.requests - lite.errors, 1)
        done = max(t.requests - t.errors, 1)
        own = runs["tiller"].group(TILLER) * 1000 / done
        stack = runs["tiller"].group((*TILLER, "temporal", "redis")) * 1000 / done
        ratio = t.requests_per_s / lite.requests_per_s if lite.requests_per_s else float("inf")
        lat_l, lat_t = lite.latency_p50_ms - e.latency_p50_ms, t.latency_p50_ms - e.latency_p50_ms
        print(
            f"{name:<16}{c:>4} {lite.requests_per_s:6.0f}/{t.requests_per_s:<6.0f}"
            f" {lite.tokens_per_s:7.0f}/{t.tokens_per_s:<7.0f} {ratio:10.2f}"
            f" {lite.ttft_p50_ms - e.ttft_p50_ms:+7.1f}/{t.ttft_p50_ms - e.ttft_p50_ms:<+8.1f}"
            f" {lat_l:+7.1f}/{lat_t:<+8.1f}"
            f" {lcpu:9.2f}/{own:.2f}({stack:.2f})"
        )


def write_models(data: Path, engine_port: int) -> Path:
    path = data / "models.yaml"
    path.write_text(MODELS.format(engine=engine_port))
    return path


async def make_key(redis_url: str) -> str:
    """A member key with real limits, so admission does its whole job on every request."""
    sys.path.insert(0, str(ROOT))
    from tiller.quota.keys import KeyStore

    redis = Redis.from_url(redis_url)
    try:
        created = await KeyStore(redis, "tiller:").issue(
            "bench", role="member", rpm=10_000_000, concurrency=100_000
        )
    finally:
        await redis.aclose()
    return created.api_key


def start_stack(
    data: Path, extra_env: dict[str, str] | None = None
) -> tuple[Processes, dict[str, int]]:
    ports = {
        name: free_port()
        for name in ("engine", "gateway", "grpc", "router", "quota", "redis", "temporal", "ui")
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")}
    engine = spawn(
        [sys.executable, str(HERE / "engine.py"), "--port", str(ports["engine"])],
        env,
        data / "engine.log",
    )
    wait_for_line(engine, r"READY", 30)
    env |= {
        "TILLER_UP_DATA_DIR": str(data / "tiller"),
        "TILLER_UP_DEMO_ENGINE": "false",
        "TILLER_UP_REDIS_PORT": str(ports["redis"]),
        "TILLER_UP_TEMPORAL_PORT": str(ports["temporal"]),
        "TILLER_UP_TEMPORAL_UI_PORT": str(ports["ui"]),
        "TILLER_GATEWAY_PORT": str(ports["gateway"]),
        "TILLER_GATEWAY_GRPC_PORT": str(ports["grpc"]),
        "TILLER_ROUTER_PORT": str(ports["router"]),
        "TILLER_QUOTA_PORT": str(ports["quota"]),
        "TILLER_ADMIN_KEY": "tk-bench-" + secrets.token_urlsafe(16),
    } | (extra_env or {})
    models = write_models(data, ports["engine"])
    up = spawn(
        [sys.executable, "-m", "tiller", "up", "--models", str(models)], env, data / "up.log"
    )
    line = wait_for_line(up, r"Processes:", 180)
    pids = dict(
        (name, int(pid)) for name, pid in re.findall(r"([\w-]+)=(\d+)", line.split(":", 1)[1])
    )
    procs = Processes({name: pids[name] for name in (*TILLER, "temporal", "redis")})
    procs.pids |= {"engine": engine.pid, "bench": os.getpid()}
    return procs, ports


def start_floor_worker(data: Path, ports: dict[str, int], procs: Processes) -> None:
    worker = spawn(
        [
            sys.executable,
            str(HERE / "floor.py"),
            "--worker",
            f"127.0.0.1:{ports['temporal']}",
            f"redis://127.0.0.1:{ports['redis']}/0",
            FLOOR_QUEUE,
            f"http://127.0.0.1:{ports['engine']}/v1",
        ],
        {k: v for k, v in os.environ.items() if not k.startswith("TILLER_")},
        data / "floor-worker.log",
    )
    wait_for_line(worker, r"READY", 60)
    procs.pids["floor-worker"] = worker.pid


def start_litellm(command: str, data: Path, engine_port: int, key: str, procs: Processes) -> str:
    """LiteLLM's proxy on the same engine: no database, its master key only, one process."""
    config = data / "litellm.yaml"
    config.write_text(LITELLM_CONFIG.format(engine=engine_port, master_key=key))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TILLER_", "DATABASE_"))}
    env |= {"LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False", "NO_DOCS": "True"}
    proc = spawn(
        [command, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        env,
        data / "litellm.log",
        read=False,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"litellm exited: {(data / 'litellm.log').read_text()[-3000:]}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            break
        time.sleep(0.5)
    else:
        raise RuntimeError("litellm did not listen within 120 s")
    procs.pids["litellm"] = proc.pid
    return f"http://127.0.0.1:{port}/v1"


def describe_machine() -> str:
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = Path("/proc/meminfo").read_text().split("\n", 1)[0].split()[1]
    return (
        f"{len(os.sched_getaffinity(0))} cores ({cpu}), {int(mem) / 2**20:.0f} GiB, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


async def bench_all(args: argparse.Namespace, data: Path) -> bool:
    procs, ports = start_stack(data, dict(kv.split("=", 1) for kv in args.tiller_env))
    start_floor_worker(data, ports, procs)
    litellm_key = "sk-bench-" + secrets.token_urlsafe(16)
    litellm_url = None
    if args.litellm:
        litellm_url = start_litellm(args.litellm, data, ports["engine"], litellm_key, procs)
    redis_url = f"redis://127.0.0.1:{ports['redis']}/0"
    bench = Bench(
        args=args,
        procs=procs,
        engine_url=f"http://127.0.0.1:{ports['engine']}/v1",
        gateway_url=f"http://127.0.0.1:{ports['gateway']}/v1",
        api_key=await make_key(redis_url),
        temporal=await Client.connect(f"127.0.0.1:{ports['temporal']}"),
        litellm_url=litellm_url,
        litellm_key=litellm_key,
        redis=floor.connect_redis(redis_url),
    )
    print(f"processes: {procs.pids}", flush=True)
    try:
        for scenario in SCENARIOS:
            if scenario.name not in args.scenarios:
                continue
            for c in args.concurrency:
                await bench.scenario(scenario, c)
        ok = summary(bench)
        if args.burst:
            print(f"\n{args.burst} concurrent slow streams ({args.burst_tokens} tokens)")
            bursts = await bench.burst()
            ok = ok and all(run.ok for run in bursts)
    finally:
        await bench.redis.aclose()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured time per run")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated")
    parser.add_argument("--burst", type=int, default=1000, help="concurrent slow streams; 0 = no")
    parser.add_argument("--burst-tokens", type=int, default=64)
    parser.add_argument("--targets", default="engine,floor,tiller", help="a subset, to profile")
    parser.add_argument(
        "--scenarios", default=",".join(s.name for s in SCENARIOS), help="a subset, to profile"
    )
    parser.add_argument(
        "--tiller-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for Tiller's services (repeatable), e.g. to compare a knob's values",
    )
    parser.add_argument("--litellm", help="the `litellm` command of a venv with litellm[proxy]")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.targets = args.targets.split(",")
    args.scenarios = args.scenarios.split(",")
    print(f"date {datetime.now().astimezone():%Y-%m-%d %H:%M %z}; {describe_machine()}")
    print(f"{args.seconds:g} s measured per run after a warm-up; targets back to back per row")
    if args.litellm:
        args.targets.append("litellm")
    with tempfile.TemporaryDirectory(prefix="tiller-bench-") as tmp:
        try:
            ok = uvloop.run(bench_all(args, Path(tmp)))
        finally:
            for child in reversed(_children):
                stop(child)
    if not ok:
        sys.exit("FAILED: some responses did not verify; no figures to report")


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    main()
