-- Shared by the scripts that put a task into a ready list (pulled in by `--@include levels`): a task goes to the
-- list of its own priority level. Only an envelope that mentions "priority" is decoded, so the others pay for one
-- substring search. Expects `ready`, `high` and `low` (the three ready lists' key names) to be set by the script.
local WAKE = 'gopherq:wake'

local function level_key(raw)
  if not string.find(raw, '"priority"', 1, true) then return ready end
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' then
    if obj.priority == 'high' then return high end
    if obj.priority == 'low' then return low end
  end
  return ready
end

-- A worker with nothing to do blocks on the plain list only: a task put in another level's list while the plain
-- list is empty leaves a wake marker there (the claim script drops markers), so the sleeper wakes and claims it.
local function wake(key)
  if key ~= ready and redis.call('LLEN', ready) == 0 then redis.call('RPUSH', ready, WAKE) end
end

-- Put `raw` at the head (LPUSH) or tail (RPUSH) of its level's list.
local function push_level(command, raw)
  local key = level_key(raw)
  wake(key)
  redis.call(command, key, raw)
end
