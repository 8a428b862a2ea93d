"""Admission: authenticate a key, check its role and models, and count the request against every
limit that applies to it, in one atomic Redis script.

Three scopes can limit a request: its key, the key's team, and the model (models.yaml
`limits`). Each may set requests per minute (a sliding log: a sorted set of request ids scored by
time, so the limit holds over any 60 s window and across every gateway and quota replica),
tokens per minute (the same log, each entry holding the tokens it reserved), and concurrent
requests (leases that expire on their own unless the gateway serving the request renews them).
Keys and teams may also set tokens per day and per month (budgets, UTC days and months).

Tokens are reserved at admission (a bound on the prompt plus its max_tokens cap) and reconciled
with the engine's count when the request settles (usage.py), so a burst cannot overshoot: a
request is admitted only if its whole reservation fits. Nothing is counted unless every check
passes. Redis's clock is the only clock.
"""

from __future__ import annotations

import calendar
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from tiller.common.errors import (
    AuthenticationFailed,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    ServiceUnavailable,
    TillerError,
)
from tiller.common.priorities import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from tiller.common.redis_text import text
from tiller.contract.keys import digest
from tiller.quota import metrics
from tiller.quota.admit_script import ADMIT, AdmitReply
from tiller.quota.keys import QuotaLayout, split_types, valid_key_id
from tiller.quota.scripts import BatchScript

log = logging.getLogger(__name__)
WINDOW_MS = 60_000
# A request's reservation record outlives any request (usage.py settles and deletes it).
RESERVATION_TTL_SECONDS = 2 * 86_400


_SCOPES = {"k": "key", "t": "team", "m": "model"}
# Refused for a limit: the outcome's name in the admission metric.
_REFUSALS = {"over": "rate_limited", "busy": "concurrency", "budget": "budget"}
_LIMIT_NAMES = {
    "requests": "rpm",
    "tokens": "tpm",
    "concurrent requests": "concurrency",
    "tokens per day": "tokens_per_day",
    "tokens per month": "tokens_per_month",
}


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str
    priority: int = DEFAULT_PRIORITY
    team: str = ""
    models: tuple[str, ...] = ()  # glob patterns; () = every model
    pii_policy: str = ""  # the key's own PII policy ("" = none) and its types (() = all)
    pii_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class Window:
    """One rate limit as the x-ratelimit-* headers report it (limit 0: none applies)."""

    limit: int = 0
    remaining: int = 0
    reset_seconds: float = 0.0


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    requests: Window
    tokens: Window


@dataclass(frozen=True)
class Ask:
    """One request to admit."""

    api_key: str
    request_id: str
    model: str = ""  # the canonical model name
    requested: str = ""  # the name the caller used (an alias may be what a key allows)
    reserve_tokens: int = 0
    model_rpm: int = 0
    model_tpm: int = 0
    model_concurrency: int = 0
    key_id: str = ""  # instead of api_key: a batch line of this key (admitted by its id)


class Admission:
    def __init__(self, redis: Redis, prefix: str, lease_ttl_seconds: float) -> None:
        self.redis, self.layout = redis, QuotaLayout(prefix)
        self.lease_ttl_ms = int(lease_ttl_seconds * 1000)
        self._script = BatchScript(redis, ADMIT, keys=1)

    async def authenticate(self, api_key: str) -> Principal:
        full = _digest_or_fail(api_key)
        fields = ["revoked", "expires_at", "id", "name", "role", "priority", "team", "models"]
        (
            revoked,
            expires,
            key_id,
            name,
            role,
            priority,
            team,
            models,
            pii,
            pii_types,
        ) = await self.redis.hmget(self.layout.record(full), [*fields, "pii_policy", "pii_types"])
        if revoked != b"0":
            raise AuthenticationFailed()
        expires_at = int(text(expires) or 0)
        if expires_at and expires_at <= time.time():
            raise AuthenticationFailed("The API key has expired.")
        patterns = tuple(json.loads(text(models) or "[]"))
        return Principal(
            text(key_id),
            text(name),
            text(role),
            _priority(priority),
            text(team),
            patterns,
            text(pii),
            split_types(text(pii_types)),
        )

    async def admit(self, ask: Ask) -> Admitted:
        (outcome,) = await self.admit_many([ask])
        if isinstance(outcome, TillerError):
            raise outcome
        return outcome

    async def admit_many(self, asks: list[Ask]) -> list[Admitted | TillerError]:
        """Admit each request on its own, all in one round trip."""
        now = time.time()
        day, month = (
            time.strftime("%Y%m%d", time.gmtime(now)),
            time.strftime("%Y%m", time.gmtime(now)),
        )
        day_left, month_left = _until_day_end(now), _until_month_end(now)
        calls: dict[int, tuple[str, ...]] = {}
        results: list[Admitted | TillerError | None] = [None] * len(asks)
        for position, ask in enumerate(asks):
            try:
                record, by_id = self._record_of(ask)
            except TillerError as error:
                results[position] = error
                continue
            calls[position] = (
                record,
                self.layout.base,
                ask.request_id,
                str(WINDOW_MS),
                str(self.lease_ttl_ms),
                ask.model,
                ask.requested,
                str(max(ask.reserve_tokens, 0)),
                str(ask.model_rpm),
                str(ask.model_tpm),
                str(ask.model_concurrency),
                day,
                month,
                str(day_left),
                str(month_left),
                str(RESERVATION_TTL_SECONDS),
                "1" if by_id else "0",
            )
        replies = await self._script.run(list(calls.values()), raise_errors=False)
        for position, reply in zip(calls, replies, strict=True):
            if isinstance(reply, RedisError):  # this call alone failed (the others stand)
                log.error("admission script failed", extra={"error": type(reply).__name__})
                results[position] = ServiceUnavailable("Admission failed; request refused.")
                continue
            try:
                results[position] = _admitted(reply, asks[position])
            except TillerError as error:
                results[position] = error
        return [r for r in results if r is not None]

    def _record_of(self, ask: Ask) -> tuple[str, bool]:
        """Where the admission script finds the key: its record (by the secret's digest), or
        its id entry (a batch line, by the key's id)."""
        if ask.api_key or not ask.key_id:
            return self.layout.record(_digest_or_fail(ask.api_key)), False
        if not valid_key_id(ask.key_id):
            raise AuthenticationFailed()
        return self.layout.by_id(ask.key_id), True


