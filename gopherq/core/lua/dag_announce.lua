-- Claim the announcement of flows' state changes: for each flow whose state differs from the last one announced,
-- record it as announced and return it, so that exactly one caller emits each flow event even when several workers
-- settle members of one flow. A flow that has finished leaves the open index for the finished one, and its
-- hash expires with the results (a failed flow a dead-letter requeue revives goes back to the open index).
-- KEYS: 1.. one flow hash per flow id, then the open flows index and the finished flows index (last two)
-- ARGV: 1 now (ms), 2 TTL (s) of a finished flow, then the flow ids (in KEYS order)
-- Returns: a flat list: flow id, its new state, its halt count (fail_fast joins blocked), per change.
local open_index, done_index = KEYS[#KEYS - 1], KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 2 do
  local flow, id = KEYS[i], ARGV[i + 2]
  local fields = redis.call('HMGET', flow, 'state', 'told', 'halt', 'finished')
  local state, told = fields[1], fields[2]
  if state and state ~= told and state ~= 'pending' then
    redis.call('HSET', flow, 'told', state)
    if state == 'running' then
      if told and told ~= 'pending' then  -- revived: open again
        redis.call('PERSIST', flow)
        redis.call('ZREM', done_index, id)
        redis.call('ZADD', open_index, 'NX', ARGV[1], id)
      end
    else
      redis.call('ZREM', open_index, id)
      redis.call('ZADD', done_index, tonumber(fields[4]) or ARGV[1], id)
      redis.call('EXPIRE', flow, ARGV[2])
    end
    out[#out + 1] = id
    out[#out + 1] = state
    out[#out + 1] = tonumber(fields[3]) or 0
  end
end
return out
