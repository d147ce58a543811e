-- Replace the in-flight envelopes of claimed tasks (used when the worker assigned an id to a task pushed
-- without one, so that a recovery keeps that id and its Idempotency-Key). A stale token is skipped.
-- KEYS: 1 inflight (hash), 2 whereabouts (hash)
-- ARGV: token1, envelope1, token2, envelope2, ..., then the worker's id (the tasks' whereabouts name it)
--@include whereabouts
local done = 0
local held_since = '|' .. time_ms() .. '|' .. ARGV[#ARGV]
for i = 1, #ARGV - 1, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    note(task_id(ARGV[i + 1]), 'running|' .. ARGV[i] .. held_since)
    done = done + 1
  end
end
flush_where(KEYS[2])
return done
