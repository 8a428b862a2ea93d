"""`tiller keys|teams|usage|audit`: key, team and usage administration from a terminal,
through the gateway's admin API (`/admin/...`) with an admin key.

    tiller keys create NAME [--role member] [--team T] [--owner O] [--model PATTERN ...]
                            [--rpm N] [--tpm N] [--concurrency N] [--tokens-per-day N]
                            [--tokens-per-month N] [--priority 1-5] [--expires-in-days D]
                            [--pii MODE[:TYPE,...]]
    tiller keys update ID [--name N] [--role R] [--team T] [--owner O] [--model PATTERN ...
                          | --all-models] [--rpm N] ... [--priority 1-5]
                          [--expires-in-days D | --never-expires] [--pii MODE[:TYPE,...] | --no-pii]
    tiller keys list | show ID | rotate ID | revoke ID
    tiller teams put NAME [--rpm N] [--tpm N] ... | teams list
    tiller usage [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--key ID]
    tiller audit [--key ID] [--team T] [--since WHEN] [--until WHEN] [--limit N] [--json]

The gateway is $TILLER_URL (default http://127.0.0.1:8080) and the admin key $TILLER_ADMIN_KEY
(or --admin-key). Output is JSON (the audit log: a line per entry, newest first, unless
--json); a new or rotated key is printed once and stored nowhere. `keys update` changes only
the settings it is given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import httpx

LIMITS = ("rpm", "tpm", "concurrency", "tokens_per_day", "tokens_per_month")
ENVIRONMENT = ("TILLER_URL", "TILLER_ADMIN_KEY")  # what these commands read


def default_url() -> str:
    return os.environ.get("TILLER_URL", "http://127.0.0.1:8080")


def add_commands(commands: Any) -> None:
    """The keys, teams and usage subcommands, on the `tiller` parser."""
    # --url and --admin-key go anywhere: before or after the action.
    gateway = argparse.ArgumentParser(add_help=False)
    gateway.add_argument("--url", default=default_url())
    gateway.add_argument("--admin-key", default=os.environ.get("TILLER_ADMIN_KEY"))
    shared = {"parents": [gateway]}
    keys = commands.add_parser("keys", help="create, list, show, rotate and revoke API keys")
    teams = commands.add_parser("teams", help="teams and their shared limits")
    usage = commands.add_parser(
        "usage", help="the usage ledger (tokens by key, team, model)", **shared
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="a new key: printed once, stored as a hash", **shared
    )
    create.add_argument("name")
    create.add_argument("--role", choices=("admin", "member", "viewer"), default="member")
    create.add_argument("--team", default="")
    create.add_argument("--owner", default="")
    create.add_argument("--model", action="append", default=[], help="allowed model or pattern")
    create.add_argument("--priority", type=int, default=0)
    create.add_argument("--expires-in-days", type=float, default=0)
    create.add_argument(
        "--pii",
        default="",
        metavar="MODE[:TYPE,...]",
        help="the key's own PII policy (off, mask, mask+restore, block), e.g. block:CARD,KR_RRN",
    )
    _limit_options(create)
    _update_options(actions.add_parser("update", help="change some of a key's settings", **shared))
    actions.add_parser("list", **shared)
    for action in ("show", "rotate", "revoke"):
        actions.add_parser(action, **shared).add_argument("id")
    audit = commands.add_parser(
        "audit", help="who created, changed, rotated or revoked which key or team", **shared
    )
    audit.add_argument("--key", default="", help="entries about this key id")
    audit.add_argument("--team", default="", help="entries about this team")
    audit.add_argument("--since", default="", help="unix seconds or ISO 8601 (UTC)")
    audit.add_argument("--until", default="")
    audit.add_argument("--limit", type=int, default=100)
    audit.add_argument("--json", action="store_true", help="the API's JSON")
    team_actions = teams.add_subparsers(dest="action", required=True)
    put = team_actions.add_parser(
        "put",
        help="create a team or set its limits (all of them: a limit not given is 0, none)",
        **shared,
    )
    put.add_argument("name")
    _limit_options(put)
    team_actions.add_parser("list", **shared)
    usage.add_argument("--from", dest="from_day", default="")
    usage.add_argument("--to", dest="to_day", default="")
    usage.add_argument("--key", default="")


def _update_options(update: argparse.ArgumentParser) -> None:
    update.add_argument("id")
    update.add_argument("--name")
    update.add_argument("--role", choices=("admin", "member", "viewer"))
    update.add_argument("--team", help="a team that exists, or '' for none")
    update.add_argument("--owner")
    models = update.add_mutually_exclusive_group()
    models.add_argument("--model", action="append", help="allowed model or pattern (replaces)")
    models.add_argument("--all-models", action="store_true", help="every model")
    update.add_argument("--priority", type=int)
    expiry = update.add_mutually_exclusive_group()
    expiry.add_argument("--expires-in-days", type=float)
    expiry.add_argument("--never-expires", action="store_true")
    pii = update.add_mutually_exclusive_group()
    pii.add_argument("--pii", metavar="MODE[:TYPE,...]")
    pii.add_argument("--no-pii", action="store_true", help="drop the key's own PII policy")
    for name in LIMITS:
        update.add_argument(f"--{name.replace('_', '-')}", type=int, dest=name)


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name in LIMITS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=0, dest=name)


def run(args: argparse.Namespace) -> int:
    if not args.admin_key:
        print("tiller: set TILLER_ADMIN_KEY or pass --admin-key", file=sys.stderr)
        return 2
    if args.command == "keys" and args.action == "update":
        body = _update_body(args)
        if not body:
            print("tiller: keys update needs at least one setting to change", file=sys.stderr)
            return 2
    method, path, body, params = _request(args)
    headers = {"authorization": f"Bearer {args.admin_key}"}
    try:
        with httpx.Client(base_url=args.url, headers=headers, timeout=30) as http:
            reply = http.request(method, path, json=body, params=params)
    except httpx.HTTPError as error:
        print(f"tiller: cannot reach the gateway at {args.url}: {error}", file=sys.stderr)
        return 1
    try:
        answer = reply.json()
        if args.command == "audit" and not args.json and reply.is_success:
            print("\n".join(_audit_line(e) for e in answer["data"]) or "no entries")
        else:
            print(json.dumps(answer, indent=2))
    except ValueError:  # not JSON: a proxy's error page, say
        print(
            f"tiller: the gateway answered {reply.status_code}: {reply.text[:200]}", file=sys.stderr
        )
    return 0 if reply.is_success else 1


def _request(args: argparse.Namespace) -> tuple[str, str, Any, dict[str, str]]:
    limits = {name: getattr(args, name, 0) for name in LIMITS}
    if args.command == "usage":
        params = {"from": args.from_day, "to": args.to_day, "key_id": args.key}
        return "GET", "/admin/usage", None, {k: v for k, v in params.items() if v}
    if args.command == "audit":
        params = {
            "key_id": args.key,
            "team": args.team,
            "since": args.since,
            "until": args.until,
            "limit": str(args.limit),
        }
        return "GET", "/admin/audit", None, {k: v for k, v in params.items() if v}
    if args.command == "teams":
        if args.action == "put":
            return "PUT", f"/admin/teams/{args.name}", {"limits": limits}, {}
        return "GET", "/admin/teams", None, {}
    if args.action == "create":
        expires = int(time.time() + args.expires_in_days * 86_400) if args.expires_in_days else 0
        body = {
            "name": args.name,
            "role": args.role,
            "team": args.team,
            "owner": args.owner,
            "models": args.model,
            "limits": limits,
            "priority": args.priority,
            "expires_at": expires,
        }
        if args.pii:
            mode, _, types = args.pii.partition(":")
            body["pii"] = {"mode": mode, "types": [t for t in types.split(",") if t]}
        return "POST", "/admin/keys", body, {}
    if args.action == "update":
        return "PATCH", f"/admin/keys/{args.id}", _update_body(args), {}
    if args.action == "list":
        return "GET", "/admin/keys", None, {}
    if args.action == "show":
        return "GET", f"/admin/keys/{args.id}", None, {}
    return "POST", f"/admin/keys/{args.id}/{args.action}", None, {}


def _update_body(args: argparse.Namespace) -> dict[str, Any]:
    """Only the settings given: a PATCH leaves the rest as they are."""
    body: dict[str, Any] = {
        name: getattr(args, name)
        for name in ("name", "role", "team", "owner", "priority")
        if getattr(args, name) is not None
    }
    if args.model is not None or args.all_models:
        body["models"] = args.model or []
    if args.never_expires:
        body["expires_at"] = None
    elif args.expires_in_days is not None:
        body["expires_at"] = int(time.time() + args.expires_in_days * 86_400)
    if args.no_pii:
        body["pii"] = None
    elif args.pii:
        mode, _, types = args.pii.partition(":")
        body["pii"] = {"mode": mode, "types": [t for t in types.split(",") if t]}
    limits = {name: getattr(args, name) for name in LIMITS if getattr(args, name) is not None}
    if limits:
        body["limits"] = limits
    return body


def _audit_line(entry: dict[str, Any]) -> str:
    """One entry on a line: when, what, on which key or team, by whom, from where, changes."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry["at"]))
    target = f"key {entry['key_id']}" if entry["key_id"] else f"team {entry['team']}"
    if entry.get("new_key_id"):
        target += f" -> {entry['new_key_id']}"
    actor = entry["actor"]
    who = actor["name"] + (f" ({actor['key_id']})" if actor["key_id"] else "")
    origin = entry["from"]
    where = origin["client_address"] or "-"
    if origin["forwarded_for"]:
        where += f" (for {origin['forwarded_for']})"
    changes = ", ".join(f"{k}={v}" for k, v in sorted(entry["changes"].items()))
    line = f"{when}Z  {entry['action']:<13} {target:<22} by {who} from {where}"
    return line + (f"\n    {changes}" if changes else "")
