-- Move due tasks from the delayed set to the tail of their priority level's ready list, atomically (so two
-- workers running it at once never move a task twice).
-- KEYS: 1 delayed (zset), 2 ready list, 3 high-priority list, 4 low-priority list, 5 whereabouts (hash)
-- ARGV: 1 now (ms), 2 max tasks to move
-- Returns: how many were moved.
local ready, high, low = KEYS[2], KEYS[3], KEYS[4]
--@include levels
--@include whereabouts
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(due))
-- One RPUSH per level, keeping the order of each.
local lists = {}
for i = 1, #due do
  local key = level_key(due[i])
  local fair = fair_push('RPUSH', due[i])  -- [fair keys] a task with a fair key goes to its key's list
  if not fair then
    if not lists[key] then lists[key] = {} end
    local list = lists[key]
    list[#list + 1] = due[i]
  end
  note(task_id(due[i]), 'ready|' .. level_name(key, high, low) .. '|' .. ARGV[1] .. '|promoted' .. fair_where(fair))
end
flush_where(KEYS[5])
for key, list in pairs(lists) do
  wake(key)
  for j = 1, #list, 1000 do
    redis.call('RPUSH', key, unpack(list, j, math.min(j + 999, #list)))
  end
end
return #due
