-- Cancel a delayed task (a retry waiting for its turn, or a task enqueued with a delay): remove its envelope from
-- the delayed set and record it as cancelled, atomically. Whoever removes the envelope owns the task, so a promote
-- racing with this cannot also hand it to a worker.
-- KEYS: 1 delayed (zset), 2 cancel requests (zset), 3 stats (hash), 4 the task's result key,
--       5 its uniqueness lock (only when the task has one), last: the whereabouts (hash)
-- ARGV: 1 envelope, 2 result record JSON, 3 result TTL (s), 4 task id
-- Returns: 1 when cancelled here, 0 when the envelope was no longer there.
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('SET', KEYS[4], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('ZREM', KEYS[2], ARGV[4])
redis.call('HINCRBY', KEYS[3], 'cancelled', 1)
if #KEYS == 6 and redis.call('GET', KEYS[5]) == ARGV[4] then redis.call('DEL', KEYS[5]) end
redis.call('HDEL', KEYS[#KEYS], ARGV[4])  -- settled: its result record says where it ended
return 1
