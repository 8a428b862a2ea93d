"""Usage ledger and lease release: what a finished request leaves behind.

Settling is idempotent: a settlement applies once per request id (a marker key kept for
SETTLED_TTL_SECONDS), so a gateway may send it again after a call that failed or timed out
without counting the usage twice.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from redis.asyncio import Redis

from tiller.common.errors import InvalidRequest
from tiller.protos.quota.v1.quota_pb2 import Lease, Settlement
from tiller.quota.keys import KeyLayout, valid_key_id
from tiller.quota.scripts import BatchScript

USAGE_TTL_SECONDS = 400 * 86_400  # a little over a year of daily rows
SETTLED_TTL_SECONDS = 3_600  # longer than any gateway keeps retrying a settlement

# KEYS: leases, settled marker, usage row. ARGV: request id, completed (0/1), model, prompt
# tokens, completion tokens, marker TTL, usage TTL.
_SETTLE = """
redis.call('ZREM', KEYS[1], ARGV[1])
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[6]) then return 0 end
if ARGV[2] == '1' then
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':requests', 1)
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':prompt_tokens', ARGV[4])
  redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':completion_tokens', ARGV[5])
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
return 1
"""


# KEYS: leases. ARGV: request id, TTL ms. Moves the lease's expiry only if it is still held.
_RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
if renewed == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return renewed
"""


class Ledger:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix
        self._script = BatchScript(redis, _SETTLE, keys=3)
        self._renew = BatchScript(redis, _RENEW, keys=1)

    def _layout(self, key_id: str) -> KeyLayout:
        if not valid_key_id(key_id):
            raise InvalidRequest("key_id is not a key id", param="key_id")
        return KeyLayout(self.prefix, key_id)

    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """Release every lease and record the usage of completed requests, in one round trip.
        Returns how many were new (the rest had been settled before)."""
        day = time.strftime("%Y%m%d", time.gmtime())
        layouts = [self._layout(s.key_id) for s in settlements]  # all valid, or none written
        calls: list[tuple[str, ...]] = [
            (
                layout.leases,
                layout.settled(s.request_id),
                layout.usage(day),
                s.request_id,
                "1" if s.completed else "0",
                s.model,
                str(max(s.prompt_tokens, 0)),
                str(max(s.completion_tokens, 0)),
                str(SETTLED_TTL_SECONDS),
                str(USAGE_TTL_SECONDS),
            )
            for s, layout in zip(settlements, layouts, strict=True)
        ]
        replies = await self._script.run(calls)
        return sum(int(r) for r in replies)

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> int:
        """Extend held leases by `ttl_ms` from now; how many were still held."""
        layouts = [self._layout(lease.key_id) for lease in leases]
        calls: list[tuple[str, ...]] = [
            (layout.leases, lease.request_id, str(ttl_ms))
            for lease, layout in zip(leases, layouts, strict=True)
        ]
        return sum(int(r) for r in await self._renew.run(calls))
