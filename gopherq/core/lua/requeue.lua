-- Move dead letters back to the tail of the ready list, atomically: an entry that is gone (requeued or purged
-- by someone else meanwhile) is skipped.
-- KEYS: 1 dead (hash), 2 dead index (zset), 3 ready list, 4 high-priority list, 5 low-priority list,
--       6 whereabouts (hash)
-- ARGV: entry id 1, envelope 1, entry id 2, envelope 2, ..., then now (ms), for the tasks' whereabouts
-- Returns: the ids of the entries that were requeued.
local ready, high, low = KEYS[3], KEYS[4], KEYS[5]
--@include levels
--@include whereabouts
local since = '|' .. ARGV[#ARGV] .. '|requeued'
local moved = {}
for i = 1, #ARGV - 1, 2 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    local fair = push_level('RPUSH', ARGV[i + 1])
    note(task_id(ARGV[i + 1]), 'ready|' .. level_name(level_key(ARGV[i + 1]), high, low) .. since .. fair_where(fair))
    moved[#moved + 1] = ARGV[i]
  end
end
flush_where(KEYS[6])
return moved