def _admitted(raw: list[Any], ask: Ask) -> Admitted:
    """The admission script's reply, or the error it stands for."""
    reply = AdmitReply.decode(raw)
    if reply.outcome == "admitted":
        principal = Principal(
            reply.key_id,
            reply.name,
            reply.role,
            _priority(reply.priority),
            reply.team,
            tuple(json.loads(reply.models or "[]")),
            reply.pii_policy,
            split_types(reply.pii_types),
        )
        requests = Window(
            reply.requests_limit, reply.requests_remaining, reply.requests_reset_ms / 1000
        )
        tokens = Window(reply.tokens_limit, reply.tokens_remaining, reply.tokens_reset_ms / 1000)
        metrics.ADMISSIONS.labels("admitted", "", "").inc()
        return Admitted(principal, requests, tokens)
    if reply.scope:  # refused for a limit
        raise _over_limit(reply, ask)
    if reply.outcome == "settled":  # its gateway gave up on it: nobody waits for this answer
        raise ServiceUnavailable("Admission failed; request refused.")
    if reply.outcome in ("role", "model"):
        metrics.ADMISSIONS.labels("forbidden", "key", "").inc()
    else:
        metrics.ADMISSIONS.labels("unauthenticated", "", "").inc()
    if reply.outcome == "role":
        raise PermissionDenied(
            "This key has the viewer role, which may read usage and models but not run "
            "inference; it needs the member or admin role."
        )
    if reply.outcome == "model":
        raise PermissionDenied(
            f"This key may not use the model `{ask.requested or ask.model}`: it is not among "
            "the key's allowed models.",
            param="model",
        )
    if reply.reason == "expired":
        raise AuthenticationFailed("The API key has expired.")
    raise AuthenticationFailed()


def _over_limit(reply: AdmitReply, ask: Ask) -> TillerError:
    scope, _, owner = reply.scope.partition(":")
    what, limit = reply.what, reply.limit
    refusal = _REFUSALS.get(reply.outcome, reply.outcome)
    metrics.ADMISSIONS.labels(
        refusal, _SCOPES.get(scope, scope), _LIMIT_NAMES.get(what, what)
    ).inc()
    whose = f"{_SCOPES.get(scope, scope)} {owner!r}" if scope != "k" else "this key"
    if reply.outcome == "too_large":  # could never fit, however long the caller waits
        return InvalidRequest(
            f"This request may use up to {ask.reserve_tokens} tokens (its prompt, bounded, and "
            f"max_tokens), more than the {limit} tokens per minute of {whose}; lower max_tokens "
            "or shorten the prompt.",
            param="max_tokens",
        )
    if reply.outcome == "over":
        message = f"Rate limit reached for {what} per minute of {whose}: limit {limit}."
    elif reply.outcome == "busy":
        message = f"Too many concurrent requests for {whose}: limit {limit}."
    else:
        message = f"Token budget of {whose} used up: {limit} {what}."
    return RateLimited(message, retry_after=max(reply.wait_ms, 0) / 1000)


def _until_day_end(now: float) -> int:
    return int((86_400 - now % 86_400) * 1000)


def _until_month_end(now: float) -> int:
    t = time.gmtime(now)
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    return int((calendar.timegm((year, month, 1, 0, 0, 0)) - now) * 1000)


def _priority(raw: bytes | str | None) -> int:
    """A key's priority class; keys created before priorities existed get the default."""
    try:
        value = int(text(raw) or DEFAULT_PRIORITY)
    except ValueError:
        return DEFAULT_PRIORITY
    return min(max(value, HIGHEST_PRIORITY), LOWEST_PRIORITY)


def _digest_or_fail(api_key: str) -> str:
    if not api_key:
        raise AuthenticationFailed("You didn't provide an API key.")
    return digest(api_key)
