-- Enqueue tasks that need more than a push, in one call: unique tasks (each one's lock is taken in the same step
-- as its push, so of any number of identical enqueues racing, exactly one gets in) and tasks of another priority
-- level (which must wake a worker blocked on the plain list).
-- KEYS: 1 the plain ready list, 2 the high-priority list, 3 the low-priority list, 4 the delayed set,
--       5.. the uniqueness locks of the tasks that have one, in task order
-- ARGV: 5 per task: envelope, level ('h', 'd' or 'l'), due time (ms) or '', task id, lock TTL (ms) or '' (a task
--       with a TTL takes the next lock of KEYS)
-- Returns: one value per task: '' when it was enqueued, or the id of the task that holds its lock (a duplicate:
--          nothing was enqueued).
local ready, high, low = KEYS[1], KEYS[2], KEYS[3]
--@include levels
local lists = {h = high, d = ready, l = low}
local out = {}
local lock = 4
for i = 1, #ARGV, 5 do
  local envelope, level, due, id, ttl = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local holder = ''
  if ttl ~= '' then
    lock = lock + 1
    if not redis.call('SET', KEYS[lock], id, 'NX', 'PX', ttl) then holder = redis.call('GET', KEYS[lock]) end
  end
  if holder == '' then
    if due ~= '' then
      redis.call('ZADD', KEYS[4], due, envelope)
    else
      wake(lists[level])
      redis.call('RPUSH', lists[level], envelope)
    end
  end
  out[#out + 1] = holder
end
return out
