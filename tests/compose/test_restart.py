"""`docker-compose down` (volumes kept) then `up`, as an upgrade does it: keys, their usage and
background requests made before are still there, and a background request that was still being
answered when the stack went down is finished after it comes back. And the backup of Redis's
and Temporal's volumes that docs/operations.md gives restores the stack as it was."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from tests.compose.stack import HTTP, Project, compose, docker, up

VOLUMES = ("redis-data", "temporal-data")

# About 45 s at the demo engine's 15 ms a token: longer than a stopping worker's grace (20 s).
WORDS = " ".join(f"w{i}" for i in range(3000))


def test_keys_usage_and_background_requests_outlive_down_and_up(project: Project) -> None:
    # A key made as docs/operations.md says, in the container that has the admin key.
    created = json.loads(
        compose(
            "exec", "-T", "-e", "TILLER_URL=http://gateway:8080",
            "quota", "tiller", "keys", "create", "survivor", "--model", "demo",
        )
    )  # fmt: skip
    key, key_id = created["key"], created["id"]
    with httpx.Client(base_url=HTTP, timeout=60) as http:
        with project.openai(HTTP, key) as client:
            reply = client.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "remember me"}]
            )
        assert reply.choices[0].message.content == "You said: remember me"
        done = _submit(http, key, "kept")
        assert _poll(http, key, done)["status"] == "completed"
        usage = _usage(http, key)
        assert usage["requests"] >= 2
        running = _submit(http, key, WORDS)  # goes down with the stack, half answered
        time.sleep(3)

        compose("down", timeout=180)
        print("\n$ docker-compose down   (volumes kept)")
        print(docker("volume", "ls", "--filter", "label=com.docker.compose.volume"))
        up()
        # Still unanswered: the worker that had it was stopped past its grace (20 s), with it.
        assert _record(http, key, running)["status"] == "in_progress"

        shown = http.get(f"/admin/keys/{key_id}", headers=project.headers()).json()
        assert (shown["name"], shown["revoked"]) == ("survivor", False)
        kept = _poll(http, key, done)
        assert kept["choices"][0]["message"]["content"] == "You said: kept"
        finished = _poll(http, key, running)
        assert finished["status"] == "completed", finished
        assert finished["choices"][0]["message"]["content"] == f"You said: {WORDS}"
        # The ledger kept what it had, and charged the one that finished after up once.
        charged = finished["usage"]
        assert _usage(http, key) == {
            "requests": usage["requests"] + 1,
            "prompt_tokens": usage["prompt_tokens"] + charged["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"] + charged["completion_tokens"],
            "total_tokens": usage["total_tokens"] + charged["total_tokens"],
        }
    print(f"after up: key {key_id} and its usage {usage} kept; background {done} kept;")
    print(f"  background {running}, cut off by down, finished after up: {finished['status']}")


def _submit(http: httpx.Client, key: str, content: str) -> str:
    body = {"model": "demo", "messages": [{"role": "user", "content": content}]}
    submitted = http.post(
        "/v1/chat/completions",
        json=body | {"background": True},
        headers={"authorization": f"Bearer {key}"},
    )
    assert submitted.status_code == 202, submitted.text
    request_id: str = submitted.json()["id"]
    return request_id


def _record(http: httpx.Client, key: str, request_id: str) -> dict[str, Any]:
    got = http.get(f"/v1/chat/completions/{request_id}", headers={"authorization": f"Bearer {key}"})
    assert got.status_code == 200, got.text
    record: dict[str, Any] = got.json()
    return record


def _poll(http: httpx.Client, key: str, request_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while (record := _record(http, key, request_id))["status"] == "in_progress":
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    return record


def _usage(http: httpx.Client, key: str) -> dict[str, int]:
    got = http.get("/v1/usage", headers={"authorization": f"Bearer {key}"})
    assert got.status_code == 200, got.text
    totals: dict[str, int] = got.json()["totals"]
    return totals


def test_a_backup_of_the_volumes_restores_the_stack_as_it_was(
    project: Project, tmp_path: Path
) -> None:
    with httpx.Client(base_url=HTTP, headers=project.headers(), timeout=60) as http:
        kept = http.post("/admin/keys", json={"name": "in-the-backup"}).json()["id"]
        compose("stop", timeout=180)  # docs/operations.md, "Backups": a cold copy of both
        for volume in VOLUMES:
            _in_volume(volume, tmp_path, f"tar -czf /backups/{volume}.tgz -C /data .")
        up()
        later = http.post("/admin/keys", json={"name": "after-the-backup"}).json()["id"]

        compose("down", timeout=180)  # ... and restored
        for volume in VOLUMES:
            _in_volume(
                volume,
                tmp_path,
                f"find /data -mindepth 1 -delete && tar -xzf /backups/{volume}.tgz -C /data",
            )
        up()
        ids = {k["id"] for k in http.get("/admin/keys").json()["data"]}
    assert kept in ids and later not in ids
    sizes = {p.name: p.stat().st_size for p in tmp_path.iterdir()}
    print(f"\nbacked up {sizes}; restored: {kept} is back, {later} (made after) is not")


def _in_volume(volume: str, backups: Path, script: str) -> None:
    """A shell command in a throwaway container (Tiller's image: it has tar) with the project's
    volume at /data and the backups folder at /backups, as docs/operations.md runs it."""
    name = f"{os.environ['COMPOSE_PROJECT_NAME']}_{volume}"
    docker(
        "run", "--rm", "--network", "none", "--user", "0", "--entrypoint", "sh",
        "-v", f"{name}:/data", "-v", f"{backups}:/backups", "tiller:local", "-c", script,
    )  # fmt: skip
