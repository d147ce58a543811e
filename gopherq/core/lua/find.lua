-- Find one task's envelope by id in a place that is not indexed by id, on the server, so that only the match
-- crosses the network (the inspection layer's task lookup; never part of the delivery path). Read-only.
-- KEYS: 1 the place (a list, a sorted set or a hash)
-- ARGV: 1 mode, 2 a Lua pattern that matches the task's `"id": "<id>"` in an envelope, then per mode:
--   'list'  : 3 most entries read from the head, 4 most entries read from the tail (after the head's)
--   'score' : 3 the score (ms) the task has in the sorted set, 4 most members with that score read
--   'zset'  : 3 most members read (ZSCAN)
--   'hash'  : 3 most fields read (HSCAN)
-- Returns: {envelope, field (hash mode) or ''}; or 0 when a list was read whole and the task is not in it; or false
-- when not found within those bounds.
local key, mode, pattern = KEYS[1], ARGV[1], ARGV[2]
local function match(raw) return string.find(raw, pattern) ~= nil end
if mode == 'list' then
  local length = redis.call('LLEN', key)
  local head, tail = tonumber(ARGV[3]), tonumber(ARGV[4])
  local stop = math.min(length, head)
  for start = 0, stop - 1, 500 do
    local chunk = redis.call('LRANGE', key, start, math.min(start + 499, stop - 1))
    for i = 1, #chunk do if match(chunk[i]) then return {chunk[i], ''} end end
  end
  local first = math.max(stop, length - tail)  -- the tail's window, where the head's did not reach
  for finish = length - 1, first, -500 do
    local chunk = redis.call('LRANGE', key, math.max(first, finish - 499), finish)
    for i = #chunk, 1, -1 do if match(chunk[i]) then return {chunk[i], ''} end end
  end
  if head + tail >= length then return 0 end
elseif mode == 'score' then
  local members = redis.call('ZRANGEBYSCORE', key, ARGV[3], ARGV[3], 'LIMIT', 0, tonumber(ARGV[4]))
  for i = 1, #members do if match(members[i]) then return {members[i], ''} end end
else
  local most, seen, cursor = tonumber(ARGV[3]), 0, '0'
  local command = mode == 'hash' and 'HSCAN' or 'ZSCAN'
  repeat
    local reply = redis.call(command, key, cursor, 'COUNT', 500)
    cursor = reply[1]
    local items = reply[2]
    for i = 1, #items, 2 do
      local value = mode == 'hash' and items[i + 1] or items[i]
      if match(value) then return {value, mode == 'hash' and items[i] or ''} end
    end
    seen = seen + #items / 2
  until cursor == '0' or seen >= most
end
return false
