-- Add children to an open join of a running flow (a dynamic fan-out): each new member is ready at once and is one
-- more parent of the join, which waits until it is sealed (dag_seal.lua) and its parents are final. Idempotent per
-- node: a node the flow already has is skipped.
-- KEYS: 1 the flow's hash, 2 the plain ready list, 3 the high-priority list, 4 the low-priority list
-- ARGV: 1 now (ms), 2 the join's node, then pairs: node, envelope
-- Returns: the number of members added, or an error reply naming why none could be.
local ready, high, low = KEYS[2], KEYS[3], KEYS[4]
--@include levels
--@include flow_where
local flow, join = KEYS[1], ARGV[2]
local fields = redis.call('HMGET', flow, 'state', 'm:' .. join, 'j:' .. join, 'o:' .. join)
if not fields[1] then return redis.error_reply('no such flow') end
if fields[1] == 'cancelled' then return redis.error_reply('the flow is cancelled') end
if not fields[4] or not fields[2] or not fields[3] then return redis.error_reply('not an open join: ' .. join) end
local added, listed = 0, {}
for i = 3, #ARGV - 1, 2 do
  local node = ARGV[i]
  if redis.call('HSETNX', flow, 'm:' .. node, 'r' .. join) == 1 then
    flow_push('RPUSH', restamp(ARGV[i + 1], tonumber(ARGV[1]), false), ARGV[1])
    added = added + 1
    listed[#listed + 1] = node
  end
end
if added > 0 then
  local head, pending, ok, bad = string.match(fields[3], '^(%a%d+):(%-?%d+):(%d+):(%d+)$')
  redis.call('HSET', flow, 'j:' .. join, head .. ':' .. (tonumber(pending) + added) .. ':' .. ok .. ':' .. bad)
  redis.call('HINCRBY', flow, 'open', added)
  redis.call('HINCRBY', flow, 'size', added)
  local before = redis.call('HGET', flow, 'p:' .. join)
  local joined = table.concat(listed, ',')
  redis.call('HSET', flow, 'p:' .. join, before and (before .. ',' .. joined) or joined)
end
return added
