"""OpenTelemetry traces across the services: gateway -> quota and router (gRPC metadata) ->
Temporal (its headers) -> worker -> engine (HTTP `traceparent`), W3C trace context throughout.

On when an OTLP endpoint is configured (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, and the rest of OpenTelemetry's standard OTEL_* settings):
spans are batched and sent by OTLP over HTTP, each service named `tiller-<service>`. Off
otherwise: the API's no-op tracer, and no interceptors at all. Spans carry ids, model and
deployment names and statuses, never a prompt, an answer or a key.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Tracer

_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
_enabled = False


def enabled() -> bool:
    return _enabled


def configure(service: str) -> None:
    """Set up this process's tracer provider, if an OTLP endpoint is configured."""
    global _enabled
    if (
        not any(os.environ.get(name) for name in _ENDPOINTS)
        or os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true"
    ):
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or f"tiller-{service}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True


def shutdown() -> None:
    """Send what is buffered (at exit)."""
    provider: Any = trace.get_tracer_provider()
    if _enabled and hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer(name: str) -> Tracer:
    return trace.get_tracer(name)


def client_interceptors() -> list[Any]:
    """gRPC client interceptors that start a span per call and send its context along."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation import grpc as instrumented

    make: Any = instrumented.aio_client_interceptors  # untyped
    return list(make())


def server_interceptors() -> list[Any]:
    """A gRPC server interceptor that continues the caller's trace."""
    if not _enabled:
        return []
    from opentelemetry.instrumentation import grpc as instrumented
    from opentelemetry.instrumentation.grpc import filters

    make: Any = instrumented.aio_server_interceptor  # untyped
    # Not the health and reflection services: the interceptor breaks health's streaming Watch
    # (which channels balancing on health use), and they are no one's request.
    plumbing: Any = filters.any_of(
        filters.service_prefix("grpc.health"), filters.service_prefix("grpc.reflection")
    )
    return [make(filter_=filters.negate(plumbing))]


def temporal_interceptors() -> list[Any]:
    """Temporal's OpenTelemetry interceptor: a span for starting and for running each activity
    and workflow, the context carried in Temporal's headers."""
    if not _enabled:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor()]


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current trace context (`traceparent`) to outgoing HTTP headers."""
    if _enabled:
        propagate.inject(headers)


def extract(headers: Mapping[str, str]) -> Any:
    """The caller's trace context (`traceparent`) to continue; none while tracing is off, so
    logs never show trace ids a caller made up."""
    if not _enabled:
        return otel_context.Context()
    return propagate.extract(headers)


def current_context() -> Any:
    """The current trace context, to carry into work done later on a request's behalf (a
    batched call); None while tracing is off."""
    return otel_context.get_current() if _enabled else None


@contextlib.contextmanager
def continuing(context: Any) -> Iterator[None]:
    """Run under a trace context captured by current_context() (None: as is)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def current_ids() -> tuple[str, str] | None:
    """The current trace and span ids, hex, for logs; None outside a recorded span."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
