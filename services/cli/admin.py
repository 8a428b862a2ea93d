"""`tiller keys|teams|usage`: key, team and usage administration from a terminal, through the
gateway's admin API (`/admin/...`) with an admin key.

    tiller keys create NAME [--role member] [--team T] [--owner O] [--model PATTERN ...]
                            [--rpm N] [--tpm N] [--concurrency N] [--tokens-per-day N]
                            [--tokens-per-month N] [--priority 1-5] [--expires-in-days D]
                            [--pii MODE[:TYPE,...]]
    tiller keys list | show ID | rotate ID | revoke ID
    tiller teams put NAME [--rpm N] [--tpm N] ... | teams list
    tiller usage [--from YYYY-MM-DD] [--to YYYY-MM-DD] [--key ID]

The gateway is $TILLER_URL (default http://127.0.0.1:8080) and the admin key $TILLER_ADMIN_KEY
(or --admin-key). Output is JSON; a new or rotated key is printed once and stored nowhere.
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
    actions.add_parser("list", **shared)
    for action in ("show", "rotate", "revoke"):
        actions.add_parser(action, **shared).add_argument("id")
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


def _limit_options(parser: argparse.ArgumentParser) -> None:
    for name in LIMITS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=0, dest=name)


def run(args: argparse.Namespace) -> int:
    if not args.admin_key:
        print("tiller: set TILLER_ADMIN_KEY or pass --admin-key", file=sys.stderr)
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
        print(json.dumps(reply.json(), indent=2))
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
    if args.action == "list":
        return "GET", "/admin/keys", None, {}
    if args.action == "show":
        return "GET", f"/admin/keys/{args.id}", None, {}
    return "POST", f"/admin/keys/{args.id}/{args.action}", None, {}
