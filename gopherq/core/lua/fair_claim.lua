-- Fair keys, the claim's side (pulled in by claim.lua; see fair_base.lua for the keys). Within a priority level the
-- keys with waiting tasks take turns by start-time fair queueing: each turn goes to the active key with the lowest
-- virtual time, makes that the level's virtual time, takes up to the key's quantum of tasks (FAIR_QUANTUM per unit
-- of weight: one list pop serves several tasks, as in deficit round robin) and moves the key on by tasks taken /
-- weight, so over any stretch of turns every backlogged key gets a share in proportion to its weight, and a key
-- that just became busy starts at the current virtual time (one O(log K) sorted-set step per turn, whatever the
-- number of keys). The level's keyless tasks (its plain list) take their turn as one more key, '' (weight
-- `[fair] default_weight`). A key that may not run now is parked (fair_allowed), not bounced through the delayed
-- set. Only keys with a concurrency limit or ordered have their running tasks counted (fair_track).
local ready = KEYS[1]
--@include fair_base
local fair_now = tonumber(ARGV[5]) or 0  -- ARGV 5: now (ms); 4 is the worker id (whereabouts)
local FAIR_ANY = {fair_active('h'), fair_active('d'), fair_active('l'), FAIR_PARKED}
local FAIR_SORT_CAP = 1000  -- most raw pushes with a fair key sorted into their keys' lists by one claim
local FAIR_QUANTUM = 2      -- most tasks one visit takes from a key of weight 1 (see fair_take)
local fair_sorted = 0
local fair_zeroed = false   -- whether a key's backlog entry reached zero (fair_base.lua: FAIR_BACKLOG)
-- The backlog entries of the keys a pass took from, when their lists at this level are all they have waiting
-- (fair_take's `lone`): the list's length after the turn, written in one ZADD (and the emptied keys' in one ZREM) per pass
-- instead of a ZINCRBY per turn, whose reply (a double Redis 7.0 formats with %.17g) made it the dearest step.
local fair_lengths, fair_emptied = {}, {}
local fair_pending = {}     -- key -> tasks of it picked by this call (their tokens are minted at the end)
local fair_picked = {}      -- index in `items` -> key, for picks of keys whose running tasks are counted

-- A task pushed raw into a ready list with a fair key (the client routes its own) joins its key's list here, and
-- gets the whereabouts record a raw push lacks ('sorted'), so a lookup reads its key's list (whereabouts.lua).
local FAIR_SORTED = {h = 'ready|high|', d = 'ready|default|', l = 'ready|low|'}
local function fair_backlog_flush()
  if #fair_lengths > 0 then redis.call('ZADD', FAIR_BACKLOG, unpack(fair_lengths)); fair_lengths = {} end
  if #fair_emptied > 0 then redis.call('ZREM', FAIR_BACKLOG, unpack(fair_emptied)); fair_emptied = {} end
end

local function fair_sort_in(raw)
  if fair_sorted >= FAIR_SORT_CAP then return false end
  fair_backlog_flush()  -- its ZINCRBY lands on the entries as written so far (fair_take then counts: not lone)
  local k, letter = fair_push('RPUSH', raw)
  if not k then return false end
  fair_sorted = fair_sorted + 1
  note(task_id(raw), FAIR_SORTED[letter] .. fair_now .. '|sorted' .. fair_where(k))
  return true
end

-- How many tasks key `k` (settings `c`) may start now, at most `most`; 0 when it may not run now (it is then
-- parked until it may).
local function fair_allowed(k, c, most)
  if c.paused then fair_park(k, '+inf'); return 0 end
  local limit = c.ordered and 1 or c.conc
  if limit > 0 then
    local run = fair_run(k)
    local mine = fair_pending[k] or 0
    local n = redis.call('ZCARD', run) + mine
    if n >= limit and n > mine then
      -- A token no longer in flight (a recovery, or a settle that did not say so) frees its place: the count
      -- heals itself from the leases' own record instead of leaking.
      for _, token in ipairs(redis.call('ZRANGE', run, 0, -1)) do
        if redis.call('HEXISTS', KEYS[4], token) == 0 then
          redis.call('ZREM', run, token)
          n = n - 1
        end
      end
    end
    if n >= limit then fair_park(k, '+inf'); return 0 end
    if limit - n < most then most = limit - n end
  end
  if c.rate > 0 then
    -- GCRA, as flow_admit.lua: tat is the theoretical arrival time of the key's next task (one task per look).
    local interval = 1000 / c.rate
    local tat = math.max(tonumber(redis.call('GET', fair_tat(k)) or fair_now), fair_now)
    local allowed = tat - interval * (c.burst - 1)
    if allowed > fair_now then fair_park(k, math.ceil(allowed)); return 0 end
    redis.call('SET', fair_tat(k), tostring(tat + interval), 'PXAT', math.ceil(tat + interval))
    return 1
  end
  return most
end

-- Parked keys whose time has come are active again.
local function fair_start()
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', FAIR_PARKED, '-inf', fair_now, 'LIMIT', 0, 1000)) do
    fair_unpark(k)
  end
end

-- Claim from level `letter` (plain list `list`) by turns among its keys; false when the level has no fair keys
-- (the caller then takes the plain list as before).
local function fair_take(letter, list)
  local active, vt = fair_active(letter), fair_vt(letter)
  local plain = redis.call('LLEN', list) > 0
  local count = redis.call('ZCARD', active)
  if count == 0 or (count == 1 and redis.call('ZSCORE', active, '')) then
    if count == 1 then redis.call('DEL', active, vt) end
    return false
  end
  -- Whether no other level has tasks in keys' lists: then a key's backlog entry is its list's length here, which
  -- its turn reads anyway; else each turn counts its tasks off the entry (ZINCRBY).
  local waiting = redis.call('HMGET', FAIR_COUNT, 'h', 'd', 'l')
  local lone = true
  for i = 1, 3 do
    if FAIR_LETTERS[i] ~= letter and (tonumber(waiting[i]) or 0) > 0 then lone = false end
  end
  local sorted_at_start = fair_sorted  -- a raw push sorted in from here on may be another level's: lone no more
  local lists_at = fair_list(letter, '')  -- the start of this level's key lists' names (fair_list)
  if plain then redis.call('ZADD', active, 'NX', redis.call('GET', vt) or '0', '') end
  local served = nil  -- the virtual time of the last pick, written once at the end
  local taken = 0     -- tasks taken from keys' lists (not the plain list)
  while #items < want do
    -- The next keys in turn, taken out in one step (ZPOPMIN: no ZREM per emptied key): they are served in this
    -- order until one already served comes round again (its new virtual time, `bound`, is below the next key's),
    -- which needs a fresh look; the keys served and still waiting go back at their new virtual times, those not
    -- reached at their old ones, the emptied and the parked stay out. As many keys as the claim's room needs at
    -- FAIR_QUANTUM tasks each (a key of less weight takes fewer, and a further look finds the rest).
    local head = redis.call('ZPOPMIN', active, math.min(math.ceil((want - #items) / FAIR_QUANTUM), 500))
    if #head == 0 then break end
    local bound = math.huge
    local rescore, emptied = {}, {}
    local sorted_before = fair_sorted
    local j = 1
    while j < #head do
      local k, score = head[j], tonumber(head[j + 1])
      if score > bound or #items >= want then break end
      local c = fair_cfg(k)
      -- A visit takes up to the key's quantum (deficit round robin: FAIR_QUANTUM per unit of weight), as far as
      -- its limits and this claim's room allow, and moves its virtual time on by what it took / its weight.
      local most = c.quantum
      if not most then
        most = math.max(1, math.floor(FAIR_QUANTUM * c.weight))
        c.quantum = most  -- (kept with the settings: FAIR_PLAIN's is worked out once per claim)
      end
      if most > want - #items then most = want - #items end
      local got, left = 0, true
      if k == '' then
        while got < most do
          local raw
          repeat raw = redis.call('LPOP', list) until not raw or (raw ~= wake and not fair_sort_in(raw))
          if not raw then left = false; break end
          items[#items + 1] = raw
          got = got + 1
        end
        if left then left = redis.call('LLEN', list) > 0 end
      else
        if c.limited == nil then c.limited = c.paused or c.ordered or c.conc > 0 or c.rate > 0 end
        if c.limited then most = fair_allowed(k, c, most) end
        if most > 0 then
          local source = lists_at .. k
          local popped = redis.call('LPOP', source, most)
          if popped then
            got = #popped
            local counted = c.ordered or c.conc > 0
            if counted then fair_pending[k] = (fair_pending[k] or 0) + got end
            for i = 1, got do
              items[#items + 1] = popped[i]
              if counted then fair_picked[#items] = k end
            end
            taken = taken + got
          end
          -- Fewer than asked for: the list is gone (a full pop must ask).
          local length = got == most and redis.call('LLEN', source) or 0
          left = length > 0
          if lone and fair_sorted == sorted_at_start then
            -- Its backlog entry becomes the list's length (nothing of it waits elsewhere); written per pass.
            if left then
              fair_lengths[#fair_lengths + 1] = length
              fair_lengths[#fair_lengths + 1] = k
            else
              fair_emptied[#fair_emptied + 1] = k
            end
          elseif got > 0 and tonumber(redis.call('ZINCRBY', FAIR_BACKLOG, -got, k)) <= 0 then
            fair_zeroed = true  -- entries at zero go in one step at the end
          end
        end  -- else parked (fair_park): out of the turns
      end
      if got > 0 then served = head[j + 1] end
      if got > 0 and left then
        local after = score + got / c.weight
        rescore[#rescore + 1] = after
        rescore[#rescore + 1] = k
        if after < bound then bound = after end
      end
      if left == false then emptied[#emptied + 1] = k end  -- it stays out
      j = j + 2
    end
    for r = j, #head, 2 do  -- not reached: back at their virtual times, as read
      rescore[#rescore + 1] = head[r + 1]
      rescore[#rescore + 1] = head[r]
    end
    if #rescore > 0 then redis.call('ZADD', active, unpack(rescore)) end
    if fair_sorted > sorted_before then
      -- The keyless turn sorted raw pushes into keys' lists (fair_push puts a key back in the turns): a key this
      -- pass emptied afterwards must not stay in them with nothing waiting.
      for _, k in ipairs(emptied) do
        if k ~= '' and redis.call('EXISTS', lists_at .. k) == 0 then redis.call('ZREM', active, k) end
      end
    end
    fair_backlog_flush()
  end
  if fair_zeroed then redis.call('ZREMRANGEBYSCORE', FAIR_BACKLOG, '-inf', 0) end
  if taken > 0 and redis.call('HINCRBY', FAIR_COUNT, letter, -taken) <= 0 then
    redis.call('HDEL', FAIR_COUNT, letter)
  end
  if redis.call('EXISTS', active) == 0 then
    redis.call('DEL', vt)
  elseif served then
    redis.call('SET', vt, served)
  end
  return true
end

-- The picked tasks of counted keys join their keys' running sets, under the tokens the claim minted. Returns
-- those tokens: only their settles carry the 'fair' item that frees the place again (a key without limits has no
-- running set, and its tasks' settles do nothing for it).
local function fair_track(last, n)
  local tokens = {}
  for i, k in pairs(fair_picked) do
    local token = tostring(last - n + i)
    redis.call('ZADD', fair_run(k), fair_now, token)
    tokens[#tokens + 1] = token
  end
  return tokens
end
