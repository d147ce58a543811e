-- Recover tasks whose holder is gone: in-flight tasks whose lease expired, and whatever sits in the processing
-- lists of workers whose heartbeat stopped. They go back to the head of the ready list with their `recoveries`
-- count raised (a crash is a recovery, not an attempt) and `ready_at` stamped. Serialised across workers by a short
-- lock.
-- KEYS: 1 ready list, 2 leases, 3 inflight, 4 workers (zset), 5 reaper lock, 6 stats (hash),
--       7.. processing lists of silent workers, then the high- and low-priority lists, then the reaped tokens (zset),
--       then the whereabouts (hash; last)
-- ARGV: 1 now (ms), 2 lock TTL (ms), 3 lock owner, 4 max leases to reap, 5 silent before (ms): a worker whose last
--       heartbeat is older is presumed dead, 6 forget before (ms): a dead worker whose last heartbeat is older than
--       this is removed from the workers set, 7 reaped tokens older than this (ms) are forgotten, 8 most reaped
--       tokens kept, 9.. silent worker ids (same order as KEYS 7..)
-- Every token taken back from an expired lease is recorded in the reaped set, so that its holder's late settle
-- is told apart from a settle repeated after a lost reply (settle.lua).
-- A dead worker is remembered for a while after its list is first drained: a blocking fetch it sent just before it
-- froze can still move a task into its list until that fetch times out, and the next reap must find that task.
-- Returns: the recovered envelopes (after marking), or false when another worker holds the lock.
if not redis.call('SET', KEYS[5], ARGV[3], 'NX', 'PX', ARGV[2]) then return false end
local ready, high, low, reaped = KEYS[1], KEYS[#KEYS - 3], KEYS[#KEYS - 2], KEYS[#KEYS - 1]
--@include levels
--@include whereabouts

-- A recovered task goes back to the head of its list with its `recoveries` raised and `ready_at` stamped now (see
-- restamp in levels.lua): a crash is a recovery, not an attempt, and the task has been ready again since this moment.
local now = tonumber(ARGV[1])
local recovered = {}
local function recover(raw)
  local marked = restamp(raw, now, true)
  local fair = push_level('LPUSH', marked)
  note(task_id(marked),
       'ready|' .. level_name(level_key(marked), high, low) .. '|' .. ARGV[1] .. '|recovered' .. fair_where(fair))
  recovered[#recovered + 1] = marked
end

local taken = {}
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
-- Walk backwards so the tasks keep their order at the head of the ready list.
for i = #expired, 1, -1 do
  local token = expired[i]
  local raw = redis.call('HGET', KEYS[3], token)
  redis.call('ZREM', KEYS[2], token)
  if raw then
    redis.call('HDEL', KEYS[3], token)
    recover(raw)
    taken[#taken + 1] = ARGV[1]
    taken[#taken + 1] = token
  end
end
if #taken > 0 then
  for j = 1, #taken, 2000 do
    redis.call('ZADD', reaped, unpack(taken, j, math.min(j + 1999, #taken)))
  end
  redis.call('ZREMRANGEBYSCORE', reaped, '-inf', '(' .. ARGV[7])
  redis.call('ZREMRANGEBYRANK', reaped, 0, -tonumber(ARGV[8]) - 1)
end
local silent_before, forget_before = tonumber(ARGV[5]), tonumber(ARGV[6])
for k = 7, #KEYS - 4 do
  local worker = ARGV[k + 2]
  local seen = redis.call('ZSCORE', KEYS[4], worker)
  -- Checked again here: the worker may have sent a heartbeat since the caller listed it.
  if seen and tonumber(seen) <= silent_before then
    while true do
      local raw = redis.call('RPOP', KEYS[k])
      if not raw then break end
      -- A wake marker a blocking fetch moved here has done its job: it is dropped.
      if raw ~= WAKE then recover(raw) end
    end
    if tonumber(seen) <= forget_before then redis.call('ZREM', KEYS[4], worker) end
  end
end
if #recovered > 0 then redis.call('HINCRBY', KEYS[6], 'recovered', #recovered) end
flush_where(KEYS[#KEYS])
return recovered
