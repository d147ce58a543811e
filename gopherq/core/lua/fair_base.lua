-- Fair keys, shared (pulled in by `--@include fair_base`; expects `ready`, the queue's plain ready list, to be set).
-- A task whose envelope names a `fair_key` K waits in its key's own list of its priority level; the keys of a level
-- that have waiting tasks are the members of that level's active set (a sorted set scored by virtual time: the
-- claim takes the lowest, see fair_claim.lua). A key that may not run now (paused, at its concurrency limit, an
-- ordered key with a task in flight, over its rate, an ordered key waiting for a retry) is parked instead: out of
-- the active sets, in the parked set scored by when to look again (ms; +inf: when one of its tasks ends).
-- Every key below is of the queue's hash tag, so in Redis Cluster they all live in the queue's slot; the key's
-- name is part of their names, which is why they are built here rather than passed in KEYS (the claim does not
-- know which keys it will pick before it picks them). A key with nothing waiting, running or configured leaves
-- nothing behind: each list, set and counter here disappears with its last member or expires.
local FAIR = 'gopherq:{' .. ready .. '}:fair:'
local FAIR_PARKED = FAIR .. 'parked'  -- zset: key -> when to look at it again (ms, or +inf)
local FAIR_CONF = FAIR .. 'keys'      -- hash: key -> spec set at run time (gopherq keys set / pause)
local FAIR_RULES = FAIR .. 'rules'    -- list: "<Lua pattern>\n<spec>" from the workers' settings, first match wins
local FAIR_COUNT = FAIR .. 'count'    -- hash: level letter -> tasks waiting in its keys' lists (for the counts)
-- zset: key -> tasks waiting in its lists, all levels, for the keys with at least FAIR_TOP waiting (exact: a key
-- has an entry if and only if it has that many), so the inspection reads the most backlogged keys in order
-- (core/inspect/fair_keys.py) instead of every key's lists, and takes the keys with fewer from the turns. A key of
-- a few tasks (most keys, when there are many) costs the set nothing: no entry made at its pushes nor removed when
-- its last task goes, in a set as big as the number of keys (a skiplist whose every step misses the caches).
-- Written at a push (fair_entry), per claim turn when keyed tasks wait at more than one level (ZINCRBY; else the
-- claim writes each key's list length, once per pass: fair_claim.lua); an entry goes when its key falls below.
local FAIR_BACKLOG = FAIR .. 'backlog'
local FAIR_TOP = 4          -- fewest waiting tasks of a key with a backlog entry (core/fair.py: BACKLOG_LISTED)
local FAIR_BELOW_TOP = '(4' -- the entries below it (a ZREMRANGEBYSCORE bound)
local FAIR_LETTERS = {'h', 'd', 'l'}

local function fair_list(letter, k) return FAIR .. letter .. ':q:' .. k end  -- list: the key's waiting tasks
local function fair_active(letter) return FAIR .. letter end                -- zset: key -> virtual time
local function fair_vt(letter) return FAIR .. letter .. ':vt' end           -- string: the level's virtual time
local function fair_run(k) return FAIR .. 'run:' .. k end                    -- zset: token -> claimed at (ms)
local function fair_tat(k) return FAIR .. 'tat:' .. k end                    -- string: GCRA arrival time (ms)

-- A key's settings, from its run-time spec or else the first rule that matches it. A spec is
-- "weight,concurrency,rate,burst,ordered,paused" (empty: the default). '' is the keyless tasks' share.
local fair_rules = nil
local fair_conf = nil  -- whether any key has run-time settings (asked once per script run)
local fair_cfgs = {}
-- What applies to a key nothing names (no run-time settings, no rule): shared, not made per key.
local FAIR_PLAIN = {weight = 1, conc = 0, rate = 0, burst = 1, ordered = false, paused = false}
local function fair_cfg(k)
  local c = fair_cfgs[k]
  if c then return c end
  if fair_conf == nil then fair_conf = redis.call('EXISTS', FAIR_CONF) == 1 end
  local spec = fair_conf and redis.call('HGET', FAIR_CONF, k)
  if not spec then
    fair_rules = fair_rules or redis.call('LRANGE', FAIR_RULES, 0, -1)
    if #fair_rules == 0 then return FAIR_PLAIN end
    for i = 1, #fair_rules do
      local pattern, rule = string.match(fair_rules[i], '^(.-)\n(.*)$')
      if pattern and string.find(k, pattern) then spec = rule; break end
    end
  end
  local w, conc, rate, burst, ordered, paused =
    string.match(spec or '', '^([^,]*),([^,]*),([^,]*),([^,]*),([^,]*),([^,]*)$')
  c = {weight = tonumber(w) or 1, conc = tonumber(conc) or 0, rate = tonumber(rate) or 0,
       burst = tonumber(burst) or 1, ordered = ordered == '1', paused = paused == '1'}
  if c.weight <= 0 then c.weight = 1 end
  if c.burst < 1 then c.burst = 1 end
  if k == '' then c.conc, c.rate, c.ordered, c.paused = 0, 0, false, false end
  fair_cfgs[k] = c
  return c
end

-- Whether every key has FAIR_PLAIN's settings (none set at run time, no rules): then a claim's turns need not
-- ask fair_cfg key by key. Both keys are asked about in one step first (the usual answer: neither is there).
local function fair_all_plain()
  if fair_conf == nil and fair_rules == nil and redis.call('EXISTS', FAIR_CONF, FAIR_RULES) == 0 then
    fair_conf, fair_rules = false, {}
    return true
  end
  if fair_conf == nil then fair_conf = redis.call('EXISTS', FAIR_CONF) == 1 end
  if fair_conf then return false end
  fair_rules = fair_rules or redis.call('LRANGE', FAIR_RULES, 0, -1)
  return #fair_rules == 0
end

-- Put `k` in the active set of each level where it has waiting tasks, at that level's virtual time (a key that
-- becomes busy starts level with the others: it gets no credit for having been idle).
local function fair_activate(k)
  for _, letter in ipairs(FAIR_LETTERS) do
    if redis.call('EXISTS', fair_list(letter, k)) == 1 then
      redis.call('ZADD', fair_active(letter), 'NX', redis.call('GET', fair_vt(letter)) or '0', k)
    end
  end
