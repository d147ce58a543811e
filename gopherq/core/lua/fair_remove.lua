-- Fair keys, a task taken out of its key's list by something other than a claim (pulled in by
-- `--@include fair_remove` after fair_base; used by task_move.lua, an operator's delete). The level's count of
-- keyed tasks and the key's backlog entry (if it has one) drop by one, and a key whose list of that level is now
-- empty leaves the level's turns as the claim would have it leave them (the active set, and its virtual time with
-- its last key); with nothing waiting at any level it leaves the parked set too, so an idle key costs nothing. Its
-- running set and rate state are left to drain as a claim or settle leaves them. A key parked and emptied this way
-- is a new key to its next task: that task's claim checks the key's limits again and parks it if it must still
-- wait.
local function fair_removed(k, letter)
  if redis.call('HINCRBY', FAIR_COUNT, letter, -1) <= 0 then redis.call('HDEL', FAIR_COUNT, letter) end
  local entry = redis.call('ZSCORE', FAIR_BACKLOG, k)  -- (a key with fewer than FAIR_TOP waiting has none)
  if entry then
    if tonumber(entry) - 1 < FAIR_TOP then
      redis.call('ZREM', FAIR_BACKLOG, k)
    else
      redis.call('ZINCRBY', FAIR_BACKLOG, -1, k)
    end
  end
  if redis.call('EXISTS', fair_list(letter, k)) == 1 then return end
  local active = fair_active(letter)
  redis.call('ZREM', active, k)
  local left = redis.call('ZCARD', active)
  if left == 0 or (left == 1 and redis.call('ZSCORE', active, '')) then
    redis.call('DEL', active, fair_vt(letter))  -- only the keyless share is left: the claim takes the plain list
  end
  for _, other in ipairs(FAIR_LETTERS) do
    if redis.call('EXISTS', fair_list(other, k)) == 1 then return end
  end
  redis.call('ZREM', FAIR_PARKED, k)
end
