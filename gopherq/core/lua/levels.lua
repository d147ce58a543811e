-- Shared by the scripts that put a task into a ready list (pulled in by `--@include levels`): a task goes to the
-- list of its own priority level. Only an envelope that mentions "priority" is decoded, so the others pay for one
-- substring search. Expects `ready`, `high` and `low` (the three ready lists' key names) to be set by the script.
local WAKE = 'gopherq:wake'
--@include fair_base

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

-- Put `raw` at the head (LPUSH) or tail (RPUSH) of its level's list (of its fair key's list: fair_base.lua).
-- Returns the fair key it went to (see fair_where), or nil.
local function push_level(command, raw)
  local k = fair_push(command, raw)
  if k then return k end  -- [fair keys] a task with a fair key goes to its key's list
  local key = level_key(raw)
  wake(key)
  redis.call(command, key, raw)
  return nil
end

-- GoPherQ keeps two fields last in an envelope, in this order: "ready_at" (when the task last became ready, Unix
-- seconds) and "recoveries" (see Task.to_wire). `restamp` sets "ready_at" to `now_ms` and, with `recovered`, raises
-- "recoveries" by one, by rewriting that tail in place: re-encoding would change the bytes and turn empty arrays
-- into objects. A value that is not a JSON object is returned unchanged (the worker dead-letters it when it parses
-- it). Used by the reaper (reap.lua), never per task of a claim or settle batch.
local function restamp(raw, now_ms, recovered)
  local body, count = string.match(raw, '^(%s*{.*),"recoveries":(%d+)}%s*$')
  if not body then
    body = string.match(raw, '^(%s*{.*)}%s*$')
    if not body then return raw end
  end
  body = string.match(body, '^(.*),"ready_at":[%d.]+$') or string.match(body, '^(%s*{%s*)"ready_at":[%d.]+$') or body
  local tail = '"ready_at":' .. string.format('%.3f', now_ms / 1000)
  count = tonumber(count or 0) + (recovered and 1 or 0)
  if count > 0 then tail = tail .. ',"recoveries":' .. count end
  if string.match(body, '^%s*{%s*$') then return body .. tail .. '}' end
  return body .. ',' .. tail .. '}'
end