end

local function fair_park(k, until_ms)
  for _, letter in ipairs(FAIR_LETTERS) do
    local active = fair_active(letter)
    if redis.call('ZREM', active, k) == 1 and redis.call('EXISTS', active) == 0 then
      redis.call('DEL', fair_vt(letter))
    end
  end
  redis.call('ZADD', FAIR_PARKED, until_ms, k)
end

local function fair_unpark(k)
  redis.call('ZREM', FAIR_PARKED, k)
  fair_activate(k)
end

-- Workers with nothing to do block on the plain list: a marker there wakes one (the claim drops markers).
local function fair_wake()
  if redis.call('LLEN', ready) == 0 then redis.call('RPUSH', ready, 'gopherq:wake') end
end

-- The fair key and level letter of an envelope, or nil (no key, or not one a producer could have sent: the
-- worker dead-letters such a task when it reads it from the plain list).
local function fair_key_of(raw)
  if not string.find(raw, '"fair_key"', 1, true) then return nil end
  local ok, obj = pcall(cjson.decode, raw)
  if not ok or type(obj) ~= 'table' then return nil end
  local k = obj.fair_key
  if type(k) ~= 'string' or k == '' or #k > 800 then return nil end
  if obj.priority == 'high' then return k, 'h' end
  if obj.priority == 'low' then return k, 'l' end
  return k, 'd'
end

-- The levels that may hold keyed tasks (letter -> true): the level counts as read once per script call, and every
-- level pushed to since (a level emptied since stays in: its lists are then read for nothing, never missed).
local fair_busy = nil

