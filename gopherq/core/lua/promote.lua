-- Move due tasks from the delayed set to the tail of the ready list, atomically (so two workers running it at
-- once never move a task twice).
-- KEYS: 1 delayed (zset), 2 ready list
-- ARGV: 1 now (ms), 2 max tasks to move
-- Returns: how many were moved.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 then return 0 end
redis.call('ZREM', KEYS[1], unpack(due))
redis.call('RPUSH', KEYS[2], unpack(due))
return #due
