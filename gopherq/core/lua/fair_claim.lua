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
-- A count given to redis.call as a string: a Lua number there is formatted with %.17g, a float formatting that
-- costs Redis ~2,000 instructions per argument (string.format's %d an integer's, once per count per call).
local fair_ints = {}
local function fair_int(n)
  local s = fair_ints[n]
  if not s then
    s = string.format('%d', n)
    fair_ints[n] = s
  end
  return s
end
-- A virtual time as a ZADD argument: most are whole (a visit moves a key of weight 1 on by the tasks it took), and
-- those are written as integers; others as Redis would write the number (%.17g: exact).
local function fair_score(x)
  if x == math.floor(x) and x < 1e15 and x > -1e15 then return fair_ints[x] or fair_int(x) end
  return string.format('%.17g', x)
end
local FAIR_ANY = {fair_active('h'), fair_active('d'), fair_active('l'), FAIR_PARKED}
local FAIR_SORT_CAP = 1000  -- most raw pushes with a fair key sorted into their keys' lists by one claim
local FAIR_QUANTUM = 2      -- most tasks one visit takes from a key of weight 1 (see fair_take)
local fair_sorted = 0
local fair_zeroed = false   -- whether a key's backlog entry fell below FAIR_TOP (fair_base.lua: FAIR_BACKLOG)
-- The backlog entries of the keys a pass took from, when their lists at this level are all they have waiting
-- (fair_take's `lone`): the list's length after the turn, written in one ZADD (and the entries of the keys that
-- fell below FAIR_TOP removed in one ZREM) per pass instead of a ZINCRBY per turn, whose reply (a double Redis 7.0
-- formats with %.17g) made it the dearest step. A key that had fewer than FAIR_TOP before its turn had no entry:
-- nothing is written for it.
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
  for _, k in ipairs(redis.call('ZRANGEBYSCORE', FAIR_PARKED, '-inf', fair_int(fair_now), 'LIMIT', '0', '1000')) do
    fair_unpark(k)
  end
end

-- After a visit to key `k` (its new virtual time `after`, nil when it took nothing; its list's `length` now, `got`
-- tasks taken): back in the turns at its new virtual time (`rescore`; returns the pass's `bound`, lowered to it) or
-- out of them (into `emptied` when `emptied` is given: fair_take); when its backlog entry is its list's length
-- (`counting`: fair_take's `lone`), that entry is written per pass, or removed when the key fell below FAIR_TOP.
local function fair_visited(k, after, length, got, counting, rescore, emptied, bound)
  if counting then
    if length >= FAIR_TOP then
      fair_lengths[#fair_lengths + 1] = fair_int(length)
      fair_lengths[#fair_lengths + 1] = k
    elseif length + got >= FAIR_TOP then
      fair_emptied[#fair_emptied + 1] = k
    end
  end
  if length == 0 then
    if emptied then emptied[#emptied + 1] = k end  -- it stays out
  elseif after then
    rescore[#rescore + 1] = fair_score(after)
    rescore[#rescore + 1] = k
    if after < bound then bound = after end
  end
  return bound
end

-- The `n` keys of a pass whose list pop took all it asked for (`full`: their lists; `fkeys`: the keys; `afters`:
-- their new virtual times; `gots`: the tasks taken), so that their lists may or may not hold more: one EXISTS over
-- them all says (with many keys of a few tasks each, the usual answer is that none does: no LLEN per key); only
-- when some do is each one's list read (LLEN), or, when no backlog entry needs the lengths (`counting` false) and
-- all of them do, none. Then as fair_visited. Returns the pass's new bound.
local function fair_looked(full, fkeys, afters, gots, n, counting, rescore, emptied, bound)
  local found = -1  -- how many of the lists exist (-1: not asked; a single key's LLEN is its look)
  if n > 1 then found = redis.call('EXISTS', unpack(full, 1, n)) end
  if found == 0 then  -- all gone
    for i = 1, n do
      if counting and gots[i] >= FAIR_TOP then fair_emptied[#fair_emptied + 1] = fkeys[i] end
      if emptied then emptied[#emptied + 1] = fkeys[i] end
    end
    return bound
  end
  for i = 1, n do
    local length = 1
    if counting or found ~= n then length = redis.call('LLEN', full[i]) end
    bound = fair_visited(fkeys[i], afters[i], length, gots[i], counting, rescore, emptied, bound)
  end
  return bound
end

-- The next keys in turn at level `active`, at most `room`, taken out: the keys and, when they all have the same
-- virtual time, that time (a string, as Redis wrote it), else nil and the keys and their times interleaved. The
-- keys a pass takes often all have the same virtual time (each key that became busy starts at the level's, and a
-- visit moves it on by whole tasks / weight): then they are read without their scores (a float formatting per
-- score in ZPOPMIN's reply, ~2,000 instructions) and removed by rank in one sweep instead of a search per key.
local FAIR_GROUP = 8  -- fewest keys of the same time worth that (else ZPOPMIN: two calls more per pass)
local function fair_next(active, room)
  if room >= FAIR_GROUP then
    local first = redis.call('ZRANGE', active, '0', '0', 'WITHSCORES')
    if #first == 0 then return {} end
    local same = redis.call('ZRANGEBYSCORE', active, first[2], first[2], 'LIMIT', '0', fair_int(room))
    if #same >= FAIR_GROUP then
      redis.call('ZREMRANGEBYRANK', active, '0', fair_int(#same - 1))
      return same, first[2]
    end
  end
  return redis.call('ZPOPMIN', active, fair_int(room)), nil
end

-- The usual pass with many keys, from its `j`th key: they share one virtual time (`score`), every key has
-- FAIR_PLAIN's settings (no limits, weight 1: a `quantum` of FAIR_QUANTUM a visit) and their backlog entries follow
-- their lists' lengths (fair_take's `counting`). Then a visit is its list pop and little more: each key moves on by
-- a task or more, so none comes round again before the pass's other keys (the general turn's `bound` and `maybe`
-- never stop it), and the keys whose pop took a full quantum are looked at together at the end, as fair_looked
-- does. It stops at the keyless share ('': the general turn takes it, then this goes on) and when the claim is
-- full. Returns the index of the first key it did not serve, `have` (the claim's tasks now) and the pass's `bound`.
-- (The general turn's checks, a key's settings and four bookkeeping tables cost Redis about 2,500 instructions per
-- key visited: each Lua instruction costs it dozens of its own.)
-- Per key only what must be: `redis.call` read once (not a global and a field per key), the pop's count string
-- made once (again only when the claim's room cuts the last pop short), a pop of two copied without a loop, and
-- one table of the full lists, not a second of their keys (each key is its list's name's end, cut out only in the
-- rare case that some list still holds tasks): 33,950-34,010 -> 33,460-33,580 Redis instructions per claimed task
-- (claim only; 100,000 keys x 2 tasks).
local function fair_sweep(head, j, lists_at, score, quantum, have, rescore, bound)
  local call = redis.call
  local full, n = {}, 0  -- the lists a pop took a full quantum from (their keys: the names' ends)
  local last = quantum  -- (what the last of them took: the claim's room may have made it less)
  local count = fair_ints[quantum] or fair_int(quantum)
  local keys = #head
  while j <= keys do
    local k = head[j]
    if k == '' or have >= want then break end
    local most = want - have
    if most >= quantum then
      most = quantum
    else
      count = fair_ints[most] or fair_int(most)
    end
    local source = lists_at .. k
    local popped = call('LPOP', source, count)
    local got = 0
    if popped then
      got = #popped
      if got == 2 then
        items[have + 1], items[have + 2] = popped[1], popped[2]
      else
        for i = 1, got do items[have + i] = popped[i] end
      end
      have = have + got
    end
    if got == most then
      n = n + 1
      full[n], last = source, got
    elseif got >= FAIR_TOP then  -- its list is gone (fair_visited with length 0)
      fair_emptied[#fair_emptied + 1] = k
    end
    j = j + 1
  end
  -- As fair_looked, for a full quantum each but the last: one EXISTS over them all (usually none still waits),
  -- else each one's length (their backlog entries need it).
  local found = n > 1 and call('EXISTS', unpack(full, 1, n)) or n
  if found > 0 or quantum >= FAIR_TOP then
    local cut = #lists_at + 1
    for i = 1, n do
      local got = i < n and quantum or last
      local k = string.sub(full[i], cut)
      if found > 0 then
        bound = fair_visited(k, score + got, call('LLEN', full[i]), got, true, rescore, nil, bound)
      elseif got >= FAIR_TOP then
        fair_emptied[#fair_emptied + 1] = k
      end
    end
  end
  return j, have, bound
end

-- Claim from level `letter` (plain list `list`) by turns among its keys; false when the level has no fair keys
-- (the caller then takes the plain list as before).
local function fair_take(letter, list)
  local active, vt = fair_active(letter), fair_vt(letter)
  local count = redis.call('ZCARD', active)
  if count == 0 or (count == 1 and redis.call('ZSCORE', active, '')) then
    if count == 1 then redis.call('DEL', active, vt) end
    return false
  end
  local plain = redis.call('LLEN', list) > 0
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
  local plain_cfg = fair_all_plain() and FAIR_PLAIN  -- every key's settings, when they are all the same
  local taken = 0     -- tasks taken from keys' lists (not the plain list)
  local per = FAIR_QUANTUM  -- tasks a visit is counted on to give when sizing a pass (see `room`)
  while #items < want do
    -- The next keys in turn, taken out in one step (fair_next: no ZREM per emptied key): they are served in this
    -- order until one already served comes round again (its new virtual time, `bound`, is below the next key's),
    -- which needs a fresh look; the keys served and still waiting go back at their new virtual times, those not
    -- reached at their old ones, the emptied and the parked stay out. As many keys as the claim's room needs at
    -- FAIR_QUANTUM tasks each at first, then at what the last pass's visits gave (at least 1): keys of one task
    -- each (or a key of less weight, or parked ones) took a pass per halving of the room, 7 per claim of 100
    -- (each its reads of the turns; below FAIR_GROUP keys a ZPOPMIN, a formatted score per key), now 2: with
    -- 100,000 keys of one task, 72,300 -> 69,900 Redis instructions per task claimed and settled.
    -- Which keys are served, and in what order, does not depend on it: a key read but not reached goes back at
    -- its time, and one not read is read by the next pass.
    local room = math.min(math.ceil((want - #items) / per), 500)
    local head, same = fair_next(active, room)
    if #head == 0 then break end
    local step = same and 1 or 2  -- head: keys, or keys and their virtual times
    local at, score = nil, 0       -- the last virtual time read, as a string and as a number
    local bound = math.huge
    local rescore, emptied = {}, {}
    -- The keys whose lists may hold more, looked at together (fair_looked), and the lowest new virtual time among
    -- them should they all hold more.
    local full, fkeys, afters, gots, nfull, maybe = {}, {}, {}, {}, 0, math.huge
    local counting = lone and fair_sorted == sorted_at_start  -- (the keyless turn below may sort raw pushes in)
    local sorted_before = fair_sorted
    local j, have = 1, #items  -- (have: #items, kept as items grow)
    local had = have
    while j <= #head do
      if same and plain_cfg and counting and head[j] ~= '' then  -- (`counting`: until the keyless turn sorts)
        local before = have
        j, have, bound = fair_sweep(head, j, lists_at, tonumber(same), FAIR_QUANTUM, have, rescore, bound)
        if have > before then served, taken = same, taken + have - before end
        if j > #head then break end
      end
      local k, vt_at = head[j], same or head[j + 1]
      if vt_at ~= at then at, score = vt_at, tonumber(vt_at) end
      if nfull > 0 and (score > maybe or k == '') then
        -- The bound counts every key served so far that still waits, and the keyless turn may sort raw pushes
        -- into their lists: they are looked at first.
        bound = fair_looked(full, fkeys, afters, gots, nfull, counting, rescore,
                            fair_sorted > sorted_before and emptied, bound)
        nfull, maybe = 0, math.huge
      end
      if score > bound or have >= want then break end
      local c = plain_cfg or fair_cfg(k)
      -- A visit takes up to the key's quantum (deficit round robin: FAIR_QUANTUM per unit of weight), as far as
      -- its limits and this claim's room allow, and moves its virtual time on by what it took / its weight.
      local most = c.quantum
      if not most then
        most = math.max(1, math.floor(FAIR_QUANTUM * c.weight))
        c.quantum = most  -- (kept with the settings: FAIR_PLAIN's is worked out once per claim)
      end
      if most > want - have then most = want - have end
      local got = 0
      if k == '' then
        local left = true
        while got < most do
          local raw
          repeat raw = redis.call('LPOP', list) until not raw or (raw ~= wake and not fair_sort_in(raw))
          if not raw then left = false; break end
          have = have + 1
          items[have] = raw
          got = got + 1
        end
        if left then left = redis.call('LLEN', list) > 0 end
        counting = lone and fair_sorted == sorted_at_start
        if got > 0 and left then
          local after = score + got / c.weight
          rescore[#rescore + 1] = fair_score(after)
          rescore[#rescore + 1] = k
          if after < bound then bound = after end
        end
        -- (`emptied`: the keys emptied after the keyless turn sorted raw pushes in, see below.)
      else
        if c.limited == nil then c.limited = c.paused or c.ordered or c.conc > 0 or c.rate > 0 end
        if c.limited then most = fair_allowed(k, c, most) end
        if most > 0 then
          local source = lists_at .. k
          if most == 1 then
            -- (without a count: LPOP's count form costs Redis ~2,000 instructions more, a range reply read into
            -- a table, and an ordered or rate-limited key's visit takes one task)
            local raw = redis.call('LPOP', source)
            if raw then got, items[have + 1] = 1, raw end
          else
            local popped = redis.call('LPOP', source, fair_ints[most] or fair_int(most))
            if popped then
              got = #popped
              for i = 1, got do items[have + i] = popped[i] end
            end
          end
          if got > 0 and (c.ordered or c.conc > 0) then  -- counted: its running tasks are (fair_track)
            fair_pending[k] = (fair_pending[k] or 0) + got
            for i = have + 1, have + got do fair_picked[i] = k end
          end
          have = have + got
          taken = taken + got
          if not counting and got > 0
              and tonumber(redis.call('ZINCRBY', FAIR_BACKLOG, fair_int(-got), k)) < FAIR_TOP then
            -- Entries below FAIR_TOP (and those this made for keys that had none) go in one step at the end.
            fair_zeroed = true
          end
          if got == most then
            -- Whether its list holds more is looked up with the pass's other such keys (fair_looked).
            local after = score + got / c.weight
            nfull = nfull + 1
            full[nfull], fkeys[nfull], afters[nfull], gots[nfull] = source, k, after, got
            if after < maybe then maybe = after end
          else
            -- Fewer than asked for: the list is gone.
            bound = fair_visited(k, nil, 0, got, counting, rescore, fair_sorted > sorted_before and emptied, bound)
          end
        end  -- else parked (fair_park): out of the turns
      end
      if got > 0 then served = vt_at end
      j = j + step
    end
    if nfull > 0 then
      fair_looked(full, fkeys, afters, gots, nfull, counting, rescore, fair_sorted > sorted_before and emptied,
                  bound)
    end
    if j > 1 then per = math.max(1, math.min(FAIR_QUANTUM, (have - had) * step / (j - 1))) end
    for r = j, #head, step do  -- not reached: back at their virtual times, as read
      rescore[#rescore + 1] = same or head[r + 1]
      rescore[#rescore + 1] = head[r]
    end
    if #rescore > 0 then redis.call('ZADD', active, unpack(rescore)) end
    if fair_sorted > sorted_before then
      -- The keyless turn sorted raw pushes into keys' lists (fair_push puts a key back in the turns): a key this
      -- pass emptied afterwards must not stay in them with nothing waiting.
      for _, k in ipairs(emptied) do
        if redis.call('EXISTS', lists_at .. k) == 0 then redis.call('ZREM', active, k) end
      end
    end
    fair_backlog_flush()
  end
  if fair_zeroed then redis.call('ZREMRANGEBYSCORE', FAIR_BACKLOG, '-inf', FAIR_BELOW_TOP) end
  if taken > 0 and redis.call('HINCRBY', FAIR_COUNT, letter, fair_int(-taken)) <= 0 then
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
    redis.call('ZADD', fair_run(k), fair_int(fair_now), token)
    tokens[#tokens + 1] = token
  end
  return tokens
end
