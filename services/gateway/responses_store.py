"""Responses kept by Tiller: what `GET /v1/responses/{id}` answers, and the conversation that
`previous_response_id` continues.

One Redis hash per stored response (`{prefix}response:{id}`): its owner key's id in clear (to
refuse another key), and the rest sealed with the payload keys (common/sealing.py): the request's
envelope, the conversation so far (the messages the engine saw: masked where a PII policy
masks), and, once it ended, its status, output, usage or error. It expires after
`TILLER_GATEWAY_RESPONSES_TTL_SECONDS`. A background response's outcome is recorded by its
watcher (background.py) as it settles it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis

from tiller.common.errors import Cancelled, TillerError
from tiller.common.redis_text import text
from tiller.common.sealing import Sealer
from tiller.contract.requests import Message
from tiller.contract.results import InferenceResult, Usage
from tiller.gateway.responses_protocol import Envelope
from tiller.gateway.responses_shapes import (
    CANCELLED,
    FAILED,
    IN_PROGRESS,
    conversation_of,
    output_of,
    response_object,
    status_of,
)

RESPONSE_ID_PREFIX = "resp_"


@dataclass
class Stored:
    """One stored response."""

    response_id: str
    key_id: str
    created: int
    envelope: Envelope
    history: tuple[Message, ...]  # the conversation before its output, without instructions
    status: str = IN_PROGRESS
    output: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    usage: Usage | None = None
    error: TillerError | None = None

    def object(self) -> dict[str, Any]:
        return response_object(
            self.response_id,
            self.created,
            self.envelope,
            self.status,
            self.output,
            self.usage,
            self.error,
        )

    def conversation(self) -> tuple[Message, ...]:
        """The conversation a next response continues: this one's, then its output."""
        return (*self.history, *conversation_of(self.output))

    def ended(self, outcome: InferenceResult | TillerError) -> None:
        if isinstance(outcome, InferenceResult):
            self.status = status_of(outcome)
            self.output = output_of(outcome, self.response_id)
            self.usage = outcome.usage
        elif isinstance(outcome, Cancelled):
            self.status = CANCELLED
        else:
            self.status, self.error = FAILED, outcome


class ResponseStore:
    def __init__(self, redis: Redis, sealer: Sealer, prefix: str, ttl_seconds: int) -> None:
        self.redis, self.sealer, self.prefix, self.ttl = redis, sealer, prefix, ttl_seconds

    def _key(self, response_id: str) -> str:
        return f"{self.prefix}response:{response_id}"

    async def put(self, stored: Stored) -> None:
        key = self._key(stored.response_id)
        body = {
            "created": stored.created,
            "envelope": dataclasses.asdict(stored.envelope),
            "history": [dataclasses.asdict(m) for m in stored.history],
            "status": stored.status,
            "output": stored.output,
            "usage": dataclasses.asdict(stored.usage) if stored.usage else None,
            "error": stored.error.to_dict() if stored.error else None,
        }
        sealed = self.sealer.seal(orjson.dumps(body), key.encode())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"key_id": stored.key_id, "sealed": sealed})
            pipe.expire(key, self.ttl)
            await pipe.execute()

    async def get(self, response_id: str) -> Stored | None:
        key = self._key(response_id)
        fields: Any = await self.redis.hgetall(key)
        if not fields:
            return None
        body = orjson.loads(self.sealer.open(fields[b"sealed"], key.encode()))
        envelope = Envelope(**body["envelope"])
        return Stored(
            response_id=response_id,
            key_id=text(fields[b"key_id"]),
            created=int(body["created"]),
            envelope=envelope,
            history=tuple(Message.from_dict(m) for m in body["history"]),
            status=body["status"],
            output=list(body["output"]),
            usage=Usage.from_dict(body["usage"]) if body["usage"] else None,
            error=TillerError.from_dict(body["error"]) if body["error"] else None,
        )

    async def delete(self, response_id: str) -> bool:
        return bool(await self.redis.delete(self._key(response_id)))

    async def ended(self, response_id: str, outcome: InferenceResult | TillerError) -> None:
        """Record how a stored response ended (a no-op for another request, or one not stored,
        or expired)."""
        if not response_id.startswith(RESPONSE_ID_PREFIX):
            return
        stored = await self.get(response_id)
        if stored is not None and stored.status == IN_PROGRESS:
            stored.ended(outcome)
            await self.put(stored)
