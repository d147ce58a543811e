-- Cancel a flow, or stop what a failed fail_fast flow has not started. Members waiting for their parents are
-- cancelled here (their stored envelopes dropped); members already ready get a cancel request, the queue's usual
-- cancellation: a worker that claims one records it as cancelled instead of running it, and a worker running one
-- cancels the attempt (core/upkeep.py's cancel watch). Work is O(members): an operator's action, or once per
-- failed flow.
-- KEYS: 1 the flow's hash, 2 the queue's cancel requests (zset)
-- ARGV: 1 now (ms), 2 'cancel' (the flow is cancelled) or 'halt' (only ready members get cancel requests)
-- Returns: the flow's state afterwards, or false when there is no such flow.
local flow = KEYS[1]
local id = redis.call('HGET', flow, 'id')
if not id then return false end
local state = redis.call('HGET', flow, 'state')
if ARGV[2] == 'cancel' then
  if state == 'succeeded' or state == 'cancelled' then return state end
  redis.call('HSET', flow, 'state', 'cancelled', 'finished', ARGV[1])
end
local fields = redis.call('HGETALL', flow)
local requests = {}
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  if string.sub(name, 1, 2) == 'm:' then
    local letter, node = string.sub(value, 1, 1), string.sub(name, 3)
    if letter == 'r' then
      requests[#requests + 1] = ARGV[1]
      requests[#requests + 1] = id .. '.' .. node
    elseif ARGV[2] == 'cancel' and (letter == 'w' or letter == 'b') then
      redis.call('HSET', flow, name, 'c' .. string.sub(value, 2))
      redis.call('HDEL', flow, 'e:' .. node)
      redis.call('HINCRBY', flow, 'open', -1)
    end
  end
end
for j = 1, #requests, 1000 do
  redis.call('ZADD', KEYS[2], unpack(requests, j, math.min(j + 999, #requests)))
end
return redis.call('HGET', flow, 'state')
