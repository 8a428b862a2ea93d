"""Key, team and usage administration over REST (`/admin/...`, admin role only), and a key's own
usage (`GET /v1/usage`, any role). Quota owns the data; these handlers check the caller's role,
validate the body and forward to quota's gRPC administration calls.

    POST   /admin/keys                  create: the key is in the reply once, never again
    GET    /admin/keys                  list (never a key, nor its hash)
    GET    /admin/keys/{id}             show
    POST   /admin/keys/{id}/rotate      a new key with the same metadata; the old one revoked
    POST   /admin/keys/{id}/revoke      (or DELETE /admin/keys/{id}) refused everywhere at once
    PATCH  /admin/keys/{id}             change some settings (limits, models, expiry, ...)
    GET    /admin/teams                 list teams and their limits
    PUT    /admin/teams/{name}          create or change a team's limits
    GET    /admin/usage?from=&to=&key_id=   the ledger by day, key, team and model, with totals
    GET    /admin/audit?key_id=&team=&since=&until=&limit=   who changed what, when, from where
    GET    /v1/usage?from=&to=          the caller's own

Quota checks the caller itself: each call carries the caller's key (and where it came from,
for the audit log) in the metadata quota's admin gate reads (quota/admin_gate.py).
"""

from __future__ import annotations

import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tiller.common.errors import InvalidRequest, PermissionDenied
from tiller.gateway.callers import JSONResponse, bearer_key, read_json
from tiller.gateway.inference import Inference
from tiller.gateway.upstreams import rpc
from tiller.protos.quota.v1 import quota_pb2

LIMIT_FIELDS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")
SPEC_FIELDS = ("name", "role", "owner", "team", "models", "limits", "priority", "expires_at", "pii")
ADMIN_BODY_BYTES = 64 * 1024


def inference_of(request: Request) -> Inference:
    inference: Inference = request.app.state.inference
    return inference


async def caller_with_role(request: Request, role: str | None = None) -> quota_pb2.Principal:
    """The key's principal; PermissionDenied unless it has `role` (admin has every role)."""
    principal = await inference_of(request).authenticate(
        bearer_key(request.headers.get("authorization"))
    )
    if role is not None and principal.role not in (role, "admin"):
        raise PermissionDenied(
            f"This endpoint needs the {role} role; this key has the {principal.role} role."
        )
    return principal


async def _quota_call(request: Request, method: str, message: Any) -> Any:
    """Quota's administration `method`, for this request's caller."""
    inference = inference_of(request)
    call = getattr(inference.up.quota, method)
    timeout = inference.settings.rpc_timeout_seconds
    return await rpc(call(message, timeout=timeout, metadata=actor_metadata(request)))


def actor_metadata(request: Request) -> tuple[tuple[str, str], ...]:
    """Who the call is for (the caller's key, which quota authenticates itself) and where it
    came from: the client's address as this gateway saw it, what X-Forwarded-For says (a
    proxy's word, or a client's), its user agent; printable ASCII only (gRPC metadata)."""
    headers = request.headers
    found = {
        "x-tiller-actor-key": bearer_key(headers.get("authorization")),
        "x-tiller-client-address": request.client.host if request.client else "",
        "x-tiller-forwarded-for": headers.get("x-forwarded-for", ""),
        "x-tiller-user-agent": headers.get("user-agent", ""),
    }
    return tuple((k, _printable(v)) for k, v in found.items() if v)


def _printable(value: str) -> str:
    return "".join(c if " " <= c <= "~" else "?" for c in value[:256])


def _key(info: quota_pb2.KeyInfo) -> dict[str, Any]:
    spec = info.spec
    return {
        "id": info.id,
        "object": "api_key",
        "name": spec.name,
        "role": spec.role,
        "owner": spec.owner,
        "team": spec.team,
        "models": list(spec.models),
        "limits": _limits_json(spec.limits),
        "priority": spec.priority,
        "expires_at": spec.expires_at or None,
        "pii": {"mode": spec.pii_policy, "types": list(spec.pii_types)}
        if spec.pii_policy
        else None,
        "created": info.created,
        "revoked": info.revoked,
        "expired": info.expired,
    }


def _limits_json(limits: quota_pb2.Limits) -> dict[str, int]:
    return {name: getattr(limits, name) for name in LIMIT_FIELDS}


def _limits(data: Any, param: str) -> quota_pb2.Limits:
    if data is None:
        return quota_pb2.Limits()
    if not isinstance(data, dict):
        raise InvalidRequest(
            f"'{param}' must be an object of {', '.join(LIMIT_FIELDS)}.", param=param
        )
    for name, value in data.items():
        if name not in LIMIT_FIELDS:
            raise InvalidRequest(
                f"Unknown limit '{name}' (known: {', '.join(LIMIT_FIELDS)}).",
                param=f"{param}.{name}",
            )
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**62:
            raise InvalidRequest(
                f"'{param}.{name}' must be a whole number, 0 or more (0 = no limit).",
                param=f"{param}.{name}",
            )
    return quota_pb2.Limits(**data)


