-- Claim up to ARGV[1] tasks for one worker, atomically: each gets an attempt token, an in-flight record and a
-- lease. Tasks a blocking fetch already moved into the worker's processing list are claimed first; then the ready
-- lists of the priority levels, in the order ARGV[3] gives (only when a high or low list exists: otherwise just
-- the plain list, as before priorities). Wake markers (see levels.lua) are dropped.
-- Fair keys (fair_claim.lua): within a level, tasks with a fair key are taken by turns among their keys.
-- KEYS: 1 ready list, 2 this worker's processing list, 3 leases (zset), 4 inflight (hash), 5 token counter,
--       6 paused flag, 7 cancel requests (zset), 8 high-priority list, 9 low-priority list, 10 whereabouts (hash)
-- ARGV: 1 max tasks, 2 lease deadline (ms), 3 level order (e.g. 'hdl': h = KEYS[8], d = KEYS[1], l = KEYS[9]),
--       4 this worker's id, 5 now (ms) (for the whereabouts: running|token|since|worker, see whereabouts.lua)
-- Returns: {token1, envelope1, token2, envelope2, ...}, then, when tasks of fair keys with limits were claimed,
-- '!counted' and the list of their tokens (their settles carry the 'fair' item: fair_claim.lua), then, when
-- cancellations are pending, '!cancels' and the list of their task ids (the worker settles those tasks as
-- cancelled instead of running them); or false when the queue is paused (anything staged goes back to the head of
-- the ready list).
if redis.call('EXISTS', KEYS[6]) == 1 then
  while redis.call('LMOVE', KEYS[2], KEYS[1], 'RIGHT', 'LEFT') do end
  return false
end
--@include whereabouts
local LEASES_LAYOUT = 'not a lease: this member, over 64 bytes, keeps the leases a skiplist (see core/keys.py)'
local want = tonumber(ARGV[1])
local items = {}
local wake = 'gopherq:wake'
local TWO_DIGITS = {'00', '01', '02', '03', '04', '05', '06', '07', '08', '09', '10', '11', '12', '13', '14', '15', '16',
  '17', '18', '19', '20', '21', '22', '23', '24', '25', '26', '27', '28', '29', '30', '31', '32', '33', '34', '35', '36',
  '37', '38', '39', '40', '41', '42', '43', '44', '45', '46', '47', '48', '49', '50', '51', '52', '53', '54', '55', '56',
  '57', '58', '59', '60', '61', '62', '63', '64', '65', '66', '67', '68', '69', '70', '71', '72', '73', '74', '75', '76',
  '77', '78', '79', '80', '81', '82', '83', '84', '85', '86', '87', '88', '89', '90', '91', '92', '93', '94', '95', '96',
  '97', '98', '99'}
--@include fair_claim
local function take(key)
  while #items < want do
    local popped = redis.call('LPOP', key, want - #items)
    if not popped then return end
    local dropped, have = false, #items  -- (have: #items, counted as it grows)
    for i = 1, #popped do
      -- [fair keys] a raw push with a fair key joins its key's list (fair_claim.lua). The look for one starts at
      -- the name's `f`, not at its opening quote: a plain find stops at each occurrence of its first character, and
      -- an envelope has a quote every few bytes (fair_sort_in then reads the envelope itself).
      local raw = popped[i]
      if raw ~= wake and not (string.find(raw, 'fair_key"', 1, true) and fair_sort_in(raw)) then
        have = have + 1
        items[have] = raw
      else
        dropped = true
      end
    end
    if not dropped or fair_sorted >= FAIR_SORT_CAP then return end
  end
end
take(KEYS[2])
if #items < want then
  if redis.call('EXISTS', KEYS[8], KEYS[9], unpack(FAIR_ANY)) == 0 then
    take(KEYS[1])
    if fair_sorted > 0 and #items < want then fair_take('d', KEYS[1]) end  -- [fair keys] raw pushes just sorted in
  else
    fair_start()  -- [fair keys]
    local lists = {h = KEYS[8], d = KEYS[1], l = KEYS[9]}
    for c in string.gmatch(ARGV[3], '.') do
      if #items >= want then break end
      if not fair_take(c, lists[c]) then take(lists[c]) end  -- [fair keys]
    end
  end
end
local n = #items
if n == 0 then
  if fair_sorted > 0 then flush_where(KEYS[10]) end  -- [fair keys] raw pushes sorted into their keys' lists
  return {}
end
local last = redis.call('INCRBY', KEYS[5], n)
-- The reply's pairs are the in-flight hash's fields and values as they are: one table serves both.
local out, zargs = {}, {}
local held_since = '|' .. ARGV[5] .. '|' .. ARGV[4]  -- whereabouts: running|<token>|<since>|<worker>
local deadline, w = ARGV[2], #where_args
local match = string.match
-- The tokens are consecutive: each is its hundreds (formatted once per hundred) and two last digits from a table,
-- joined; string.format (or tostring, a %.14g) per token was a sprintf per task. Below 100 (a new queue's first
-- tokens, or a counter set below zero) each is formatted whole.
local hundreds, ones = math.floor((last - n + 1) / 100), (last - n + 1) % 100
local head = hundreds > 0 and string.format('%d', hundreds) or nil
for i = 1, n do
  local token = head and head .. TWO_DIGITS[ones + 1] or string.format('%d', last - n + i)
  ones = ones + 1
  if ones == 100 then
    ones, hundreds = 0, hundreds + 1
    if hundreds > 0 then head = string.format('%d', hundreds) end
  end
  local raw = items[i]
  local id = match(raw, ID_FIRST) or task_id(raw)  -- (task_id's first step inlined: whereabouts.lua)
  if id then  -- (note(), inlined: once per task)
    where_args[w + 1], where_args[w + 2] = id, 'running|' .. token .. held_since
    w = w + 2
  end
  out[2 * i - 1], out[2 * i] = token, raw
  zargs[2 * i - 1], zargs[2 * i] = deadline, token
end
redis.call('HSET', KEYS[4], unpack(out))
-- The leases' first member is one that is no lease (core/keys.py: LEASES_LAYOUT, scored +inf so no reaper ever
-- finds it due): being over 64 bytes, it makes Redis keep the set a skiplist, not a listpack scanned whole by each
-- ZADD and ZREM (a third of Redis's work per task with 100 in flight), and it keeps the key from being emptied.
redis.call('ZADD', KEYS[3], 'inf', LEASES_LAYOUT, unpack(zargs))
flush_where(KEYS[10])
local counted = fair_track(last, n)  -- [fair keys]
if #counted > 0 then
  out[#out + 1] = '!counted'
  out[#out + 1] = counted
end
local cancels = redis.call('ZRANGE', KEYS[7], 0, 999)
if #cancels > 0 then
  out[#out + 1] = '!cancels'
  out[#out + 1] = cancels
end
return out
