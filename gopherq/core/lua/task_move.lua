-- An operator's action on one waiting task, given its exact stored bytes: 'run' moves it to the head of its
-- priority level's ready list, or of its fair key's list of that level (from the delayed set, stamped ready now;
-- a ready task keeps its bytes), 'delete' removes it and records it as cancelled (its uniqueness lock goes with
-- it). Whoever removes the bytes owns the task, so a promote or claim racing with this cannot also hand it to a
-- worker. A task taken from its fair key's list keeps the key's bookkeeping right: run now leaves the key's turn
-- and counts as they were (the same task waits in the same list); delete is fair_removed (fair_remove.lua).
-- KEYS: 1 where it is (the delayed set, a ready list or a fair key's list), 2 stats (hash), 3 its result key,
--       4 the plain ready list, 5 the high-priority list, 6 the low-priority list, 7 the whereabouts (hash),
--       8 its uniqueness lock (only when it has one)
-- Its whereabouts follow it: ready at its level (in its fair key's list: the record names the key) since now
-- ('run_now'), or gone with the deleted task.
-- ARGV: 1 action ('run' or 'delete'), 2 where ('zset' or 'list'), 3 the envelope, 4 now (ms),
--       5 result record JSON (delete), 6 result TTL (s), 7 task id
-- Returns: 1 when done here, 0 when the envelope was no longer there.
-- A fair key resting until a given time rests for the task at the head of its list (an ordered key's retry waits
-- there until it is due; a key over its rate waits to be allowed): running that task now or deleting it makes the
-- key wait no longer, and the claim checks its limits again (parking it again if it must still wait).
local ready, high, low = KEYS[4], KEYS[5], KEYS[6]
--@include levels
--@include fair_remove
--@include whereabouts
local removed, head = nil, false
if ARGV[2] == 'zset' then
  removed = redis.call('ZREM', KEYS[1], ARGV[3])
else
  head = redis.call('LINDEX', KEYS[1], 0) == ARGV[3]
  removed = redis.call('LREM', KEYS[1], 1, ARGV[3])
end
if removed == 0 then return 0 end
local in_key, letter = nil, nil  -- [fair keys] the fair key whose own list it was taken from, and its level
if ARGV[2] == 'list' then
  in_key, letter = fair_key_of(ARGV[3])
  if in_key and KEYS[1] ~= fair_list(letter, in_key) then in_key = nil end
end
local function end_heads_wait()  -- see above
  if not (in_key and head) then return end
  local parked = redis.call('ZSCORE', FAIR_PARKED, in_key)
  if parked and parked ~= 'inf' then
    fair_unpark(in_key)
    fair_wake()
  end
end
if ARGV[1] == 'run' then
  local raw = ARGV[3]
  if ARGV[2] == 'zset' then raw = restamp(raw, tonumber(ARGV[4]), false) end
  local key = level_key(raw)
  local fair = in_key
  if in_key then
    redis.call('LPUSH', KEYS[1], raw)  -- the head of its key's list: the key's turn and counts stay as they were
    end_heads_wait()
  else
    fair = push_level('LPUSH', raw)
  end
  note(ARGV[7], 'ready|' .. level_name(key, high, low) .. '|' .. ARGV[4] .. '|run_now' .. fair_where(fair))
  flush_where(KEYS[7])
  redis.call('HINCRBY', KEYS[2], 'run_now', 1)
else
  if in_key then
    fair_removed(in_key, letter)
    end_heads_wait()
  end
  redis.call('SET', KEYS[3], ARGV[5], 'EX', tonumber(ARGV[6]))
  redis.call('HINCRBY', KEYS[2], 'deleted', 1)
  redis.call('HDEL', KEYS[7], ARGV[7])
  if KEYS[8] and redis.call('GET', KEYS[8]) == ARGV[7] then redis.call('DEL', KEYS[8]) end
end
return 1