-- Key `k`'s backlog entry after a push made its list at level `letter` `n` long: its tasks waiting at every level,
-- written (exact, whatever was there) when there are FAIR_TOP or more; with fewer there was none before either.
-- The other levels' lists are read only when keyed tasks may wait there (fair_busy).
local function fair_entry(k, letter, n)
  if not fair_busy then
    fair_busy = {}
    local counts = redis.call('HMGET', FAIR_COUNT, 'h', 'd', 'l')
    for i = 1, 3 do
      if (tonumber(counts[i]) or 0) > 0 then fair_busy[FAIR_LETTERS[i]] = true end
    end
  end
  fair_busy[letter] = true
  local total = n
  for i = 1, 3 do
    local other = FAIR_LETTERS[i]
    if other ~= letter and fair_busy[other] then total = total + redis.call('LLEN', fair_list(other, k)) end
  end
  if total >= FAIR_TOP then redis.call('ZADD', FAIR_BACKLOG, string.format('%d', total), k) end
end

-- Put a task with a fair key into its key's list (LPUSH: at the head, a task coming back; RPUSH: at the tail) and
-- make the key active unless it is parked. A task coming back (a recovery, a release) also ends a wait for one of
-- the key's tasks to end. Returns the fair key and its level letter, or false, doing nothing, for a task without a
-- fair key.
local function fair_push(command, raw)
  local k, letter = fair_key_of(raw)
  if not k then return false end
  local n = redis.call(command, fair_list(letter, k), raw)
  redis.call('HINCRBY', FAIR_COUNT, letter, 1)
  fair_entry(k, letter, n)
  local parked = redis.call('ZSCORE', FAIR_PARKED, k)
  if not parked then
    redis.call('ZADD', fair_active(letter), 'NX', redis.call('GET', fair_vt(letter)) or '0', k)
  elseif command == 'LPUSH' and parked == 'inf' then
    fair_unpark(k)
  end
  fair_wake()
  return k, letter
end

-- The tail of a ready task's whereabouts record (whereabouts.lua) given what fair_push returned: '|<key>' for a
-- task waiting in its key's list, so that a lookup reads that list; '' (the record as before) for any other.
local function fair_where(k)
  if k then return '|' .. k end
  return ''
end

-- After a task of key `k` was settled (`kind`, with the new envelope `data` due at `due` ms for a retry or a
-- deferral): its place among the key's running tasks is freed. The retry of an ordered key does not wait in the
-- delayed set, where later tasks of the key would overtake it: it goes back to the head of its key's list and the
-- key rests until it is due; its whereabouts (hash `where`, written by the settle's 'where' item before this) then
-- say ready in its key's list since now (`now_ms`), 'retrying' or 'deferred'. A key parked until one of its tasks
-- ends is looked at again.
local FAIR_LEVEL_NAMES = {h = 'high', d = 'default', l = 'low'}
local function fair_settled(k, token, kind, data, due, delayed, where, now_ms)
  -- Only a counted key (a limit on running tasks, or ordered) has its running tokens recorded.
  if redis.call('ZREM', fair_run(k), token) == 0 then return end
  if (kind == 'retry' or kind == 'defer') and fair_cfg(k).ordered and redis.call('ZREM', delayed, data) == 1 then
    fair_park(k, due)
    fair_push('LPUSH', data)
    local id = string.match(data, '^{"id":"([^"\\]*)"')  -- GoPherQ writes the retry's envelope, "id" first
    local _, letter = fair_key_of(data)
    if id and letter then
      local how = kind == 'retry' and 'retrying' or 'deferred'
      redis.call('HSET', where, id, 'ready|' .. FAIR_LEVEL_NAMES[letter] .. '|' .. now_ms .. '|' .. how .. '|' .. k)
    end
  elseif redis.call('ZSCORE', FAIR_PARKED, k) == 'inf' then
    fair_unpark(k)
    fair_wake()
  end
end
