"""Admission: authenticate a key, check its role and models, and count the request against every
limit that applies to it, in one atomic Redis script.

Three scopes can limit a request: its key, the key's team, and the model (models.yaml
`limits`). Each may set requests per minute (a sliding log: a sorted set of request ids scored by
time, so the limit holds over any 60 s window and across every gateway and quota replica),
tokens per minute (the same log, each entry holding the tokens it reserved), and concurrent
requests (leases that expire on their own unless the gateway serving the request renews them).
Keys and teams may also set tokens per day and per month (budgets, UTC days and months).

Tokens are reserved at admission (the prompt's estimate plus its max_tokens cap) and reconciled
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
from tiller.quota.keys import QuotaLayout, split_types
from tiller.quota.scripts import BatchScript

log = logging.getLogger(__name__)
WINDOW_MS = 60_000
# A request's reservation record outlives any request (usage.py settles and deletes it).
RESERVATION_TTL_SECONDS = 2 * 86_400

# KEYS: the key's record. ARGV: base, request id, window ms, lease ttl ms, model, requested
# name, tokens to reserve, the model's rpm, tpm, concurrency, day, month, ms until the day ends,
# ms until the month ends, reservation ttl s.
_ADMIT = """
local raw = redis.call('HGETALL', KEYS[1])
if #raw == 0 then return {0, 'unknown'} end
local r = {}
for i = 1, #raw, 2 do r[raw[i]] = raw[i + 1] end
if r['revoked'] ~= '0' then return {0, 'revoked'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = tonumber(r['expires_at'] or '0') or 0
if expires > 0 and expires * 1000 <= now then return {0, 'expired'} end
if r['role'] == 'viewer' then return {4, 'role'} end
local model, asked = ARGV[5], ARGV[6]
local patterns = r['models_lua'] or ''
if patterns ~= '' then
  local allowed = false
  for p in string.gmatch(patterns, '[^\\n]+') do
    if string.match(model, p) or (asked ~= '' and string.match(asked, p)) then
      allowed = true
      break
    end
  end
  if not allowed then return {5, 'model'} end
end
local base, id = ARGV[1], ARGV[2]
-- Counts are written as the strings they came as (a Lua number may print as 1e+15).
local window, ttl, reserve = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
local function n(v) return tonumber(v or '0') or 0 end
local scopes = {{'k:' .. r['id'], n(r['rpm']), n(r['tpm']), n(r['concurrency']),
  n(r['tokens_per_day']), n(r['tokens_per_month'])}}
local team = r['team'] or ''
if team ~= '' then
  local l = redis.call('HMGET', base .. 'team:' .. team, 'rpm', 'tpm', 'concurrency',
    'tokens_per_day', 'tokens_per_month')
  table.insert(scopes, {'t:' .. team, n(l[1]), n(l[2]), n(l[3]), n(l[4]), n(l[5])})
end
table.insert(scopes, {'m:' .. model, n(ARGV[8]), n(ARGV[9]), n(ARGV[10]), 0, 0})
local day, month = ARGV[11], ARGV[12]
-- Check every limit of every scope first: nothing is counted unless all pass.
for _, s in ipairs(scopes) do
  local name = s[1]
  if s[2] > 0 then
    local k = base .. 'rpm:' .. name
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
    if redis.call('ZCARD', k) >= s[2] then
      local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
      return {2, name, 'requests', s[2], tonumber(oldest[2]) + window - now}
    end
  end
  if s[3] > 0 then
    if reserve > s[3] then return {6, name, 'tokens', s[3], 0} end
    local k, v, sum = base .. 'tpm:' .. name, base .. 'tpmv:' .. name, base .. 'tpms:' .. name
    local gone = redis.call('ZRANGEBYSCORE', k, '-inf', now - window)
    for _, member in ipairs(gone) do
      redis.call('DECRBY', sum, n(redis.call('HGET', v, member)))
      redis.call('HDEL', v, member)
    end
    if n(redis.call('GET', sum)) < 0 then redis.call('SET', sum, 0, 'KEEPTTL') end
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now - window)
    if n(redis.call('GET', sum)) + reserve > s[3] then
      local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
      local wait = 1000
      if oldest[2] then wait = tonumber(oldest[2]) + window - now end
      return {2, name, 'tokens', s[3], wait}
    end
  end
  if s[4] > 0 then
    local k = base .. 'conc:' .. name
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    if redis.call('ZCARD', k) >= s[4] then return {3, name, 'concurrent requests', s[4], 1000} end
  end
  local spend = base .. 'spend:' .. name
  if s[5] > 0 and n(redis.call('GET', spend .. ':d:' .. day)) + reserve > s[5] then
    return {7, name, 'tokens per day', s[5], tonumber(ARGV[13])}
  end
  if s[6] > 0 and n(redis.call('GET', spend .. ':m:' .. month)) + reserve > s[6] then
    return {7, name, 'tokens per month', s[6], tonumber(ARGV[14])}
  end
