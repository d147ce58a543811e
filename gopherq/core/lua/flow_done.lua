-- Record how tasks admitted through flow limits ended: free their concurrency slots, feed the circuit breaker
-- and the adaptive rate. One round trip per settle batch that holds such tasks.
-- Also counts each attempt in its key's statistics (flow_stats.lua: label and latency bucket).
-- KEYS: per flow key: state (hash), slots (zset), the current five minutes' statistics (hash)
-- ARGV: 1 now (ms), 2 number of flow keys K, 3 statistics TTL (s),
--       then 6 per key: name, circuit failures (0 = no breaker), window (ms), cool-down (ms), slow-down factor,
--                       lowest rate factor,
--       then 5 per task: key index (1-based), token, signal ('ok', 'error', 'slow', 'slow_error' or 'neutral'),
--                        label ('' = not counted), latency bucket ('' = none)
-- Returns: events as triples {key, name, value}.
--@include flow_stats
local now = tonumber(ARGV[1])
local k = tonumber(ARGV[2])
local stats_ttl = tonumber(ARGV[3])
local cfg = {}
for i = 1, k do
  local b = 4 + (i - 1) * 6
  cfg[i] = {name = ARGV[b], failures = tonumber(ARGV[b + 1]), window = tonumber(ARGV[b + 2]),
            cooldown = tonumber(ARGV[b + 3]), slow = tonumber(ARGV[b + 4]), floor = tonumber(ARGV[b + 5])}
end
local events = {}
local function event(name, what, value)
  events[#events + 1] = name
  events[#events + 1] = what
  events[#events + 1] = tostring(value)
end
for j = 4 + k * 6, #ARGV, 5 do
  local i = tonumber(ARGV[j])
  local c = cfg[i]
  local state, slots = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local token, signal = ARGV[j + 1], ARGV[j + 2]
  redis.call('ZREM', slots, token)
  record_stats(KEYS[3 * i], ARGV[j + 3], ARGV[j + 4], stats_ttl)
  local failed = signal == 'error' or signal == 'slow_error'
  if c.failures > 0 then
    if redis.call('HGET', state, 'probe') == token then
      -- The half-open probe decides: a failure opens the circuit again, anything else closes it.
      redis.call('HDEL', state, 'probe', 'probe_until')
      if failed then
        redis.call('HSET', state, 'open_until', now + c.cooldown)
        event(c.name, 'circuit_opened', now + c.cooldown)
      else
        redis.call('HDEL', state, 'open_until', 'fails', 'fails_since')
        event(c.name, 'circuit_closed', now)
      end
    elseif failed then
      local since = tonumber(redis.call('HGET', state, 'fails_since'))
      if not since or now - since > c.window then
        redis.call('HSET', state, 'fails', 0, 'fails_since', now)
      end
      local fails = redis.call('HINCRBY', state, 'fails', 1)
      if fails >= c.failures and not redis.call('HGET', state, 'open_until') then
        redis.call('HSET', state, 'open_until', now + c.cooldown)
        event(c.name, 'circuit_opened', now + c.cooldown)
      end
    elseif signal == 'ok' or signal == 'slow' then
      redis.call('HDEL', state, 'fails', 'fails_since')
    end
  end
  if signal == 'slow' or signal == 'slow_error' then
    -- Multiplicative decrease, at most once a second (a burst of 429s is one signal, not twenty).
    local last = tonumber(redis.call('HGET', state, 'slowed_at') or '0')
    if now - last >= 1000 then
      local factor = tonumber(redis.call('HGET', state, 'factor') or '1')
      local lowered = math.max(c.floor, factor * c.slow)
      -- The schedule restarts at the lower rate: reservations made before now are checked again (flow_admit).
      redis.call('HSET', state, 'factor', tostring(lowered), 'factor_at', now, 'slowed_at', now, 'tat', now)
      event(c.name, 'rate_lowered', lowered)
    end
  end
end
return events
