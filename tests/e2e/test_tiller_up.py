"""`tiller up` itself: separate processes, a clean stop, and one clear line when it cannot start."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from tests.support import ROOT, stack_env, start_up, stop_up, wait_for, wait_until_up


def descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every process below `pid`, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        try:
            found[child] = (
                (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            )
        except OSError:
            continue
        pending.extend(children.get(child, []))
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_every_part_is_its_own_process_and_ctrl_c_leaves_none(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env, ports = stack_env(data)
    for own in ("TILLER_PAYLOAD_KEYS", "TILLER_INTERNAL_TLS_DIR"):  # tiller up makes its own
        del env[own]
    process = start_up(env)
    output: list[str] = []
    wait_until_up(process, output)
    banner = "\n".join(output)
    assert f"http://127.0.0.1:{ports['gateway']}/v1" in banner
    # The keys and certificates are out of the data directory, in one only its user reads.
    secrets = tmp_path / "data-secrets"
    assert (secrets.stat().st_mode & 0o777) == 0o700 and str(secrets) in banner
    assert (secrets / "payload-keys").is_file() and (secrets / "internal-ca.key").is_file()
    assert {p.name for p in (secrets / "internal-tls").iterdir()} >= {"ca.crt", "quota.key"}
    assert not list(data.rglob("*key*")) and (data / "temporal.db").is_file()
    assert env["TILLER_ADMIN_KEY"] in banner and "curl " in banner
    assert f"http://127.0.0.1:{ports['temporal_ui']}" in banner

    running = descendants(process.pid)
    commands = " | ".join(running.values())
    for part in ("tiller.gateway", "tiller.router", "tiller.quota", "tiller.worker",
                 "tiller.demo_engine", "redis-server", "temporal server start-dev"):  # fmt: skip
        assert sum(part in cmd for cmd in running.values()) == 1, (
            f"{part} not one process: {commands}"
        )

    assert stop_up(process) == 0
    assert wait_for(lambda: not any(alive(pid) for pid in running), timeout=30)
    with socket.socket() as sock:  # the gateway's port is free again
        sock.bind(("127.0.0.1", ports["gateway"]))


def run_up(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tiller", "up", *args],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_a_taken_port_is_one_clear_line(tmp_path: Path) -> None:
    env, ports = stack_env(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports["gateway"]))
        sock.listen()
        result = run_up(env)
    assert result.returncode == 1
    assert result.stderr == (
        f"tiller up: port {ports['gateway']} is already in use (gateway HTTP, TILLER_GATEWAY_PORT)\n"
    )
    assert "Traceback" not in result.stdout + result.stderr


def test_a_missing_binary_is_one_clear_line(tmp_path: Path) -> None:
    env, _ = stack_env(tmp_path, TILLER_UP_TEMPORAL_BIN=str(tmp_path / "no-temporal"))
    result = run_up(env)
    assert result.returncode == 1
    assert result.stderr == f"tiller up: temporal not found at {tmp_path / 'no-temporal'}\n"


def test_a_bad_models_file_stops_start_up_and_says_why(tmp_path: Path) -> None:
    env, _ = stack_env(tmp_path)
    models = tmp_path / "bad.yaml"
    models.write_text("models:\n  demo:\n    deployments: []\n")
    result = run_up(env, "--models", str(models))
    assert result.returncode == 1
    assert "tiller up: router exited during start-up (code 1)" in result.stderr
    assert (
        "models.demo: a model needs 'deployments' (at least one) or a 'pipeline'" in result.stderr
    )
    assert "Traceback" not in result.stderr
    assert "Stopped: every process of this run has exited." in result.stdout


def test_a_killed_supervisor_takes_its_children_with_it(tmp_path: Path) -> None:
    env, _ = stack_env(tmp_path)
    process = start_up(env)
    output: list[str] = []
    wait_until_up(process, output)
    running = descendants(process.pid)
    process.kill()  # SIGKILL: no chance to clean up; PR_SET_PDEATHSIG must do it
    process.wait()
    assert wait_for(lambda: not any(alive(pid) for pid in running), timeout=30), [
        cmd for pid, cmd in running.items() if alive(pid)
    ]
