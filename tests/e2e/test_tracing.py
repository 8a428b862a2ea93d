"""One request followed by its id through logs, metrics and one trace that spans every service:
`tiller up` with an OTLP endpoint (a receiver in this test, as a collector would be) sends the
gateway's, quota's, router's and worker's spans of a request to it, all in the caller's trace."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.support import (
    Stack,
    free_port,
    stack_env,
    start_up,
    stop_up,
    wait_for,
    wait_until_up,
)


class Receiver:
    """An OTLP/HTTP trace receiver: keeps every span it is sent."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                export = ExportTraceServiceRequest.FromString(body)
                with receiver.lock:
                    for resource in export.resource_spans:
                        service = next(
                            a.value.string_value
                            for a in resource.resource.attributes
                            if a.key == "service.name"
                        )
                        for scope in resource.scope_spans:
                            for span in scope.spans:
                                receiver.spans.append(
                                    {
                                        "service": service,
                                        "name": span.name,
                                        "trace": span.trace_id.hex(),
                                        "id": span.span_id.hex(),
                                        "parent": span.parent_span_id.hex(),
                                        "attributes": {
                                            a.key: a.value.string_value or a.value.int_value
                                            for a in span.attributes
                                        },
                                    }
                                )
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of(self, trace_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [s for s in self.spans if s["trace"] == trace_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def test_one_request_through_logs_metrics_and_one_trace(tmp_path: Path, receiver: Receiver) -> None:
    env, ports = stack_env(tmp_path)
    env |= {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
    }
    process = start_up(env)
    output: list[str] = []
    try:
        wait_until_up(process, output)
        trace_id, parent = secrets.token_hex(16), secrets.token_hex(8)
        headers = {
            "authorization": f"Bearer {env['TILLER_ADMIN_KEY']}",
            "traceparent": f"00-{trace_id}-{parent}-01",  # the caller's own trace
        }
        # An email to mask: the gateway logs the counts, under the request's id and trace id.
        content = "trace me, kim@example.com"
        body = {"model": "demo", "messages": [{"role": "user", "content": content}]}
        base = f"http://127.0.0.1:{ports['gateway']}"
        reply = httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=60)
        assert reply.status_code == 200, reply.text
        request_id = reply.headers["x-request-id"]
        services = {"tiller-gateway", "tiller-quota", "tiller-router", "tiller-worker"}

        def whole() -> bool:  # every service's spans in, and each span's parent (one tree)
            spans = receiver.of(trace_id)
            ids = {s["id"] for s in spans} | {parent}
            return services <= {s["service"] for s in spans} and all(
                s["parent"] in ids for s in spans
            )

        assert wait_for(whole, timeout=30), f"spans of the trace: {receiver.of(trace_id)}"
        spans = receiver.of(trace_id)
        engine = next(s for s in spans if s["name"].startswith("engine "))
        assert engine["attributes"]["tiller.request_id"] == request_id
        print(f"\ntrace {trace_id} (request {request_id}):")
        _print_tree(spans, parent, "  ")

        logged = [
            json.loads(line)
            for name in ("gateway", "worker")
            for line in (tmp_path / "logs" / f"{name}.log").read_text().splitlines()
            if request_id in line
        ]
        print("log lines with its id:", json.dumps(logged, ensure_ascii=False)[:600])
        metrics = httpx.get(f"{base}/metrics").text
        counted = [
            line
            for line in metrics.splitlines()
            if line.startswith("tiller_requests_total{") and 'model="demo"' in line
        ]
        assert counted, metrics[:2000]
        print("its metrics:", counted)
    finally:
        stop_up(process)


def _print_tree(spans: list[dict[str, Any]], parent: str, indent: str) -> None:
    for span in sorted((s for s in spans if s["parent"] == parent), key=lambda s: s["name"]):
        print(f"{indent}{span['service']:<15} {span['name']}")
        _print_tree(spans, span["id"], indent + "  ")


def test_with_tracing_off_logs_carry_no_trace_ids_a_caller_made_up(stack: Stack) -> None:
    trace_id = secrets.token_hex(16)
    headers = {
        "authorization": f"Bearer {stack.admin_key}",
        "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01",
    }
    body = {"model": "demo", "messages": [{"role": "user", "content": "mask kim@example.com"}]}
    reply = httpx.post(f"{stack.base_url}/chat/completions", json=body, headers=headers, timeout=60)
    assert reply.status_code == 200, reply.text
    request_id = reply.headers["x-request-id"]

    def logged() -> list[dict[str, object]]:
        text = (stack.data_dir / "logs" / "gateway.log").read_text()
        return [json.loads(line) for line in text.splitlines() if request_id in line]

    assert wait_for(lambda: bool(logged()), timeout=10), "no log line with the request's id"
    assert all("trace_id" not in entry for entry in logged()), logged()
