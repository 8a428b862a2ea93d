"""A grpc.aio server with the standard health service, server reflection (grpcurl and
grpc_cli list and call it without the .proto files) and a graceful stop; for the internal plane,
mutual TLS and who may call what (Authorize, common/internal_tls.py)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tiller.common import tracing
from tiller.common.errors import InvalidRequest, TillerError
from tiller.common.internal_tls import InternalTls, peer_identity
from tiller.common.lifecycle import StartupError
from tiller.common.net import bind

log = logging.getLogger(__name__)


# A client's connection is closed (GOAWAY) after about this long, so clients re-resolve the
# service's address and spread over replicas added since they connected; calls still running get
# the grace, and the client's next call opens a new connection. gRPC adds ±10 % jitter.
CONNECTION_AGE_SECONDS = 120.0
CONNECTION_AGE_GRACE_SECONDS = 30.0


class GrpcServer:
    def __init__(
        self,
        address: str,
        register: Callable[[grpc.aio.Server], None],
        service_names: Sequence[str],
        connection_age: float = CONNECTION_AGE_SECONDS,
        connection_age_grace: float = CONNECTION_AGE_GRACE_SECONDS,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        tls: InternalTls | None = None,
        callers: Callers | None = None,
        health_address: str | None = None,
    ) -> None:
        """`interceptors`: the service's own, inside error translation (they see the
        TillerError a method raises; its caller gets the status). `tls`: the internal plane's
        mutual TLS, and `callers` who may call what over it (with TLS and no `callers`,
        every certified service may call everything). `health_address`: a plaintext port for
        the health service alone (Kubernetes' gRPC probes speak no TLS): every other method
        there is refused, as its callers have no certificate."""
        self.address = address
        self.tls = tls
        self.health_address = health_address
        checks: list[grpc.aio.ServerInterceptor] = []
        if tls is not None:
            checks.append(Authorize(callers or Callers(frozenset(), anyone=True)))
        self.server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_connection_age_ms", int(connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", int(connection_age_grace * 1000)),
            ],
            interceptors=[
                *tracing.server_interceptors(),
                *checks,
                TranslateErrors(),
                *interceptors,
            ],
        )
        register(self.server)
        self.health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.service_names = ["", *service_names]
        reflection.enable_server_reflection(
            [*service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )

    async def start(self) -> None:
        self._listen(self.address, self.tls)
        if self.health_address:
            self._listen(self.health_address, None)
        await self.server.start()
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("grpc server listening", extra={"address": self.address})

    def _listen(self, address: str, tls: InternalTls | None) -> None:
        host, _, port_text = address.rpartition(":")
        bind(host, int(port_text)).close()  # a taken port: one clear line, before gRPC logs its own
        try:
            if tls is None:
                port = self.server.add_insecure_port(address)
            else:
                port = self.server.add_secure_port(address, tls.server_credentials())
        except RuntimeError:
            port = 0
        if port == 0:
            raise StartupError(f"cannot listen on {address}")

    async def not_serving(self) -> None:
        """Tell health checks (and clients balancing on them) to move away."""
        for name in self.service_names:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    async def stop(self, grace: float = 5.0) -> None:
        """Report NOT_SERVING first so balancers move away, then finish in-flight calls."""
        await self.not_serving()
        await self.server.stop(grace)

    async def serve_until(self, stop: asyncio.Event, grace: float = 5.0) -> None:
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop(grace)


Behavior = Callable[[Any, grpc.aio.ServicerContext], Any]
TILLER_METHODS = "/tiller."  # the full names of Tiller's own gRPC methods start so


class MethodWrapper(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """An interceptor that wraps the behaviour of the methods it `wants`: `unary` for a unary
    method, `stream` for one that streams its responses, `bidi` for one that streams both ways
    (reflection; Tiller has no client-streaming methods). Subclasses say which methods and how;
    one that needs the method's name overrides the `*_for` forms."""

    def wants(self, method: str) -> bool:
        return method.startswith(TILLER_METHODS)  # not health's or reflection's

    def unary(self, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def stream(self, behavior: Behavior) -> Behavior:
        raise NotImplementedError

    def deserializer(self, read: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        """How the method's request is read (its own, unless a subclass says otherwise)."""
        return read

    def unary_for(self, method: str, behavior: Behavior) -> Behavior:
        return self.unary(behavior)

    def stream_for(self, method: str, behavior: Behavior) -> Behavior:
        return self.stream(behavior)

    def bidi_for(self, method: str, behavior: Behavior) -> Behavior:
        return behavior  # left as it is, unless a subclass says otherwise

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        method = details.method
        if handler is None or not self.wants(method):
            return handler
        kinds = (
            (handler.unary_unary, grpc.unary_unary_rpc_method_handler, self.unary_for),
            (handler.unary_stream, grpc.unary_stream_rpc_method_handler, self.stream_for),
            (handler.stream_stream, grpc.stream_stream_rpc_method_handler, self.bidi_for),
        )
        for behavior, rebuild, wrap in kinds:
            if behavior is not None:
                return rebuild(
                    wrap(method, behavior),
                    request_deserializer=self.deserializer(handler.request_deserializer),
                    response_serializer=handler.response_serializer,
                )
        return handler


class TranslateErrors(MethodWrapper):
    """A TillerError raised by any method of any servicer becomes its rich gRPC status: one
    place, for every service. A request that does not decode (corrupt protobuf) is refused as
    INVALID_ARGUMENT naming what was expected, before any method sees it."""

    def unary(self, behavior: Behavior) -> Behavior:
        return _unary(behavior)

    def stream(self, behavior: Behavior) -> Behavior:
        return _stream(behavior)

    def deserializer(self, read: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
        if read is None:
            return None

        def tolerant(data: bytes) -> Any:
            try:
                return read(data)
            except Exception:  # DecodeError, and whatever else protobuf raises on bad bytes
                return Undecodable()

        return tolerant


class Undecodable:
    """A request whose bytes are not the method's message."""


def _decoded(request: Any) -> None:
    if isinstance(request, Undecodable):
        raise InvalidRequest("The request is not a valid protobuf message of this method.")


def _unary(behavior: Behavior) -> Behavior:
    async def translated(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _decoded(request)
            return await behavior(request, context)
        except TillerError as error:
            await context.abort_with_status(error.to_grpc_status())

    return translated


def _stream(behavior: Behavior) -> Behavior:
    async def translated(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            _decoded(request)
            async for item in behavior(request, context):
                yield item
        except TillerError as error:
            await context.abort_with_status(error.to_grpc_status())

    return translated


HEALTH_METHODS = "/grpc.health.v1.Health/"


@dataclass(frozen=True)
class Callers:
    """Who may call a server's methods: the services (by their certificate's name) allowed for
    every method, and for some methods a set of their own (`methods`: full method name →
    services). `anyone`: any service with a certificate of the deployment's authority."""

    services: frozenset[str]
    methods: Mapping[str, frozenset[str]] = field(default_factory=dict)
    anyone: bool = False

    def allow(self, method: str, identity: str) -> bool:
        if method.startswith("/grpc."):  # reflection: any certified service may list methods
            return True
        return self.anyone or identity in self.methods.get(method, self.services)


class Authorize(MethodWrapper):
    """Every method but health needs a caller with a certificate of the deployment's
    authority (a plaintext connection, such as the health port's, has none:
    UNAUTHENTICATED), whom `callers` allows for it (else PERMISSION_DENIED). One place for
    every server of the internal plane."""

    def __init__(self, callers: Callers) -> None:
        self.callers = callers

    def wants(self, method: str) -> bool:
        return not method.startswith(HEALTH_METHODS)

    def unary_for(self, method: str, behavior: Behavior) -> Behavior:
        async def unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context)
            return await behavior(request, context)

        return unary

    def stream_for(self, method: str, behavior: Behavior) -> Behavior:
        async def streaming(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context)
            async for item in behavior(request, context):
                yield item

        return streaming

    def bidi_for(self, method: str, behavior: Behavior) -> Behavior:  # reflection
        async def both(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            await self._check(method, context)
            async for item in behavior(requests, context):
                yield item

        return both

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        identity = peer_identity(context)
        if identity is None:
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "This port serves Tiller's services only to callers with a certificate of "
                "this deployment's internal authority.",
            )
        elif not self.callers.allow(method, identity):
            log.warning("internal call refused", extra={"caller": identity, "method": method})
            await context.abort(
                grpc.StatusCode.PERMISSION_DENIED, f"{identity} may not call {method}."
            )
