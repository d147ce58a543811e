-- Admit a batch of claimed tasks through their flow limits (rate, global concurrency, circuit), in one round trip.
-- Runs only for tasks whose executor names a flow key; a task held back is deferred by the worker (no attempt).
-- KEYS: 1 flow index (zset), then per flow key: state (hash), slots (zset: token -> lease deadline ms)
-- ARGV: 1 now (ms), 2 lease deadline (ms), 3 number of flow keys K,
--       then 7 per key: name, rate (per s, 0 = none), burst, concurrency (0 = none), circuit (0 = no breaker),
--                       wait (ms a task waits for a busy slot or probe), ramp (rate fraction regained per s),
--       then 3 per task: key index (1-based), token, reservation (ms it was made, '' for none)
-- A task over the rate reserves the next slot and is deferred to it; it comes back holding the reservation (the
-- time it was made, kept in its envelope) and runs without a second check, unless the rate was lowered after the
-- reservation was made (a slow-down restarts the schedule: reservations made before it, or in its millisecond, are
-- checked again).
-- Returns: {dues, events}: per task a due time (0 = run now), the reservation it holds (0 = none) and what held
--          it back ('rate', 'concurrency' or 'circuit'; '' when it runs now); events are triples {key, name, value}.
local now = tonumber(ARGV[1])
local lease = ARGV[2]
local k = tonumber(ARGV[3])
local cfg = {}
for i = 1, k do
  local b = 4 + (i - 1) * 7
  cfg[i] = {name = ARGV[b], rate = tonumber(ARGV[b + 1]), burst = tonumber(ARGV[b + 2]),
            conc = tonumber(ARGV[b + 3]), circuit = tonumber(ARGV[b + 4]), wait = tonumber(ARGV[b + 5]),
            ramp = tonumber(ARGV[b + 6]), purged = false}
  redis.call('ZADD', KEYS[1], now, ARGV[b])
end
local dues, events = {}, {}
-- Adaptive rate: a lowered rate regains `ramp` of the configured rate per second, whatever the batch holds.
for i = 1, k do
  local c, state = cfg[i], KEYS[2 * i]
  c.factor = 1
  c.slowed_at = 0
  if c.rate > 0 then
    c.slowed_at = tonumber(redis.call('HGET', state, 'slowed_at') or '0')
    local factor = tonumber(redis.call('HGET', state, 'factor') or '1')
    if factor < 1 then
      local since = tonumber(redis.call('HGET', state, 'factor_at') or now)
      local raised = math.min(1, factor + c.ramp * (now - since) / 1000)
      if raised ~= factor then
        redis.call('HSET', state, 'factor', tostring(raised), 'factor_at', now)
        if raised >= 1 then
          events[#events + 1] = c.name
          events[#events + 1] = 'rate_restored'
          events[#events + 1] = tostring(c.rate)
        end
      end
      factor = raised
    end
    c.factor = factor
  end
end
-- Tasks held back without a slot time come back in waves (the n-th of a batch after n / wave waits), not all
-- at once: a backlog of thousands does not cycle through the claim every `wait`.
local function later(c, wave)
  c.held = (c.held or 0) + 1
  return now + c.wait * (1 + math.floor((c.held - 1) / wave))
end
local first = 4 + k * 7
for j = first, #ARGV, 3 do
  local i = tonumber(ARGV[j])
  local c = cfg[i]
  local state, slots = KEYS[2 * i], KEYS[2 * i + 1]
  local token, reserved = ARGV[j + 1], tonumber(ARGV[j + 2])
  local due, kept, why = 0, 0, ''
  if reserved and reserved <= c.slowed_at then reserved = nil end  -- (the same ms: which came first is unknown)
  -- Circuit: open -> wait for the cool-down; half-open -> one probe at a time, the others wait.
  if c.circuit > 0 then
    local open_until = tonumber(redis.call('HGET', state, 'open_until'))
    if open_until then
      if now < open_until then
        due = open_until + (tonumber(token) or 0) % 1000  -- spread over a second, not all at the same instant
        why = 'circuit'
      else
        local probe_until = tonumber(redis.call('HGET', state, 'probe_until'))
        if probe_until and probe_until > now then
          due = later(c, 10)
          why = 'circuit'
        else
          redis.call('HSET', state, 'probe', token, 'probe_until', lease)
          events[#events + 1] = c.name
          events[#events + 1] = 'circuit_half_open'
          events[#events + 1] = token
        end
      end
    end
  end
  if due == 0 and c.conc > 0 then
    if not c.purged then
      redis.call('ZREMRANGEBYSCORE', slots, '-inf', now)
      c.purged = true
    end
    if redis.call('ZCARD', slots) >= c.conc then
      due = later(c, c.conc)
      why = 'concurrency'
      if reserved then kept = reserved end
    end
  end
  if due == 0 and c.rate > 0 and not reserved then
    -- GCRA: tat is the theoretical arrival time of the next request at the current (possibly lowered) rate.
    local interval = 1000 / (c.rate * c.factor)
    local tat = math.max(tonumber(redis.call('HGET', state, 'tat') or now), now)
    local allowed_at = tat - interval * (c.burst - 1)
    redis.call('HSET', state, 'tat', tostring(tat + interval))
    if allowed_at > now then
      -- Over the rate: the slot at allowed_at is reserved for this task, which runs then without a new check.
      due = math.ceil(allowed_at)
      why = 'rate'
      kept = now
    end
  end
  if due == 0 then
    if c.conc > 0 then redis.call('ZADD', slots, lease, token) end
  end
  dues[#dues + 1] = due
  dues[#dues + 1] = kept
  dues[#dues + 1] = why
end
return {dues, events}
