"""Nothing readable at rest: an engine error that quotes the prompt, under `pii: off` (so the
prompt carries the personal data itself), leaves no plaintext anywhere Tiller stores or logs:
not in what Temporal shows of the request (`temporal activity describe`, a workflow's history),
not in Temporal's database files, not in Redis's data files (its append-only file, and a
snapshot taken for the test), not in any log. The client still gets the engine's words."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import Stack, wait_for
from tiller.cli.processes import find_binary
from tiller.common.pii import checks

WEIGHTS = (2, 3, 4, 5, 6, 7, 8, 9, 2, 3, 4, 5)


def resident_number() -> str:
    """A registration number with a valid check digit, unique to this run."""
    first = "900101" + "1" + f"{secrets.randbelow(10**5):05d}"
    total = sum(int(d) * w for d, w in zip(first, WEIGHTS, strict=True))
    number = first + str((11 - total % 11) % 10)
    assert checks.registration_checksum(number)
    return f"{number[:6]}-{number[6:]}"


def personal_data() -> list[str]:
    marker = secrets.token_hex(6)
    phone = f"010-{secrets.randbelow(9000) + 1000}-{secrets.randbelow(9000) + 1000}"
    return [f"kim.{marker}@example.com", phone, resident_number()]


def fail_quoting(stack: Stack, model: str, values: list[str]) -> str:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "mail " + " call ".join(values)}],
    }
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    with httpx.Client(base_url=stack.base_url, timeout=60) as http:
        reply = http.post("/chat/completions", json=body, headers=headers)
    assert reply.status_code in (502, 503), reply.text
    assert values[0] in reply.json()["error"]["message"]  # the caller is told, in clear
    return reply.headers["x-request-id"]


def temporal(stack: Stack, *args: str) -> str:
    command = [find_binary("", "temporal", ""), *args, "--address", stack.temporal_address]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


def found_in(paths: list[Path], values: list[str]) -> list[str]:
    hits = []
    for path in paths:
        data = path.read_bytes()
        hits += [f"{value} in {path.name}" for value in values if value.encode() in data]
    return hits


@pytest.fixture(scope="module")
def failed(stack: Stack) -> tuple[list[str], str, str]:
    values = personal_data()
    activity = fail_quoting(stack, "quoting", values)
    workflow = fail_quoting(stack, "quoting-twice", values)
    return values, activity, workflow


async def test_temporal_shows_neither_the_failure_nor_the_input(
    stack: Stack, failed: tuple[list[str], str, str]
) -> None:
    values, activity, workflow = failed
    described = temporal(stack, "activity", "describe", "--activity-id", activity, "-o", "json")
    last_failure = json.loads(described)["info"]["lastFailure"]
    print(f"\n$ temporal activity describe --activity-id {activity}\nlastFailure: {last_failure}")
    assert last_failure["message"] == "Encoded failure"
    assert last_failure["encodedAttributes"]["metadata"]["encoding"]  # sealed, with its key id
    history = temporal(stack, "workflow", "show", "--workflow-id", workflow, "-o", "json")
    assert "ActivityTaskFailed" in history or "ACTIVITY_TASK_FAILED" in history
    for value in values:
        assert value not in described and value not in history


async def test_temporals_database_holds_no_plaintext(
    stack: Stack, failed: tuple[list[str], str, str]
) -> None:
    values = failed[0]
    files = sorted(stack.data_dir.glob("temporal.db*"))  # the database, its WAL and index
    assert files
    assert found_in(files, values) == []


async def test_redis_files_hold_no_plaintext(
    stack: Stack, failed: tuple[list[str], str, str]
) -> None:
    values = failed[0]
    redis = Redis.from_url(stack.redis_url)
    try:
        before = (await redis.info("persistence"))["rdb_last_save_time"]
        await redis.bgsave()  # a snapshot too (tiller up keeps the append-only file only)
        assert wait_for(lambda: (stack.data_dir / "redis" / "dump.rdb").exists(), timeout=10)
        while (await redis.info("persistence"))["rdb_last_save_time"] == before:
            await asyncio.sleep(0.05)
    finally:
        await redis.aclose()
    files = [p for p in (stack.data_dir / "redis").rglob("*") if p.is_file()]
    assert {p.suffix for p in files} >= {".aof", ".rdb"}
    assert found_in(files, values) == []


async def test_no_log_holds_it(stack: Stack, failed: tuple[list[str], str, str]) -> None:
    values = failed[0]
    logs = sorted((stack.data_dir / "logs").glob("*.log"))
    assert len(logs) >= 6
    assert "Completing activity as failed" in (stack.data_dir / "logs" / "worker.log").read_text()
    assert found_in(logs, values) == []
