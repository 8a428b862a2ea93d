"""Admission: authenticate a key and count the request against its limits in one Redis script.

Requests per minute are a sliding log (a sorted set of request ids scored by time), so the limit
holds over any 60 s window and across gateway replicas. Concurrency is a set of leases that
expire on their own if a gateway dies without releasing them. Redis's clock is the only clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from tiller.common.errors import AuthenticationFailed, RateLimited, TillerError
from tiller.common.priorities import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from tiller.common.redis_text import text
from tiller.quota.keys import KeyLayout, digest
from tiller.quota.scripts import BatchScript

WINDOW_MS = 60_000

_ADMIT = """
local rec = redis.call('HMGET', KEYS[1], 'revoked', 'rpm', 'concurrency', 'id', 'name', 'role',
  'priority')
if rec[1] ~= '0' then return {0} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
local rpm = tonumber(rec[2]) or 0
local conc = tonumber(rec[3]) or 0
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[2])
if rpm > 0 and used >= rpm then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  return {2, rpm, 0, tonumber(oldest[2]) + window - now}
end
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  if redis.call('ZCARD', KEYS[3]) >= conc then return {3, conc, 0, 1000} end
end
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('PEXPIRE', KEYS[2], window)
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[3], tonumber(ARGV[3]))
local reset = 0
if rpm > 0 then
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
  reset = tonumber(oldest[2]) + window - now
end
return {1, rpm, math.max(rpm - used - 1, 0), reset, rec[4], rec[5], rec[6], rec[7] or ''}
"""

_ADMITTED, _RPM_EXCEEDED, _CONCURRENCY_EXCEEDED = 1, 2, 3


@dataclass(frozen=True)
class Principal:
    key_id: str
    name: str
    role: str
    priority: int = DEFAULT_PRIORITY


@dataclass(frozen=True)
class Admitted:
    principal: Principal
    rpm_limit: int
    rpm_remaining: int
    rpm_reset_seconds: float


class Admission:
    def __init__(self, redis: Redis, prefix: str, lease_ttl_seconds: float) -> None:
        self.redis, self.prefix = redis, prefix
        self.lease_ttl_ms = int(lease_ttl_seconds * 1000)
        self._script = BatchScript(redis, _ADMIT, keys=3)

    async def authenticate(self, api_key: str) -> Principal:
        full = _digest_or_fail(api_key)
        layout = KeyLayout(self.prefix, full[:16])
        revoked, key_id, name, role, priority = await self.redis.hmget(
            layout.record(full), ["revoked", "id", "name", "role", "priority"]
        )
        if revoked != b"0":
            raise AuthenticationFailed()
        return Principal(text(key_id), text(name), text(role), _priority(priority))

    async def admit(self, api_key: str, request_id: str) -> Admitted:
        (outcome,) = await self.admit_many([(api_key, request_id)])
        if isinstance(outcome, TillerError):
            raise outcome
        return outcome

    async def admit_many(self, requests: list[tuple[str, str]]) -> list[Admitted | TillerError]:
        """Admit (api_key, request_id) pairs in one round trip, each on its own."""
        calls: dict[int, tuple[str, ...]] = {}  # position -> the script's keys and args
        results: list[Admitted | TillerError | None] = [None] * len(requests)
        for position, (api_key, request_id) in enumerate(requests):
            try:
                full = _digest_or_fail(api_key)
            except TillerError as error:
                results[position] = error
                continue
            layout = KeyLayout(self.prefix, full[:16])
            calls[position] = (
                layout.record(full),
                layout.requests,
                layout.leases,
                request_id,
                str(WINDOW_MS),
                str(self.lease_ttl_ms),
            )
        replies = await self._script.run(list(calls.values()))
        for position, reply in zip(calls, replies, strict=True):
            try:
                results[position] = _admitted(reply)
            except TillerError as error:
                results[position] = error
        return [r for r in results if r is not None]


def _admitted(reply: list[Any]) -> Admitted:
    """The admission script's reply, or the error it stands for."""
    outcome = int(reply[0])
    if outcome == _ADMITTED:
        key_id, name, role = (text(part) for part in reply[4:7])
        principal = Principal(key_id, name, role, _priority(reply[7]))
        return Admitted(principal, int(reply[1]), int(reply[2]), int(reply[3]) / 1000)
    if outcome == _RPM_EXCEEDED:
        raise RateLimited(
            f"Rate limit reached for requests per minute: limit {int(reply[1])}.",
            retry_after=int(reply[3]) / 1000,
        )
    if outcome == _CONCURRENCY_EXCEEDED:
        raise RateLimited(
            f"Too many concurrent requests: limit {int(reply[1])}.",
            retry_after=int(reply[3]) / 1000,
        )
    raise AuthenticationFailed()


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
