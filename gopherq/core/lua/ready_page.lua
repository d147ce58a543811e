-- One page of a queue's ready listing (the inspection layer's, never the delivery path's), in one read-only call.
-- The order: each priority level in turn (high, default, low); within a level its plain list (tasks without a fair
-- key, head first), then its fair keys taking turns (the level's active set: next turn first, equal turns by
-- name), then the keys that are parked (the parked set: soonest looked at again first, those waiting for a running
-- task to end or for a resume last; by name among equals) with tasks at that level; each key's tasks head first.
-- A position is (level 1-3, section 1 plain / 2 turns / 3 parked, score, key, within, skip): the first key at or
-- after (score, key) in its section's order, `within` tasks into it when it is that key, then `skip` tasks more
-- counted across keys (skip is how an offset is reached: whole levels are passed by their counts). Finding a
-- position in a section is a binary search (O(log² K) steps); a call looks at most ARGV[2] keys and returns at
-- most ARGV[1] tasks, whatever the number of keys and tasks.
-- KEYS: 1 the plain (default-level) list, 2 the high list, 3 the low list
-- ARGV: 1 most tasks, 2 most keys to look at, 3 level, 4 section, 5 score, 6 key, 7 within, 8 skip
-- Returns: {{level, section, score, key, within, skip, state}, {plain and keyed tasks of each level, h d l},
--   then six values per task: key ('' in a plain list), envelope, and the task's own position: level, section,
--   score, index (in its key's list, or among its plain list's tasks)}. state: 0 the page is full, 1 nothing
--   follows, 2 it looked at its most keys first (go on from the position).
local ready = KEYS[1]
--@include fair_base
local WAKE = 'gopherq:wake'
local PLAIN = {KEYS[2], KEYS[1], KEYS[3]}
local most, budget = tonumber(ARGV[1]), tonumber(ARGV[2])
local lv, sec, score, key = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local within, skip = tonumber(ARGV[7]), tonumber(ARGV[8])

-- Wake markers are not tasks; one is pushed only into an empty plain list, so they sit near its head (heads.lua).
local markers = {}
if redis.call('LLEN', ready) > 0 then markers = redis.call('LPOS', ready, WAKE, 'COUNT', 0, 'MAXLEN', 1000) end
local plain_n, keyed_n, sizes = {}, {}, {}
for i, letter in ipairs(FAIR_LETTERS) do
  plain_n[i] = redis.call('LLEN', PLAIN[i]) - (i == 2 and #markers or 0)
  keyed_n[i] = math.max(0, tonumber(redis.call('HGET', FAIR_COUNT, letter) or '0') or 0)
  sizes[#sizes + 1] = plain_n[i]
  sizes[#sizes + 1] = keyed_n[i]
end

local out = {}
local taken, looked, state = 0, 0, 1

local function add(k, raw, s, index)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4], out[n + 5], out[n + 6] = k, raw, lv, sec, s, index
  taken = taken + 1
end

-- a < b as a sorted set orders members of equal score (bytewise; Lua's own '<' follows the server's locale).
local function before(a, b)
  if a == b then return false end
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- The rank of the first member of `z` at or after (s, k) in the set's order.
local function rank_from(z, s, k)
  if s == '-inf' then return 0 end
  local lo = redis.call('ZCOUNT', z, '-inf', '(' .. s)
  local hi = redis.call('ZCOUNT', z, '-inf', s)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', z, mid, mid)[1]
    if m and before(m, k) then lo = mid + 1 else hi = mid end
  end
  return lo
end

-- The plain list of the level: true when the page is full.
local function read_plain()
  local n = plain_n[lv]
  if skip >= n then
    skip = skip - n
    return false
  end
  local at = skip
  if lv == 2 then
    for _, p in ipairs(markers) do if p <= at then at = at + 1 end end
  end
  local got = redis.call('LRANGE', PLAIN[lv], at, at + most - taken - 1 + (lv == 2 and #markers or 0))
  local used = 0
  for _, raw in ipairs(got) do
    if taken >= most then break end
    if raw ~= WAKE then
      add('', raw, '-inf', skip + used)
      used = used + 1
    end
  end
  skip = skip + used
  if taken >= most then return true end
  skip = 0
  return false
end

-- The level's keys of section `sec` from the position: true when the page is full or the keys looked at are its
-- most (`state` says which, the position where to go on).
local function read_keys()
  local z = sec == 2 and fair_active(FAIR_LETTERS[lv]) or FAIR_PARKED
  local letter = FAIR_LETTERS[lv]
  local r = rank_from(z, score, key)
  local first = true
  while true do
    local chunk = redis.call('ZRANGE', z, r, r + 99, 'WITHSCORES')
    if #chunk == 0 then return false end
    r = r + #chunk / 2
    for j = 1, #chunk, 2 do
      local k, s = chunk[j], chunk[j + 1]
      local into = (first and k == key) and within or 0
      first = false
      if k ~= '' then  -- '' among a level's turns is its plain list's share: listed above
        if looked >= budget then
          score, key, within, state = s, k, into, 2
          return true
        end
        looked = looked + 1
        local list = fair_list(letter, k)
        local n = redis.call('LLEN', list)
        local start = math.min(into, n)
        if start + skip >= n then
          skip = skip - (n - start)
        else
          start = start + skip
          skip = 0
          local got = redis.call('LRANGE', list, start, start + most - taken - 1)
          for i, raw in ipairs(got) do add(k, raw, s, start + i - 1) end
          if taken >= most then
            score, key, within, state = s, k, start + #got, 0
            return true
          end
        end
      end
    end
  end
end

while lv <= 3 do
  if sec == 1 then
    if skip >= plain_n[lv] + keyed_n[lv] then  -- the whole level lies before the position
      skip = skip - plain_n[lv] - keyed_n[lv]
      lv = lv + 1
    else
      if read_plain() then state = 0; break end
      sec, score, key, within = 2, '-inf', '', 0
      if keyed_n[lv] == 0 and skip == 0 then sec, lv = 1, lv + 1 end  -- no task waits in the level's keys
    end
  else
    if read_keys() then break end
    if sec == 2 then sec = 3 else sec, lv = 1, lv + 1 end
    score, key, within = '-inf', '', 0
  end
end

local reply = {{lv, sec, score, key, within, skip, state}, sizes}
for i = 1, #out do reply[#reply + 1] = out[i] end
return reply
