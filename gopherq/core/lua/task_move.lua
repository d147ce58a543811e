-- An operator's action on one waiting task, given its exact stored bytes: 'run' moves it to the head of its
-- priority level's ready list (from the delayed set, stamped ready now; a ready task keeps its bytes), 'delete'
-- removes it and records it as cancelled (its uniqueness lock goes with it). Whoever removes the bytes owns the
-- task, so a promote or claim racing with this cannot also hand it to a worker.
-- KEYS: 1 where it is (the delayed set or a ready list), 2 stats (hash), 3 its result key, 4 the plain ready list,
--       5 the high-priority list, 6 the low-priority list, 7 the whereabouts (hash), 8 its uniqueness lock (only
--       when it has one)
-- Its whereabouts follow it: ready at its level since now ('run_now'), or gone with the deleted task.
-- ARGV: 1 action ('run' or 'delete'), 2 where ('zset' or 'list'), 3 the envelope, 4 now (ms),
--       5 result record JSON (delete), 6 result TTL (s), 7 task id
-- Returns: 1 when done here, 0 when the envelope was no longer there.
local ready, high, low = KEYS[4], KEYS[5], KEYS[6]
--@include levels
--@include whereabouts
local removed
if ARGV[2] == 'zset' then
  removed = redis.call('ZREM', KEYS[1], ARGV[3])
else
  removed = redis.call('LREM', KEYS[1], 1, ARGV[3])
end
if removed == 0 then return 0 end
if ARGV[1] == 'run' then
  local raw = ARGV[3]
  if ARGV[2] == 'zset' then raw = restamp(raw, tonumber(ARGV[4]), false) end
  local key = level_key(raw)
  local fair = push_level('LPUSH', raw)
  note(ARGV[7], 'ready|' .. level_name(key, high, low) .. '|' .. ARGV[4] .. '|run_now' .. fair_where(fair))
  flush_where(KEYS[7])
  redis.call('HINCRBY', KEYS[2], 'run_now', 1)
else
  redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
  redis.call('HINCRBY', KEYS[2], 'deleted', 1)
  redis.call('HDEL', KEYS[7], ARGV[7])
  if KEYS[8] and redis.call('GET', KEYS[8]) == ARGV[7] then redis.call('DEL', KEYS[8]) end
end
return 1
