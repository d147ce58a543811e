-- Enqueue one task that needs more than a push: a unique task (its lock is taken in the same step, so of any
-- number of identical enqueues racing, exactly one gets in) or a task of another priority level (which must wake
-- a worker blocked on the plain list).
-- KEYS: 1 where the task goes (its level's ready list, or the delayed set when ARGV[2] is not ''),
--       2 the plain ready list, 3 the uniqueness lock (only when ARGV[4] is not '')
-- ARGV: 1 envelope, 2 due time (ms) or '', 3 task id, 4 lock TTL (ms) or ''
-- Returns: nil when enqueued; the id of the task that holds the lock when refused as a duplicate.
if ARGV[4] ~= '' then
  if not redis.call('SET', KEYS[3], ARGV[3], 'NX', 'PX', ARGV[4]) then
    return redis.call('GET', KEYS[3])
  end
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
  return nil
end
local ready, high, low = KEYS[2], nil, nil
--@include levels
wake(KEYS[1])
redis.call('RPUSH', KEYS[1], ARGV[1])
return nil
