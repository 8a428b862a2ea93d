"""`tiller healthcheck`: exit 0 if a service says it serves, 1 if not: for container
healthchecks (compose, Kubernetes exec probes), with nothing but the image's Python.

    tiller healthcheck grpc 127.0.0.1:50052     # the standard gRPC health service: SERVING?
    tiller healthcheck grpc 127.0.0.1:50052 --tls-dir /etc/tiller/internal-tls --as router
    tiller healthcheck http http://127.0.0.1:8080/readyz   # a 2xx answer?

Router and quota accept only mutual TLS on their port: `--tls-dir` and `--as` name the
certificate to present (a container checks itself with its own) and the service the server
must be (`--as`, unless `--server` says otherwise).
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tiller.common.internal_tls import InternalTls
from tiller.common.lifecycle import StartupError


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = commands.add_parser("healthcheck", help="exit 0 if a service serves (for probes)")
    check.add_argument("kind", choices=("grpc", "http"))
    check.add_argument("target", help="host:port (grpc) or a URL (http)")
    check.add_argument("--timeout", type=float, default=2.0)
    check.add_argument("--tls-dir", help="the internal plane's certificates (grpc)")
    check.add_argument("--as", dest="identity", help="whose certificate to present (grpc)")
    check.add_argument("--server", help="the service the server must be (default: --as)")


def run(args: argparse.Namespace) -> int:
    try:
        if args.kind == "grpc":
            with _channel(args) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=args.timeout
                )
            serving = reply.status == health_pb2.HealthCheckResponse.SERVING
        else:
            with urllib.request.urlopen(args.target, timeout=args.timeout) as reply:  # noqa: S310
                serving = 200 <= reply.status < 300
    except (grpc.RpcError, urllib.error.URLError, OSError, StartupError) as error:
        print(f"tiller healthcheck: {args.target}: {error}", file=sys.stderr)
        return 1
    return 0 if serving else 1


def _channel(args: argparse.Namespace) -> grpc.Channel:
    if not args.tls_dir:
        return grpc.insecure_channel(args.target)
    if not args.identity:
        raise StartupError("--tls-dir needs --as (whose certificate to present)")
    tls = InternalTls.load(args.tls_dir, args.identity)
    server = args.server or args.identity
    return grpc.secure_channel(
        args.target,
        tls.channel_credentials(),
        options=[("grpc.ssl_target_name_override", server)],
    )
