-- Replace the in-flight envelopes of claimed tasks (used when the worker assigned an id to a task pushed
-- without one, so that a recovery keeps that id and its Idempotency-Key). A stale token is skipped.
-- KEYS: 1 inflight (hash)
-- ARGV: token1, envelope1, token2, envelope2, ...
local done = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
    done = done + 1
  end
end
return done
