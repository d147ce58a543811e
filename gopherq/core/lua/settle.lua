-- Settle a batch of claimed tasks in one round trip. Every item is fenced by its attempt token: if the token is
-- no longer in flight (its lease expired and the reaper handed the task to someone else) the item is refused.
-- KEYS: 1 ready list, 2 leases, 3 inflight, 4 delayed, 5 dead (hash), 6 dead index (zset), 7 stats (hash),
--       8.. one result key per item (in item order)
-- ARGV: 1 now (ms), 2 result TTL (s), 3 dead-letter cap, then 5 per item:
--       kind, token, result JSON ('' for none), data, extra
--   kind 'ack'     : write the result; data/extra unused
--   kind 'retry'   : data = new envelope, extra = due time (ms) -> delayed set
--   kind 'dead'    : data = dead-letter entry JSON, extra = entry id -> dead hash + index
--   kind 'release' : put the in-flight envelope back at the head of the ready list, unchanged (shutdown)
-- Returns: one 1 (settled) or 0 (refused: stale token) per item.
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
local out = {}
local dead_added = false
local n = (#ARGV - 3) / 5
for i = 0, n - 1 do
  local base = 4 + i * 5
  local kind, token, result = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  local envelope = redis.call('HGET', KEYS[3], token)
  if not envelope then
    out[#out + 1] = 0
    redis.call('HINCRBY', KEYS[7], 'refused_acks', 1)
  else
    redis.call('HDEL', KEYS[3], token)
    redis.call('ZREM', KEYS[2], token)
    if kind == 'retry' then
      redis.call('ZADD', KEYS[4], ARGV[base + 4], ARGV[base + 3])
    elseif kind == 'dead' then
      redis.call('HSET', KEYS[5], ARGV[base + 4], ARGV[base + 3])
      redis.call('ZADD', KEYS[6], ARGV[1], ARGV[base + 4])
      dead_added = true
    elseif kind == 'release' then
      redis.call('LPUSH', KEYS[1], envelope)
    end
    if result ~= '' then
      redis.call('SET', KEYS[8 + i], result, 'EX', ttl)
    end
    out[#out + 1] = 1
  end
end
if dead_added then
  local over = redis.call('ZCARD', KEYS[6]) - cap
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[6], over)
    for j = 1, #oldest, 2 do redis.call('HDEL', KEYS[5], oldest[j]) end
    redis.call('HINCRBY', KEYS[7], 'dead_trimmed', over)
  end
end
return out
