"""What a finished request leaves behind: its leases released, its reserved tokens reconciled
with what the engine counted, and a row in the usage ledger.

Settling is idempotent: a settlement applies once per request id (a marker key kept for
SETTLED_TTL_SECONDS), so a gateway may send it again after a call that failed or timed out
without counting anything twice.

A request that ran counts against requests per minute however it ended (its engine worked on it:
a client that retries failing requests is still limited). A request refused after its admission
(`refused`: its admission's call failed, a PII policy blocked it, its run could not start) never
ran: its settlement takes it out of the requests-per-minute logs as well, so a refusal leaves
nothing counted. Its marker, set even when the admission has not run yet, makes an admission of
that id that Redis runs later (it was frozen while the gateway gave up) count nothing.

The admission's reservation record (admission.py) says which scopes (key, team, model) the
request was counted in and how many tokens it reserved.

The ledger is one Redis hash per UTC day, fields `<key id>|<team>|<model>|<measure>`, so the
usage of a key, a team or a model over a range of days is a read of those days.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from tiller.common.errors import InvalidRequest
from tiller.common.redis_text import text
from tiller.protos.quota.v1.quota_pb2 import Lease, Settlement
from tiller.quota.keys import QuotaLayout, valid_key_id
from tiller.quota.scripts import BatchScript

USAGE_TTL_SECONDS = 400 * 86_400  # a little over a year of daily rows
SETTLED_TTL_SECONDS = 3_600  # longer than any gateway keeps retrying a settlement
MEASURES = ("requests", "prompt_tokens", "completion_tokens")

# ARGV: base, request id, key id, completed (0/1), model, prompt tokens, completion tokens,
# marker ttl, usage ttl, day, refused (0/1).
_SETTLE = """
local base, id = ARGV[1], ARGV[2]
local resv = base .. 'resv:' .. id
local raw = redis.call('HGETALL', resv)
local r = {}
for i = 1, #raw, 2 do r[raw[i]] = raw[i + 1] end
local key = r['key'] or ARGV[3]
local team = r['team'] or ''
local model = r['model'] or ARGV[5]
local scopes = {'k:' .. key, 'm:' .. model}
if team ~= '' then table.insert(scopes, 't:' .. team) end
for _, s in ipairs(scopes) do
  redis.call('ZREM', base .. 'conc:' .. s, id)
  if ARGV[11] == '1' then redis.call('ZREM', base .. 'rpm:' .. s, id) end
end
-- The marker also tells an admission of this id that Redis runs only now (it was frozen while
-- the gateway gave up on it) to count nothing (admit_script.py).
if not redis.call('SET', base .. 'settled:' .. id, '1', 'NX', 'EX', ARGV[8]) then return 0 end
local used = 0
if ARGV[4] == '1' then used = tonumber(ARGV[6]) + tonumber(ARGV[7]) end
if r['tokens'] then
  local delta = used - tonumber(r['tokens'])
  for _, s in ipairs(scopes) do
    local v = base .. 'tpmv:' .. s
    local held = redis.call('HGET', v, id)
    if held then
      redis.call('HSET', v, id, used)
      redis.call('INCRBY', base .. 'tpms:' .. s, used - tonumber(held))
    end
    if string.sub(s, 1, 2) ~= 'm:' then
      for _, spend in ipairs({base .. 'spend:' .. s .. ':d:' .. r['day'],
                              base .. 'spend:' .. s .. ':m:' .. r['month']}) do
        if redis.call('EXISTS', spend) == 1 then redis.call('INCRBY', spend, delta) end
      end
    end
  end
  redis.call('DEL', resv)
end
if ARGV[4] == '1' then
  local row = base .. 'usage:' .. ARGV[10]
  local prefix = key .. '|' .. team .. '|' .. model .. '|'
  redis.call('HINCRBY', row, prefix .. 'requests', 1)
  redis.call('HINCRBY', row, prefix .. 'prompt_tokens', ARGV[6])
  redis.call('HINCRBY', row, prefix .. 'completion_tokens', ARGV[7])
  redis.call('EXPIRE', row, ARGV[9])
end
return 1
"""

# ARGV: base, request id, key id, ttl ms. Moves each lease's expiry only where it is still held.
_RENEW = """
local base, id = ARGV[1], ARGV[2]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local r = redis.call('HMGET', base .. 'resv:' .. id, 'team', 'model')
local scopes = {'k:' .. ARGV[3]}
if r[1] and r[1] ~= '' then table.insert(scopes, 't:' .. r[1]) end
if r[2] then table.insert(scopes, 'm:' .. r[2]) end
local renewed = 0
for _, s in ipairs(scopes) do
  local k = base .. 'conc:' .. s
  if redis.call('ZADD', k, 'XX', 'CH', now + tonumber(ARGV[4]), id) == 1 then
    redis.call('PEXPIRE', k, ARGV[4])
    renewed = 1
  end
end
return renewed
"""


@dataclass
class UsageRow:
    key_id: str
    team: str
    model: str
    day: str
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEASURES, 0))


class Ledger:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.layout = redis, QuotaLayout(prefix)
        self._script = BatchScript(redis, _SETTLE, keys=0)
        self._renew = BatchScript(redis, _RENEW, keys=0)

    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """Release every lease, reconcile reservations and record the usage of completed
        requests, in one round trip. Returns how many were new (the rest had been settled)."""
        day = time.strftime("%Y%m%d", time.gmtime())
        _check_ids(s.key_id for s in settlements)  # all valid, or none written
        calls: list[tuple[str, ...]] = [
            (
                self.layout.base,
                s.request_id,
                s.key_id,
                "1" if s.completed else "0",
                s.model,
                str(max(s.prompt_tokens, 0)),
                str(max(s.completion_tokens, 0)),
                str(SETTLED_TTL_SECONDS),
                str(USAGE_TTL_SECONDS),
                day,
                "1" if s.refused else "0",
            )
            for s in settlements
        ]
        replies = await self._script.run(calls)
        return sum(int(r) for r in replies)

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> int:
        """Extend held leases by `ttl_ms` from now; how many were still held."""
        _check_ids(lease.key_id for lease in leases)
        calls: list[tuple[str, ...]] = [
            (self.layout.base, lease.request_id, lease.key_id, str(ttl_ms)) for lease in leases
        ]
        return sum(int(r) for r in await self._renew.run(calls))

    async def usage(self, days: Sequence[str], key_id: str | None = None) -> list[UsageRow]:
        """The ledger's rows of these days (YYYYMMDD), of one key or of all."""
        rows: dict[tuple[str, str, str, str], UsageRow] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self.layout.usage(day))
            replies = await pipe.execute()
        for day, reply in zip(days, replies, strict=True):
            for raw_field, value in reply.items():
                owner, team, model, measure = text(raw_field).rsplit("|", 3)
                if key_id is not None and owner != key_id:
                    continue
                row = rows.setdefault((day, owner, team, model), UsageRow(owner, team, model, day))
                row.counts[measure] = int(value)
        return sorted(rows.values(), key=lambda r: (r.day, r.key_id, r.model))


def totals(rows: Sequence[UsageRow], by: str) -> dict[str, dict[str, int]]:
    """Rows summed by `key_id`, `team` or `model`."""
    summed: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(MEASURES, 0))
    for row in rows:
        for measure, value in row.counts.items():
            summed[getattr(row, by)][measure] += value
    return dict(summed)


def _check_ids(key_ids: Iterable[str]) -> None:
    for key_id in key_ids:
        if not valid_key_id(key_id):
            raise InvalidRequest("key_id is not a key id", param="key_id")
