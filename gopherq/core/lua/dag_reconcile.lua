-- Reconcile one flow: recompute its counters (open members, failures, halts, and each join's pending, ok and bad
-- parents) from its members' states, repair any that differ, then judge every waiting or blocked join again (a
-- join whose parents are all final is made ready, as its last parent's settle would have). With a member outcome
-- ('s', 'f' or 'c') for a node whose task record says it is final while the flow still has it ready (e.g. it was
-- cancelled while waiting for a retry), that outcome is recorded first, as its settle would have.
-- KEYS: 1 the flow's hash, 2 the plain ready list, 3 the high-priority list, 4 the low-priority list
-- ARGV: 1 now (ms), then pairs: node, outcome
-- Returns: {mismatches repaired, the flow's state, late outcomes recorded} or false when there is no such flow. (An
-- outcome whose member is no longer ready, because its own settle recorded it meanwhile, is no mismatch.)
local ready, high, low = KEYS[2], KEYS[3], KEYS[4]
--@include levels
--@include dag_step
local flow = KEYS[1]
if redis.call('EXISTS', flow) == 0 then return false end
if redis.call('HEXISTS', flow, 'building') == 1 then  -- roots still to come: its members do not say its counts
  return {0, redis.call('HGET', flow, 'state'), 0}
end
local late = 0
for i = 2, #ARGV - 1, 2 do
  if dag_step(flow, ARGV[i], ARGV[i + 1]) then late = late + 1 end
end
if late > 0 then dag_state(flow, true) end
dag_flush()  -- the outcomes recorded: the recount below reads the hash itself
local fields = redis.call('HGETALL', flow)
local members, specs = {}, {}
for i = 1, #fields, 2 do
  local name, value = fields[i], fields[i + 1]
  local prefix = string.sub(name, 1, 2)
  if prefix == 'm:' then members[string.sub(name, 3)] = value
  elseif prefix == 'j:' then specs[string.sub(name, 3)] = value end
end
local counts = {}  -- join -> {pending, ok, bad}
for node in pairs(specs) do counts[node] = {0, 0, 0} end
local open, fatal, halt = 0, 0, 0
for node, value in pairs(members) do
  local letter, children = string.sub(value, 1, 1), string.sub(value, 2)
  if letter == 'w' or letter == 'r' or letter == 'b' then open = open + 1 end
  if letter == 'b' then
    fatal = fatal + 1
    if string.sub(specs[node] or '', 1, 1) == 'F' then halt = halt + 1 end
  end
  if children == '' and (letter == 'f' or letter == 'c') then fatal = fatal + 1 end
  for child in string.gmatch(children, '[^,]+') do
    local c = counts[child]
    if c then
      if letter == 's' then c[2] = c[2] + 1
      elseif letter == 'f' or letter == 'c' then c[3] = c[3] + 1
      else c[1] = c[1] + 1 end
    end
  end
end
local mismatches = 0
local stored = redis.call('HMGET', flow, 'open', 'fatal', 'halt')
for j, value in ipairs({open, fatal, halt}) do
  if tonumber(stored[j]) ~= value then mismatches = mismatches + 1 end
end
redis.call('HSET', flow, 'open', open, 'fatal', fatal, 'halt', halt)
for node, spec in pairs(specs) do
  local head = string.match(spec, '^(%a%d+):')
  local c = counts[node]
  local fixed = head .. ':' .. c[1] .. ':' .. c[2] .. ':' .. c[3]
  if fixed ~= spec then
    mismatches = mismatches + 1
    redis.call('HSET', flow, 'j:' .. node, fixed)
  end
end
if redis.call('HGET', flow, 'state') ~= 'cancelled' then
  for node in pairs(specs) do
    local letter = string.sub(members[node] or '', 1, 1)
    if letter == 'w' or letter == 'b' then dag_judge(flow, node, nil) end
  end
end
local state = dag_state(flow, false)
dag_flush()
return {mismatches + late, state, late}
