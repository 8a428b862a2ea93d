"""Keys, roles and limits through the whole stack: the admin API and the CLI, permissions on
every endpoint and model, the token headers and 429s, and keys never stored or logged in plain
form."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from tests.support import ROOT, Stack

HELLO = [{"role": "user", "content": "Hello Tiller"}]
SECRETS: list[str] = []  # every key made here: none may reach a log


@pytest.fixture
async def admin(stack: Stack) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"authorization": f"Bearer {stack.admin_key}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{stack.gateway_port}", headers=headers, timeout=30
    ) as client:
        yield client


async def new_key(admin: httpx.AsyncClient, **spec: Any) -> dict[str, Any]:
    spec.setdefault("name", f"test-{time.monotonic_ns()}")
    reply = await admin.post("/admin/keys", json=spec)
    assert reply.status_code == 201, reply.text
    created: dict[str, Any] = reply.json()
    SECRETS.append(created["key"])
    return created


def as_key(key: dict[str, Any]) -> dict[str, str]:
    return {"authorization": f"Bearer {key['key']}"}


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


async def test_a_key_is_shown_once_and_listed_without_its_secret(
    admin: httpx.AsyncClient, stack: Stack
) -> None:
    key = await new_key(admin, name="alice", owner="alice@example.com", models=["demo*"])
    assert key["key"].startswith("tk-") and key["role"] == "member"
    listed = await admin.get("/admin/keys")
    shown = await admin.get(f"/admin/keys/{key['id']}")
    secret, digest = key["key"], hashlib.sha256(key["key"].encode()).hexdigest()
    for reply in (listed, shown):
        assert reply.status_code == 200
        assert secret not in reply.text and digest not in reply.text
    assert shown.json()["owner"] == "alice@example.com"
    # Redis holds the hash, never the key.
    redis = Redis.from_url(stack.redis_url)
    try:
        async for name in redis.scan_iter(match="tiller:*"):
            assert secret.encode() not in name
            if await redis.type(name) == b"hash":
                values = await redis.hgetall(name)
                assert all(secret.encode() not in v for v in values.values())
    finally:
        await redis.aclose()


async def test_unknown_revoked_and_expired_keys_are_401(admin: httpx.AsyncClient) -> None:
    body = {"model": "demo", "messages": HELLO}
    unknown = await admin.post(
        "/v1/chat/completions", json=body, headers={"authorization": "Bearer tk-nobody"}
    )
    assert error_of(unknown, 401)["code"] == "invalid_api_key"

    key = await new_key(admin)
    assert (await admin.post("/v1/chat/completions", json=body, headers=as_key(key))).is_success
    revoked = await admin.post(f"/admin/keys/{key['id']}/revoke")
    assert revoked.json()["revoked"] is True
    after = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
    assert error_of(after, 401)["code"] == "invalid_api_key"

    brief = await new_key(admin, expires_at=int(time.time()) + 1)
    time.sleep(1.2)
    expired = await admin.post("/v1/chat/completions", json=body, headers=as_key(brief))
    assert "expired" in error_of(expired, 401)["message"]


async def test_roles_and_models_are_checked_on_every_endpoint(admin: httpx.AsyncClient) -> None:
    member = await new_key(admin, models=["demo-latest"])  # only by its alias
    viewer = await new_key(admin, role="viewer")
    body = {"model": "demo-latest", "messages": HELLO}
    assert (await admin.post("/v1/chat/completions", json=body, headers=as_key(member))).is_success
    other = {"model": "single", "messages": HELLO}
    denied = await admin.post("/v1/chat/completions", json=other, headers=as_key(member))
    error = error_of(denied, 403)
    assert error["code"] == "permission_denied" and error["param"] == "model"
    assert "`single`" in error["message"]
    models = (await admin.get("/v1/models", headers=as_key(member))).json()["data"]
    assert {m["id"] for m in models} == {"demo-latest"}  # the names it may use
    by_name = await admin.post(
        "/v1/chat/completions", json={**body, "model": "demo"}, headers=as_key(member)
    )
    assert error_of(by_name, 403)["param"] == "model"  # listed and admitted alike
    assert (await admin.get("/v1/models/single", headers=as_key(member))).status_code == 403

    for path in ("/admin/keys", "/admin/usage", "/admin/teams"):
        refused = await admin.get(path, headers=as_key(member))
        assert (
            "needs the admin role; this key has the member role"
            in error_of(refused, 403)["message"]
        )
    refused = await admin.post("/admin/keys", json={"name": "x"}, headers=as_key(member))
    assert error_of(refused, 403)["code"] == "permission_denied"

    reading = await admin.post("/v1/chat/completions", json=body, headers=as_key(viewer))
    assert "viewer role" in error_of(reading, 403)["message"]
    assert (await admin.get("/v1/usage", headers=as_key(viewer))).status_code == 200
    assert (await admin.get("/v1/models", headers=as_key(viewer))).status_code == 200


async def test_token_limits_have_openai_headers_and_a_429_that_names_them(
    admin: httpx.AsyncClient,
) -> None:
    key = await new_key(admin, limits={"tpm": 100})
    body = {"model": "demo", "messages": HELLO, "max_tokens": 40}
    first = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
    assert first.status_code == 200
    assert first.headers["x-ratelimit-limit-tokens"] == "100"
    assert int(first.headers["x-ratelimit-remaining-tokens"]) < 60  # the prompt and max_tokens
    assert first.headers["x-ratelimit-reset-tokens"].endswith("s")
    second = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
    # The first used 4 of its 40: reconciled, the second fits; a third may not.
    assert second.status_code == 200
    large = await admin.post(
        "/v1/chat/completions", json={**body, "max_tokens": 200}, headers=as_key(key)
    )
    assert error_of(large, 400)["param"] == "max_tokens"
    while True:
        reply = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
        if reply.status_code == 429:
            break
        assert reply.status_code == 200
    error = error_of(reply, 429)
    assert "tokens per minute of this key: limit 100" in error["message"]
    assert 1 <= int(reply.headers["retry-after"]) <= 60


async def test_teams_and_usage(admin: httpx.AsyncClient) -> None:
    team = f"team-{time.monotonic_ns()}"
    put = await admin.put(f"/admin/teams/{team}", json={"limits": {"rpm": 2}})
    assert put.json()["limits"]["rpm"] == 2
    one, two = await new_key(admin, team=team), await new_key(admin, team=team)
    body = {"model": "demo", "messages": HELLO}
    assert (await admin.post("/v1/chat/completions", json=body, headers=as_key(one))).is_success
    assert (await admin.post("/v1/chat/completions", json=body, headers=as_key(two))).is_success
    third = await admin.post("/v1/chat/completions", json=body, headers=as_key(one))
    assert f"team '{team}': limit 2" in error_of(third, 429)["message"]
    for _ in range(50):  # settlement is asynchronous: wait for the ledger
        own = (await admin.get("/v1/usage", headers=as_key(one))).json()
        if own["totals"]["requests"] == 1:
            break
        time.sleep(0.1)
    assert own["totals"] == {
        "requests": 1,
        "prompt_tokens": 2,
        "completion_tokens": 4,
        "total_tokens": 6,
    }
    assert {row["team"] for row in own["data"]} == {team}
    everyone = (await admin.get("/admin/usage")).json()
    assert {one["id"], two["id"]} <= {row["key_id"] for row in everyone["data"]}
    teams = (await admin.get("/admin/teams")).json()["data"]
    assert team in {t["name"] for t in teams}
    bad = await admin.post("/admin/keys", json={"name": "x", "team": "no-such-team"})
    assert error_of(bad, 404)["message"].startswith("team: no team")


def run_tiller(stack: Stack, *args: str) -> str:
    """The `tiller` command's output, run as an admin with the stack's gateway."""
    env = {
        **os.environ,
        "TILLER_URL": f"http://127.0.0.1:{stack.gateway_port}",
        "TILLER_ADMIN_KEY": stack.admin_key,
    }
    done = subprocess.run(
        [sys.executable, "-m", "tiller", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


async def test_the_cli_creates_lists_and_revokes_keys(stack: Stack) -> None:
    def tiller(*args: str) -> dict[str, Any]:
        reply: dict[str, Any] = json.loads(run_tiller(stack, *args))
        if "key" in reply:
            SECRETS.append(reply["key"])
        return reply

    created = tiller("keys", "create", "from-cli", "--model", "demo", "--rpm", "5")
    assert created["limits"]["rpm"] == 5 and created["models"] == ["demo"]
    assert created["id"] in {k["id"] for k in tiller("keys", "list")["data"]}
    rotated = tiller("keys", "rotate", created["id"])
    assert rotated["key"] != created["key"] and rotated["limits"]["rpm"] == 5
    assert tiller("keys", "show", created["id"])["revoked"] is True
    assert tiller("keys", "revoke", rotated["id"])["revoked"] is True


async def test_a_key_is_edited_in_place_and_the_change_applies_at_once(
    admin: httpx.AsyncClient,
) -> None:
    key = await new_key(admin, models=["demo"], limits={"rpm": 50})
    refused = await admin.patch(f"/admin/keys/{key['id']}", json={"revoked": False})
    assert error_of(refused, 400)["param"] == "revoked"
    assert error_of(await admin.patch(f"/admin/keys/{key['id']}", json={}), 400)
    as_member = await admin.patch(
        f"/admin/keys/{key['id']}", json={"limits": {"rpm": 1000}}, headers=as_key(key)
    )
    assert error_of(as_member, 403)["code"] == "permission_denied"
    edited = await admin.patch(
        f"/admin/keys/{key['id']}", json={"limits": {"rpm": 1}, "owner": "dev@example.com"}
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["limits"]["rpm"] == 1 and edited.json()["models"] == ["demo"]
    body = {"model": "demo", "messages": HELLO, "max_tokens": 2}
    first = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
    assert first.status_code == 200, first.text
    second = await admin.post("/v1/chat/completions", json=body, headers=as_key(key))
    assert error_of(second, 429)["code"] == "rate_limit_exceeded"  # the new limit, at once
    await admin.post(f"/admin/keys/{key['id']}/revoke")
    gone = await admin.patch(f"/admin/keys/{key['id']}", json={"limits": {"rpm": 9}})
    assert "revoked" in error_of(gone, 400)["message"]


def test_the_cli_edits_keys_and_reads_the_audit_log(stack: Stack) -> None:
    def tiller(*args: str) -> str:
        return run_tiller(stack, *args)

    created = json.loads(tiller("keys", "create", "audited", "--rpm", "5"))
    SECRETS.append(created["key"])
    key_id = created["id"]
    edited = json.loads(tiller("keys", "update", key_id, "--rpm", "60", "--model", "demo"))
    assert edited["limits"]["rpm"] == 60 and edited["models"] == ["demo"]
    tiller("keys", "revoke", key_id)
    lines = tiller("audit", "--key", key_id).splitlines()
    print("\n" + "\n".join(lines))
    entries = [line for line in lines if not line.startswith(" ")]  # changes are indented
    assert [line.split()[2] for line in entries] == ["key.revoke", "key.update", "key.create"]
    assert all("by bootstrap-admin" in line and "from 127.0.0.1" in line for line in entries)
    data = json.loads(tiller("audit", "--key", key_id, "--json"))["data"]
    assert data[1]["changes"] == {"limits.rpm": "60", "models": '["demo"]'}
    assert data[0]["from"]["client_address"] == "127.0.0.1"
    assert created["key"] not in json.dumps(data)


def test_no_key_appears_in_any_log(stack: Stack) -> None:
    """Run last in this module: the logs then hold every request above."""
    logs = "\n".join(p.read_text(errors="replace") for p in (stack.data_dir / "logs").glob("*.log"))
    assert logs, "no logs to check"
    assert len(SECRETS) > 5
    for secret in [stack.admin_key, "tk-nobody", *SECRETS]:
        assert secret not in logs
        assert hashlib.sha256(secret.encode()).hexdigest() not in logs