def _spec(data: Any) -> quota_pb2.KeySpec:
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    for name in data:
        if name not in SPEC_FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    for name in ("name", "role", "owner", "team"):
        if name in data and not isinstance(data[name], str):
            raise InvalidRequest(f"'{name}' must be a string.", param=name)
    models = data.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise InvalidRequest(
            "'models' must be an array of model names or patterns.", param="models"
        )
    for name, top in (("priority", 5), ("expires_at", 2**62)):
        value = data.get(name) or 0
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= top:
            raise InvalidRequest(f"'{name}' must be an integer from 0 to {top}.", param=name)
    if not data.get("name"):
        raise InvalidRequest("Missing required parameter: 'name'.", param="name")
    pii_mode, pii_types = _pii(data.get("pii"))
    return quota_pb2.KeySpec(
        name=data["name"],
        role=data.get("role") or "member",
        owner=data.get("owner") or "",
        team=data.get("team") or "",
        models=models,
        limits=_limits(data.get("limits"), "limits"),
        priority=data.get("priority") or 0,
        expires_at=data.get("expires_at") or 0,
        pii_policy=pii_mode,
        pii_types=pii_types,
    )


def _pii(data: Any) -> tuple[str, list[str]]:
    """A key's PII policy: "mask", or {"mode": "block", "types": ["CARD"]}; null for none."""
    if data is None:
        return "", []
    if isinstance(data, str):
        data = {"mode": data}
    mode, types = (data.get("mode"), data.get("types") or []) if isinstance(data, dict) else (0, 0)
    if (
        not isinstance(mode, str)
        or not isinstance(types, list)
        or not all(isinstance(t, str) for t in types)
        or set(data) - {"mode", "types"}
    ):
        raise InvalidRequest(
            "'pii' must be a mode or an object with 'mode' and optional 'types' (type names).",
            param="pii",
        )
    return mode, types


async def create_key(request: Request) -> Response:
    await caller_with_role(request, "admin")
    spec = _spec(await read_json(request, ADMIN_BODY_BYTES))
    if spec.pii_types:
        await _known_pii_types(request, list(spec.pii_types))
    created = await _quota_call(request, "CreateKey", quota_pb2.CreateKeyRequest(spec=spec))
    return JSONResponse({"key": created.api_key, **_key(created.key)}, status_code=201)


async def _known_pii_types(request: Request, types: list[str]) -> None:
    """The types models.yaml knows, not just well-formed names."""
    known = (await inference_of(request).list_models()).pii_types
    if unknown := [t for t in types if t not in known]:
        raise InvalidRequest(
            f"'pii' names unknown types: {', '.join(unknown)} (known: {', '.join(known)}).",
            param="pii",
        )


async def list_keys(request: Request) -> Response:
    await caller_with_role(request, "admin")
    reply = await _quota_call(request, "ListKeys", quota_pb2.ListKeysRequest())
    return JSONResponse({"object": "list", "data": [_key(k) for k in reply.keys]})


async def show_key(request: Request) -> Response:
    await caller_with_role(request, "admin")
    ref = quota_pb2.KeyRef(id=request.path_params["key_id"])
    return JSONResponse(_key(await _quota_call(request, "GetKey", ref)))


async def revoke_key(request: Request) -> Response:
    await caller_with_role(request, "admin")
    ref = quota_pb2.KeyRef(id=request.path_params["key_id"])
    return JSONResponse(_key(await _quota_call(request, "RevokeKey", ref)))


async def rotate_key(request: Request) -> Response:
    await caller_with_role(request, "admin")
    ref = quota_pb2.KeyRef(id=request.path_params["key_id"])
    created = await _quota_call(request, "RotateKey", ref)
    return JSONResponse({"key": created.api_key, **_key(created.key)}, status_code=201)


async def list_teams(request: Request) -> Response:
    await caller_with_role(request, "admin")
    reply = await _quota_call(request, "ListTeams", quota_pb2.ListTeamsRequest())
    data = [{"name": t.name, "limits": _limits_json(t.limits)} for t in reply.teams]
    return JSONResponse({"object": "list", "data": data})


async def put_team(request: Request) -> Response:
    await caller_with_role(request, "admin")
    body = await read_json(request, ADMIN_BODY_BYTES)
    if not isinstance(body, dict) or set(body) - {"limits"}:
        raise InvalidRequest('The body is {"limits": {...}}.', param="limits")
    team = quota_pb2.Team(
        name=request.path_params["name"], limits=_limits(body.get("limits"), "limits")
    )
    await _quota_call(request, "PutTeam", team)
    return JSONResponse({"name": team.name, "limits": _limits_json(team.limits)})


async def admin_usage(request: Request) -> Response:
    await caller_with_role(request, "admin")
    key_id = request.query_params.get("key_id", "")
    return JSONResponse(await _usage(request, key_id))


async def own_usage(request: Request) -> Response:
    principal = await caller_with_role(request)  # any role: a viewer reads its own usage
    return JSONResponse(await _usage(request, principal.key_id))


