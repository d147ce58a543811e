-- Claim the due slots of one periodic schedule and enqueue their tasks, atomically: the schedule's last slot moves
-- forward only from the value the caller saw (compare-and-set), so of any number of workers ticking at once exactly
-- one enqueues each slot.
-- KEYS: 1 the target queue's schedules hash, 2 the ready list the tasks go to (their priority level's),
--       3 the target queue's plain ready list
-- ARGV: 1 schedule name, 2 the last slot the caller saw ('' for none yet), 3 the new last slot, 4.. envelopes
-- Returns: {1, how many were enqueued}, or {0, the current last slot} when it was not ARGV[2] (someone else moved
--          it: the caller starts again from there).
local last = redis.call('HGET', KEYS[1], ARGV[1])
if (last or '') ~= ARGV[2] then return {0, last or ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if #ARGV > 3 then
  local ready, high, low = KEYS[3], nil, nil
  --@include levels
  wake(KEYS[2])
  redis.call('RPUSH', KEYS[2], unpack(ARGV, 4))
end
return {1, #ARGV - 3}
