-- Create tasks idempotently: a task id seen within the window is not enqueued again. The marker and the push
-- are one atomic step, so two producers racing with the same id create it once. A task whose id the server
-- assigned (the producer sent none) cannot be sent again by its producer: it gets no marker.
-- KEYS: 1 ready list, 2 delayed (zset), then one seen marker per task that has one (in task order)
-- ARGV: 1 window (s), then 3 per task: envelope, due time (ms; '' = ready now), '1' when it has a marker
-- Returns: per task 1 (created) or 0 (already seen within the window).
local window = ARGV[1]
local out = {}
local ready = {}
local marker = 2
for i = 2, #ARGV, 3 do
  local envelope, due = ARGV[i], ARGV[i + 1]
  local fresh = true
  if ARGV[i + 2] == '1' then
    marker = marker + 1
    fresh = redis.call('SET', KEYS[marker], '1', 'NX', 'EX', window)
  end
  if fresh then
    if due == '' then
      ready[#ready + 1] = envelope
    else
      redis.call('ZADD', KEYS[2], due, envelope)
    end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for j = 1, #ready, 1000 do
  redis.call('RPUSH', KEYS[1], unpack(ready, j, math.min(j + 999, #ready)))
end
return out
