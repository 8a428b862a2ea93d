"""`tiller healthcheck`: exit 0 if a service says it serves, 1 if not: for container
healthchecks (compose, Kubernetes exec probes), with nothing but the image's Python.

    tiller healthcheck grpc 127.0.0.1:50052     # the standard gRPC health service: SERVING?
    tiller healthcheck http http://127.0.0.1:8080/readyz   # a 2xx answer?
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("healthcheck", help="exit 0 if a service serves (for probes)")
    check.add_argument("kind", choices=("grpc", "http"))
    check.add_argument("target", help="host:port (grpc) or a URL (http)")
    check.add_argument("--timeout", type=float, default=2.0)


def run(args: argparse.Namespace) -> int:
    try:
        if args.kind == "grpc":
            with grpc.insecure_channel(args.target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=args.timeout
                )
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        else:
            with urllib.request.urlopen(args.target, timeout=args.timeout) as reply:  # noqa: S310
                serving = 200 <= reply.status < 300
    except (grpc.RpcError, urllib.error.URLError, OSError) as error:
        print(f"tiller healthcheck: {args.target}: {error}", file=sys.stderr)
        return 1
    return 0 if serving else 1