async def _usage(request: Request, key_id: str) -> dict[str, Any]:
    query = quota_pb2.UsageRequest(
        key_id=key_id,
        from_day=request.query_params.get("from", "").replace("-", ""),
        to_day=request.query_params.get("to", "").replace("-", ""),
    )
    reply = await _quota_call(request, "GetUsage", query)
    rows = [
        {
            "day": r.day,
            "key_id": r.key_id,
            "team": r.team or None,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "total_tokens": r.prompt_tokens + r.completion_tokens,
        }
        for r in reply.rows
    ]
    totals = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for row in rows:
        for measure in totals:
            totals[measure] += int(row[measure] or 0)
    return {"object": "usage", "data": rows, "totals": totals}


async def update_key(request: Request) -> Response:
    """PATCH: the settings the body names change; the others, the key itself and its id stay.
    `"pii": null` drops the key's own policy, `"expires_at": null` (or 0) its expiry."""
    await caller_with_role(request, "admin")
    body = await read_json(request, ADMIN_BODY_BYTES)
    if not isinstance(body, dict) or not body:
        raise InvalidRequest("The body is a JSON object of the settings to change.")
    spec, fields = _update(body)
    if spec.pii_types:
        await _known_pii_types(request, list(spec.pii_types))
    update = quota_pb2.UpdateKeyRequest(id=request.path_params["key_id"], spec=spec, fields=fields)
    return JSONResponse(_key(await _quota_call(request, "UpdateKey", update)))


def _update(body: dict[str, Any]) -> tuple[quota_pb2.KeySpec, list[str]]:
    """The new values and the names of the settings they change (limits one by one)."""
    for name in body:
        if name not in SPEC_FIELDS:
            raise InvalidRequest(f"Unrecognized request argument supplied: {name}", param=name)
    filled = dict(body)
    if "name" not in filled:
        filled["name"] = "unchanged"  # _spec checks a create's body, which needs one
    if filled.get("pii", ...) is None or filled.get("expires_at", ...) is None:
        filled = {k: v for k, v in filled.items() if v is not None}
    spec = _spec(filled)
    fields = [name for name in body if name != "limits"]
    limits = body.get("limits") or {}
    fields += [f"limits.{name}" for name in limits]
    return spec, fields


async def audit_log(request: Request) -> Response:
    await caller_with_role(request, "admin")
    query = request.query_params
    limit = query.get("limit", "100")
    if not limit.isdigit() or not 1 <= int(limit) <= 1000:
        raise InvalidRequest("'limit' is a whole number from 1 to 1000.", param="limit")
    asked = quota_pb2.AuditQuery(
        key_id=query.get("key_id", ""),
        team=query.get("team", ""),
        since_ms=_instant(query.get("since"), "since"),
        until_ms=_instant(query.get("until"), "until"),
        limit=int(limit),
    )
    reply = await _quota_call(request, "ListAudit", asked)
    return JSONResponse({"object": "list", "data": [shapes_audit(e) for e in reply.entries]})


def _instant(value: str | None, param: str) -> int:
    """Unix seconds, or an ISO 8601 date or time (UTC unless it says), as unix milliseconds."""
    if not value:
        return 0
    try:
        if value.replace(".", "", 1).isdigit():
            return int(float(value) * 1000)
        moment = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(
            f"'{param}' is unix seconds or an ISO 8601 date or time, such as 2026-12-01.",
            param=param,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return int(moment.timestamp() * 1000)


def shapes_audit(entry: quota_pb2.AuditEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "object": "audit_entry",
        "at": entry.at_ms / 1000,
        "action": entry.action,
        "key_id": entry.key_id or None,
        "team": entry.team or None,
        "new_key_id": entry.new_key_id or None,
        "actor": {"key_id": entry.actor_key_id or None, "name": entry.actor_name},
        "from": {
            "client_address": entry.client_address or None,
            "forwarded_for": entry.forwarded_for or None,
            "user_agent": entry.user_agent or None,
            "gateway": entry.gateway or None,
        },
        "changes": dict(entry.changes),
    }


ROUTES = [
    Route("/admin/keys", create_key, methods=["POST"]),
    Route("/admin/keys", list_keys, methods=["GET"]),
    Route("/admin/keys/{key_id}", show_key, methods=["GET"]),
    Route("/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
    Route("/admin/keys/{key_id}", update_key, methods=["PATCH"]),
    Route("/admin/keys/{key_id}/revoke", revoke_key, methods=["POST"]),
    Route("/admin/keys/{key_id}/rotate", rotate_key, methods=["POST"]),
    Route("/admin/teams", list_teams, methods=["GET"]),
    Route("/admin/teams/{name}", put_team, methods=["PUT"]),
    Route("/admin/usage", admin_usage, methods=["GET"]),
    Route("/admin/audit", audit_log, methods=["GET"]),
    Route("/v1/usage", own_usage, methods=["GET"]),
]
