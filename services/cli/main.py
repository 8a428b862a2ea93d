"""The `tiller` command: `tiller up` runs the whole local stack; the rest run one service each."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from tiller.cli import admin, certs, healthcheck, status


def _service(module: str) -> Callable[[], None]:
    def run() -> None:
        main: Callable[[], None] = __import__(module, fromlist=["main"]).main
        main()

    return run


SERVICES = {
    "gateway": (
        "the OpenAI-compatible REST API and the Inference gRPC service",
        "tiller.gateway.server",
    ),
    "router": ("the model registry (models.yaml) over gRPC", "tiller.router.server"),
    "quota": ("API keys and rate limits over gRPC, backed by Redis", "tiller.quota.server"),
    "worker": ("the Temporal worker that runs requests against engines", "tiller.worker.server"),
    "demo-engine": (
        "the demo engine: an OpenAI-compatible stand-in, not a model",
        "tiller.demo_engine.server",
    ),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="tiller",
        description="Tiller: an OpenAI-compatible gateway with durable execution on Temporal.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="run the whole stack on this machine (Ctrl-C stops it)")
    up.add_argument("--models", help="models.yaml to serve (default: the demo model)")
    for name, (help_text, _) in SERVICES.items():
        commands.add_parser(name, help=f"run {help_text} (settings from the environment)")
    admin.add_commands(commands)
    status.add_command(commands)
    healthcheck.add_command(commands)
    certs.add_command(commands)
    args = parser.parse_args(argv)
    if args.command in ("keys", "teams", "usage", "audit"):
        sys.exit(admin.run(args))
    if args.command == "healthcheck":
        sys.exit(healthcheck.run(args))
    if args.command == "certs":
        sys.exit(certs.run(args))
    if args.command == "status":
        sys.exit(status.run(args, admin.default_url()))
    if args.command == "up":
        from tiller.cli.up import run_up

        sys.exit(run_up(args.models))
    _service(SERVICES[args.command][1])()


if __name__ == "__main__":
    main()
