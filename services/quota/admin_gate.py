"""Administration only for the gateway acting for an admin caller.

The internal plane's mutual TLS already says that a call comes from a gateway (the server's
`Callers`). An administration call must also carry the key of the caller it acts for, in the
metadata `x-tiller-actor-key`: quota authenticates that key itself, so a gateway (or anything
holding its certificate) cannot administer without an admin caller, and on a plaintext plane
(`TILLER_INTERNAL_INSECURE`) minting a key still takes an admin key. The caller's address,
the address it forwarded for and its user agent (the gateway's word) go to the audit log with
who it was (ACTOR, read by the service).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import grpc
from redis.exceptions import RedisError

from tiller.common.errors import AuthenticationFailed, PermissionDenied, ServiceUnavailable
from tiller.common.grpc_server import Behavior, MethodWrapper
from tiller.quota.admission import Admission
from tiller.quota.audit import Actor

ACTOR_KEY = "x-tiller-actor-key"
CLIENT_ADDRESS = "x-tiller-client-address"
FORWARDED_FOR = "x-tiller-forwarded-for"
USER_AGENT = "x-tiller-user-agent"
_SERVICE = "/tiller.quota.v1.Quota/"
# Administration for admins only; GetUsage for any role (the service lets one read only its own).
ADMIN_ONLY = frozenset(
    _SERVICE + name
    for name in (
        "CreateKey",
        "ListKeys",
        "GetKey",
        "RevokeKey",
        "RotateKey",
        "UpdateKey",
        "PutTeam",
        "ListTeams",
        "ListAudit",
    )
)
ANY_ROLE = frozenset({_SERVICE + "GetUsage"})
# Who the administration call in this task acts for (set for the methods above only).
ACTOR: ContextVar[Actor] = ContextVar("tiller_quota_actor")


class AdminGate(MethodWrapper):
    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def wants(self, method: str) -> bool:
        return method in ADMIN_ONLY or method in ANY_ROLE

    def unary_for(self, method: str, behavior: Behavior) -> Behavior:
        admin_only = method in ADMIN_ONLY

        async def gated(request: Any, context: grpc.aio.ServicerContext) -> Any:
            ACTOR.set(await self._actor(context, admin_only))
            return await behavior(request, context)

        return gated

    async def _actor(self, context: grpc.aio.ServicerContext, admin_only: bool) -> Actor:
        metadata = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        key = metadata.get(ACTOR_KEY, "")
        if not key:
            raise AuthenticationFailed(
                "Key administration is done through the gateway, for the caller whose key it "
                f"passes in {ACTOR_KEY}."
            )
        try:
            principal = await self.admission.authenticate(key)
        except RedisError:
            raise ServiceUnavailable("The quota store is unavailable; request refused.") from None
        if admin_only and principal.role != "admin":
            raise PermissionDenied(
                f"This needs the admin role; this key has the {principal.role} role."
            )
        return Actor(
            key_id=principal.key_id,
            name=principal.name,
            role=principal.role,
            client_address=metadata.get(CLIENT_ADDRESS, "")[:64],
            forwarded_for=metadata.get(FORWARDED_FOR, "")[:256],
            user_agent=metadata.get(USER_AGENT, "")[:256],
            gateway=context.peer() or "",
        )