end
-- Count it everywhere, and report the tightest requests and tokens limits for the headers.
local rl, rr, rt, tl, tr, tt = 0, -1, 0, 0, -1, 0
for _, s in ipairs(scopes) do
  local name = s[1]
  if s[2] > 0 then
    local k = base .. 'rpm:' .. name
    redis.call('ZADD', k, now, id)
    redis.call('PEXPIRE', k, window)
    local left = s[2] - redis.call('ZCARD', k)
    if rr < 0 or left < rr then
      local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
      rl, rr, rt = s[2], left, tonumber(oldest[2]) + window - now
    end
  end
  if s[3] > 0 then
    local k, v, sum = base .. 'tpm:' .. name, base .. 'tpmv:' .. name, base .. 'tpms:' .. name
    redis.call('ZADD', k, now, id)
    redis.call('HSET', v, id, ARGV[7])
    local used = redis.call('INCRBY', sum, ARGV[7])
    for _, key in ipairs({k, v, sum}) do redis.call('PEXPIRE', key, window) end
    local left = s[3] - used
    if tr < 0 or left < tr then
      local oldest = redis.call('ZRANGE', k, 0, 0, 'WITHSCORES')
      tl, tr, tt = s[3], left, tonumber(oldest[2]) + window - now
    end
  end
  if s[4] > 0 then
    local k = base .. 'conc:' .. name
    redis.call('ZADD', k, now + ttl, id)
    redis.call('PEXPIRE', k, ttl)
  end
  if string.sub(name, 1, 2) ~= 'm:' then
    local d, m = base .. 'spend:' .. name .. ':d:' .. day, base .. 'spend:' .. name .. ':m:'
    m = m .. month
    redis.call('INCRBY', d, ARGV[7])
    redis.call('EXPIRE', d, 3 * 86400)
    redis.call('INCRBY', m, ARGV[7])
    redis.call('EXPIRE', m, 40 * 86400)
  end
end
local resv = base .. 'resv:' .. id
redis.call('HSET', resv, 'key', r['id'], 'team', team, 'model', model, 'tokens', ARGV[7],
  'day', day, 'month', month)
redis.call('EXPIRE', resv, ARGV[15])
return {1, r['id'], r['name'] or '', r['role'] or '', r['priority'] or '', team,
  rl, math.max(rr, 0), rt, tl, math.max(tr, 0), tt, r['models'] or '[]',
  r['pii_policy'] or '', r['pii_types'] or ''}
"""

_UNKNOWN, _ADMITTED, _OVER, _BUSY, _ROLE, _MODEL, _TOO_LARGE, _BUDGET = 0, 1, 2, 3, 4, 5, 6, 7
_SCOPES = {"k": "key", "t": "team", "m": "model"}
_REFUSALS = {
    _OVER: "rate_limited",
    _BUSY: "concurrency",
    _BUDGET: "budget",
    _TOO_LARGE: "too_large",
}
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


class Admission:
    def __init__(self, redis: Redis, prefix: str, lease_ttl_seconds: float) -> None:
        self.redis, self.layout = redis, QuotaLayout(prefix)
        self.lease_ttl_ms = int(lease_ttl_seconds * 1000)
        self._script = BatchScript(redis, _ADMIT, keys=1)

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
                full = _digest_or_fail(ask.api_key)
            except TillerError as error:
                results[position] = error
                continue
            calls[position] = (
                self.layout.record(full),
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


def _admitted(reply: list[Any], ask: Ask) -> Admitted:
    """The admission script's reply, or the error it stands for."""
    outcome = int(reply[0])
    if outcome == _ADMITTED:
        key_id, name, role = (text(part) for part in reply[1:4])
        patterns = tuple(json.loads(text(reply[12]) or "[]"))
        principal = Principal(
            key_id,
            name,
            role,
            _priority(reply[4]),
            text(reply[5]),
            patterns,
            text(reply[13]),
            split_types(text(reply[14])),
        )
        requests = Window(int(reply[6]), int(reply[7]), int(reply[8]) / 1000)
        tokens = Window(int(reply[9]), int(reply[10]), int(reply[11]) / 1000)
        metrics.ADMISSIONS.labels("admitted", "", "").inc()
        return Admitted(principal, requests, tokens)
    if outcome in (_OVER, _BUSY, _BUDGET, _TOO_LARGE):
        scope, _, owner = text(reply[1]).partition(":")
        what, limit = text(reply[2]), int(reply[3])
        metrics.ADMISSIONS.labels(
            _REFUSALS[outcome], _SCOPES.get(scope, scope), _LIMIT_NAMES.get(what, what)
        ).inc()
        whose = f"{_SCOPES.get(scope, scope)} {owner!r}" if scope != "k" else "this key"
        if outcome == _OVER:
            message = f"Rate limit reached for {what} per minute of {whose}: limit {limit}."
        elif outcome == _BUSY:
            message = f"Too many concurrent requests for {whose}: limit {limit}."
        elif outcome == _BUDGET:
            message = f"Token budget of {whose} used up: {limit} {what}."
        else:  # could never fit, however long the caller waits
            raise InvalidRequest(
                f"This request may use up to {ask.reserve_tokens} tokens (prompt and max_tokens), "
                f"more than the {limit} tokens per minute of {whose}; lower max_tokens.",
                param="max_tokens",
            )
        raise RateLimited(message, retry_after=max(int(reply[4]), 0) / 1000)
    if outcome in (_ROLE, _MODEL):
        metrics.ADMISSIONS.labels("forbidden", "key", "").inc()
    else:
        metrics.ADMISSIONS.labels("unauthenticated", "", "").inc()
    if outcome == _ROLE:
        raise PermissionDenied(
            "This key has the viewer role, which may read usage and models but not run "
            "inference; it needs the member or admin role."
        )
    if outcome == _MODEL:
        raise PermissionDenied(
            f"This key may not use the model `{ask.requested or ask.model}`: it is not among "
            "the key's allowed models.",
            param="model",
        )
    if text(reply[1]) == "expired":
        raise AuthenticationFailed("The API key has expired.")
    raise AuthenticationFailed()


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
