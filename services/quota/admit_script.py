"""The admission script: every check and count of one admission in one atomic Redis call
(admission.py), and its reply read by name."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from tiller.common.redis_text import text

# KEYS: the key's record (or, with ARGV[16] '1', its id entry: a batch line admitted by the
# key's id). ARGV: base, request id, window ms, lease ttl ms, model, requested name, tokens to
# reserve, the model's rpm, tpm, concurrency, day, month, ms until the day ends, ms until the
# month ends, reservation ttl s, by id (0/1). Returns named fields (name, value, name, value…),
# read into one AdmitReply.
ADMIT = """
local record = KEYS[1]
if ARGV[16] == '1' then  -- KEYS[1] is the key's id entry, which names its record's digest
  local digest = redis.call('GET', KEYS[1])
  if not digest then return {'outcome', 'unknown', 'reason', 'unknown'} end
  record = ARGV[1] .. 'key:' .. digest
end
local raw = redis.call('HGETALL', record)
if #raw == 0 then return {'outcome', 'unknown', 'reason', 'unknown'} end
local r = {}
for i = 1, #raw, 2 do r[raw[i]] = raw[i + 1] end
if r['revoked'] ~= '0' then return {'outcome', 'unknown', 'reason', 'revoked'} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expires = tonumber(r['expires_at'] or '0') or 0
if expires > 0 and expires * 1000 <= now then return {'outcome', 'unknown', 'reason', 'expired'} end
if r['role'] == 'viewer' then return {'outcome', 'role'} end
local base, id = ARGV[1], ARGV[2]
-- Released before it ran: the gateway gave up on it while Redis was away (usage.py).
if redis.call('EXISTS', base .. 'settled:' .. id) == 1 then return {'outcome', 'settled'} end
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
  if not allowed then return {'outcome', 'model'} end
end
-- Counts are written as the strings they came as (a Lua number may print as 1e+15).
local window, ttl, reserve = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[7])
local function n(v) return tonumber(v or '0') or 0 end
local function refused(outcome, scope, what, limit, wait_ms)
  return {'outcome', outcome, 'scope', scope, 'what', what, 'limit', limit, 'wait_ms', wait_ms}
end
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
      return refused('over', name, 'requests', s[2], tonumber(oldest[2]) + window - now)
    end
  end
  if s[3] > 0 then
    if reserve > s[3] then return refused('too_large', name, 'tokens', s[3], 0) end
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
      return refused('over', name, 'tokens', s[3], wait)
    end
  end
  if s[4] > 0 then
    local k = base .. 'conc:' .. name
    redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
    if redis.call('ZCARD', k) >= s[4] then
      return refused('busy', name, 'concurrent requests', s[4], 1000)
    end
  end
  local spend = base .. 'spend:' .. name
  if s[5] > 0 and n(redis.call('GET', spend .. ':d:' .. day)) + reserve > s[5] then
    return refused('budget', name, 'tokens per day', s[5], tonumber(ARGV[13]))
  end
  if s[6] > 0 and n(redis.call('GET', spend .. ':m:' .. month)) + reserve > s[6] then
    return refused('budget', name, 'tokens per month', s[6], tonumber(ARGV[14]))
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
return {'outcome', 'admitted', 'key_id', r['id'], 'name', r['name'] or '',
  'role', r['role'] or '', 'priority', r['priority'] or '', 'team', team,
  'requests_limit', rl, 'requests_remaining', math.max(rr, 0), 'requests_reset_ms', rt,
  'tokens_limit', tl, 'tokens_remaining', math.max(tr, 0), 'tokens_reset_ms', tt,
  'models', r['models'] or '[]', 'pii_policy', r['pii_policy'] or '',
  'pii_types', r['pii_types'] or ''}
"""


@dataclass(frozen=True)
class AdmitReply:
    """The admission script's reply, by name. `outcome`: admitted; unknown (the key: `reason`
    unknown, revoked or expired); role or model (not allowed); over, busy, budget or too_large
    (refused for the `what` limit of `scope`, `limit`, worth waiting `wait_ms`); settled (the
    request was released before Redis ran its admission: nothing counted)."""

    outcome: str
    reason: str = ""
    key_id: str = ""
    name: str = ""
    role: str = ""
    priority: str = ""
    team: str = ""
    requests_limit: int = 0
    requests_remaining: int = 0
    requests_reset_ms: int = 0
    tokens_limit: int = 0
    tokens_remaining: int = 0
    tokens_reset_ms: int = 0
    models: str = "[]"
    pii_policy: str = ""
    pii_types: str = ""
    scope: str = ""
    what: str = ""
    limit: int = 0
    wait_ms: int = 0

    @classmethod
    def decode(cls, reply: list[Any]) -> AdmitReply:
        values = {text(reply[i]): reply[i + 1] for i in range(0, len(reply) - 1, 2)}
        fields: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            if field.name in values:
                value = values[field.name]
                fields[field.name] = int(value) if field.type == "int" else text(value)
        return cls(**fields)
