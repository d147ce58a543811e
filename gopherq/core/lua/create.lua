-- Create tasks idempotently: a task id seen within the window is not enqueued again. The marker and the push
-- are one atomic step, so two producers racing with the same id create it once.
-- KEYS: 1 ready list, 2 delayed (zset), then one seen marker per task (in task order)
-- ARGV: 1 window (s), then 2 per task: envelope, due time (ms; '' = ready now)
-- Returns: per task 1 (created) or 0 (already seen within the window).
local window = ARGV[1]
local out = {}
local ready = {}
for i = 1, #KEYS - 2 do
  local envelope, due = ARGV[2 * i], ARGV[2 * i + 1]
  if redis.call('SET', KEYS[2 + i], '1', 'NX', 'EX', window) then
    if due == '' then
      ready[#ready + 1] = envelope
    else
      redis.call('ZADD', KEYS[2], due, envelope)
    end
    out[i] = 1
  else
    out[i] = 0
  end
end
for j = 1, #ready, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ready, j, math.min(j + 999, #ready)))
end
return out
