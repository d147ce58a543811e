-- Claim the due slots of one periodic schedule and enqueue their tasks, atomically: the schedule's last slot moves
-- forward only from the value the caller saw (compare-and-set), so of any number of workers ticking at once exactly
-- one enqueues each slot. A schedule whose task is unique enqueues one task at most, and none while the task of an
-- earlier slot still holds the key (the slot is skipped, not postponed). A task with a fair key goes to its key's
-- list, as an enqueued one does (fair_push, fair_base.lua).
-- KEYS: 1 the target queue's schedules hash, 2 the ready list the tasks go to (their priority level's),
--       3 the target queue's plain ready list, 4 the uniqueness lock (only when ARGV[4] is not ''),
--       last: the target queue's whereabouts (hash)
-- ARGV: 1 schedule name, 2 the last slot the caller saw ('' for none yet), 3 the new last slot,
--       4 lock TTL (ms) or '', 5 the task id that takes the lock, 6.. envelopes
-- Returns: {1, how many were enqueued}, or {0, the current last slot} when it was not ARGV[2] (someone else moved
--          it: the caller starts again from there).
local last = redis.call('HGET', KEYS[1], ARGV[1])
if (last or '') ~= ARGV[2] then return {0, last or ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if #ARGV < 6 then return {1, 0} end
if ARGV[4] ~= '' and not redis.call('SET', KEYS[4], ARGV[5], 'NX', 'PX', ARGV[4]) then return {1, 0} end
local ready, high, low = KEYS[3], nil, nil
--@include levels
--@include whereabouts
local level = 'default'  -- the level's list is KEYS[2]; its name ends with the level (see QueueKeys.level)
if KEYS[2] ~= KEYS[3] then level = string.match(KEYS[2], ':ready:(%a+)$') or 'default' end
local since = 'ready|' .. level .. '|' .. ARGV[3] * 1000 .. '|scheduled'  -- ready since its slot's time
local plain = {}  -- the tasks without a fair key, pushed to the level's list in slot order
for i = 6, #ARGV do
  local fair = fair_push('RPUSH', ARGV[i])  -- [fair keys] a task with a fair key goes to its key's list
  if not fair then plain[#plain + 1] = ARGV[i] end
  note(task_id(ARGV[i]), since .. fair_where(fair))
end
if #plain > 0 then
  wake(KEYS[2])
  redis.call('RPUSH', KEYS[2], unpack(plain))
end
flush_where(KEYS[#KEYS])
return {1, #ARGV - 5}
