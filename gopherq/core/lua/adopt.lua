-- Replace the in-flight envelopes of claimed tasks (used when the worker assigned an id to a task pushed
-- without one, so that a recovery keeps that id and its Idempotency-Key). A stale token is skipped.
-- KEYS: 1 inflight (hash), 2 whereabouts (hash)
-- ARGV: token1, envelope1, token2, envelope2, ..., then the worker's id and now (ms), for the tasks' whereabouts
--@include whereabouts
local done = 0
local held_since = '|' .. ARGV[#ARGV] .. '|' .. ARGV[#ARGV - 1]
for i = 1, #ARGV - 2, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    note(task_id(ARGV[i + 1]), 'running|' .. ARGV[i] .. held_since)
    done = done + 1
  end
end
flush_where(KEYS[2])
return done
