-- Move dead letters back to the tail of the ready list, atomically: an entry that is gone (requeued or purged
-- by someone else meanwhile) is skipped.
-- KEYS: 1 dead (hash), 2 dead index (zset), 3 ready list, 4 high-priority list, 5 low-priority list
-- ARGV: entry id 1, envelope 1, entry id 2, envelope 2, ...
-- Returns: the ids of the entries that were requeued.
local ready, high, low = KEYS[3], KEYS[4], KEYS[5]
--@include levels
local moved = {}
for i = 1, #ARGV, 2 do
  if redis.call('HDEL', KEYS[1], ARGV[i]) == 1 then
    redis.call('ZREM', KEYS[2], ARGV[i])
    push_level('RPUSH', ARGV[i + 1])
    moved[#moved + 1] = ARGV[i]
  end
end
return moved
