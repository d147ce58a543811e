-- Write and push more roots of a flow whose creation sends them in several calls (dag_create.lua wrote everything
-- else, and counts the roots still to come in the flow's `building` field), so that workers start on the first
-- roots while the rest are written. Idempotent: a root already in the flow is skipped, so a creation sent again
-- after a crash or a lost reply resumes where it stopped. A root added to a cancelled flow is recorded cancelled and
-- not pushed; one added while a fail_fast join is blocked (`halt`) is pushed with a cancel request, as dag_cancel.lua
-- gives the ready members of a failed flow.
-- KEYS: 1 the flow's hash, 2 the plain ready list, 3 the high-priority list, 4 the low-priority list, 5 the queue's
--       cancel requests (zset)
-- ARGV: 1 now (ms), 2 flow id, 3 the roots' lines, 4 their envelopes (both as in dag_create.lua), 5 (optional) '1'
--       when none of them has a priority or a fair key (as dag_create.lua's sixth)
-- Returns: how many roots are still to come, or -1 when there is no such flow.
local ready, high, low = KEYS[2], KEYS[3], KEYS[4]
--@include levels
--@include flow_where
local flow = KEYS[1]
local fields = redis.call('HMGET', flow, 'state', 'halt', 'building')
if not fields[1] then return -1 end
local cancelled, halted = fields[1] == 'cancelled', (tonumber(fields[2]) or 0) > 0
local building = tonumber(fields[3]) or 0
local blob, offset, added = ARGV[4], 1, 0
local plain = ARGV[5] == '1'
local prefix = ARGV[2] .. '.'  -- a member's task id is "<flow id>.<node>"
local roots, ids, requests, nr = {}, {}, {}, 0
for node, member, _, size in string.gmatch(ARGV[3], '([^|\n]*)|([^|\n]*)|([^|\n]*)|(%x+)\n') do
  local next_offset = offset + tonumber(size, 16)  -- hex: strtoul, not a strtod per member
  if cancelled then member = 'c' .. string.sub(member, 2) end
  if string.byte(member) ~= 119 and redis.call('HSETNX', flow, 'm:' .. node, member) == 1 then  -- 119: 'w'
    added = added + 1
    if not cancelled then  -- pushed below (its list, or its fair key's; its whereabouts)
      nr = nr + 1
      roots[nr], ids[nr] = string.sub(blob, offset, next_offset - 1), prefix .. node
      if halted then
        requests[#requests + 1] = ARGV[1]
        requests[#requests + 1] = ids[nr]
      end
    end
  end
  offset = next_offset
end
local pushes = flow_gather_all(roots, ids, nr, ARGV[1], plain)
for key, list in pairs(pushes) do
  wake(key)
  for j = 1, #list, 1000 do redis.call('RPUSH', key, unpack(list, j, math.min(j + 999, #list))) end
end
flush_where(FLOW_WHERE)
for j = 1, #requests, 1000 do
  redis.call('ZADD', KEYS[5], unpack(requests, j, math.min(j + 999, #requests)))
end
if cancelled and added > 0 then redis.call('HINCRBY', flow, 'open', -added) end
building = math.max(0, building - added)
if building > 0 then redis.call('HSET', flow, 'building', building) else redis.call('HDEL', flow, 'building') end
return building
