-- Settle a batch of claimed tasks in one round trip. Every item is fenced by its attempt token: if the token is
-- no longer in flight because its lease expired and the reaper handed the task to someone else (the reaper records
-- such tokens), the item is refused. A token gone but never reaped went with an earlier run of this very settle
-- whose reply was lost (a dropped connection, a Redis restart, a timeout), sent again: the item is reported as
-- settled (2) and nothing is written twice.
-- KEYS: 1 ready list, 2 leases, 3 inflight, 4 delayed, 5 dead (hash), 6 dead index (zset), 7 stats (hash),
--       8 this minute's counts (hash), 9.. one key per item (in item order), then, when there are events and
--       timelines are kept, this period's outcome events (hash) and their width (string; see Events below),
--       then the high- and low-priority lists, the reaped tokens (zset), the whereabouts (hash) and this hour's
--       counts (hash; last five)
-- ARGV: 1 now (ms), 2 result TTL (s), 3 dead-letter cap, 4 counts TTL (s), then 5 per item:
--       kind, token, result JSON ('' for none), data, extra;
--       then 5 last: hourly counts TTL (s), attempt durations (ms, summed), attempts timed, time in queue (ms,
--       summed), attempts with a known time in queue
--   kind 'ack'     : write the result (item key: the result key); extra = the task id (its whereabouts go: the
--                    result record says where it ended); data unused
--   kind 'cancel'  : as 'ack', for a task cancelled before or while it ran (counted apart)
--   kind 'retry'   : data = new envelope, extra = due time (ms) -> delayed set
--   kind 'defer'   : as 'retry', for a task that arrived before its eta (not an attempt)
--   kind 'dead'    : data = dead-letter entry JSON, extra = entry id (the task id; made unique with the token
--                    when taken) -> dead hash + index; the task's whereabouts go, as for 'ack'
--   kind 'release' : put the in-flight envelope back at the head of its priority level's ready list, unchanged
--                    (shutdown)
--   Some kinds are not items of their own but follow the item they belong to, and act only when it was settled
--   (they add nothing to the reply): 'unlock' (item key: a uniqueness lock; token: the task id) deletes the lock
--   when the task still holds it; 'uncancel' (item key: the cancel requests; token: the task id) forgets the
--   task's cancel request; 'where' (item key: the whereabouts; token: the task id; data: its record, see
--   whereabouts.lua) says where a retried, deferred or released task now is, or, with data '' and extra = the
--   attempt token, forgets the record the claim wrote under an id the task turned out not to have (bytes that
--   never became a task), if it still names that attempt; 'fair' (item key: the fair key's running set; data: the
--   fair key) frees the task's place among its key's running tasks (fair_base.lua: fair_settled); it is sent only
--   for an attempt the claim counted there (a key with limits: the claim's '!counted').
--   Flows: one 'dag' item per flow with members in the batch, after the items it names (item key: the flow's hash;
--   token: the flow id; data: "<item index, hex>:m:<node>" per member, comma-separated) records the final outcomes of
--   those members whose items were settled here and makes ready the joins they complete (dag_settle.lua).
--   Events (see core/eventlog.py, events.lua): a 'stream' item, first when any item has events (item key: the
--   queue's event stream; token: its maxlen; result: events kept per timeline), then one 'event' after-item per
--   event of an item (item key: the task's timeline, or the stream itself when timelines are off; result: the
--   event's JSON; data: the timeline's shorter copy of it, '' when it fits). An event is written only when its
--   item was settled now: a refused or repeated item writes none. The usual event, an 'ack' or 'cancel' item's
--   one outcome event that fits a timeline entry, rides in the item's own `data` instead (unused by those kinds):
--   no arguments of its own. A plain one (no error, data or trace id: a success, as a rule) rides in its short
--   form (core/eventlog.py ShortEvents), under 32 bytes where a whole line has more: its duration's JSON, after its
--   form's number n (one byte, 2 to 31) unless n is 1; the 'stream' item's data holds the call's forms, a head and
--   a middle each, one per line, and the event is written as head(n), the task id (the item's extra, which then
--   has nothing JSON escapes) in quotes, middle(n), the duration and '}': the bytes the worker would have sent.
--   Its timeline entry, the last of its task's timeline, goes into the hash of the outcome
--   events written in this period of the result TTL (field: the task id), in one HSET per call, and that hash
--   expires when the next period ends: a key with an expiry per task costs Redis a fifth of its work per task
--   (core/eventlog.py; the task's earlier events are in its timeline list as before).
-- Counts each kind in the stats hash (acked, cancelled, retried, deferred, dead_lettered, released, refused_acks,
-- settles_repeated), and the outcomes (succeeded, cancelled, retried, dead) and the timings in this minute's and
-- this hour's counts hashes, once per kind per batch.
-- Returns: one 1 (settled), 2 (already settled by an earlier run of the same settle) or 0 (refused: stale token)
-- per item; then, when flow members settled here changed their flows' states, '!flows' and those flows' ids.
-- KEYS and ARGV as locals: a global is a table lookup at each use, and the loop below reads several per item.
local KEYS, ARGV = KEYS, ARGV
local ready, high, low, reaped = KEYS[1], KEYS[#KEYS - 4], KEYS[#KEYS - 3], KEYS[#KEYS - 2]
local where, hourly = KEYS[#KEYS - 1], KEYS[#KEYS]
-- The ids of the tasks that ended here: their whereabouts go (one HDEL per thousand, at the end).
local gone, gone_count = {}, 0
--@include levels
--@include events
--@include dag_step
--@include dag_settle
local ttl = ARGV[2]  -- as text: Redis 7.0 formats a Lua number passed to redis.call with %.17g, per call
local cap = tonumber(ARGV[3])
local out, replied = {}, 0  -- (replied: #out, counted as it grows)
local counts = {}
local dead_added = false
local stream, maxlen, keep  -- set by a 'stream' item
local settled = {}  -- item index -> true, for the items settled in this call (flows: dag_note)
local leases, held_count = {}, 0  -- the tokens settled here
local last_held = false
local last_base = 0  -- [fair keys] ARGV index of the last settled item
local n = (#ARGV - 9) / 5
local call, inflight = redis.call, KEYS[3]  -- (locals: the loop below reads them per item)
local sub = string.sub
-- The forms of this call's short events (see Events above): each one's head and middle, in number order.
local forms, forms_count = {}, 0
local function short_forms(parts)
  local at, count = 1, 0
  while at <= #parts do
    local stop = string.find(parts, '\n', at, true) or #parts + 1
    count = count + 1
    forms[count] = sub(parts, at, stop - 1)
    at = stop + 1
  end
  forms_count = count / 2
end
-- Kinds that are not items of their own but act with the item before them (see above): one table lookup per item
-- instead of seven comparisons.
local AFTER = {event = true, unlock = true, uncancel = true, where = true, stream = true, dag = true, fair = true}
local outcomes, ridden = {}, 0  -- task id, timeline entry, ... of the riding events written here (see Events above)
for i = 0, n - 1 do
  local base = 5 + i * 5
  local kind, token, result = ARGV[base], ARGV[base + 1], ARGV[base + 2]
  -- The in-flight record is the fence: HDEL's reply says whether the token was still held (only a release
  -- needs the envelope itself).
  local held, envelope
  if AFTER[kind] then
    if kind == 'stream' then
      stream, maxlen, keep = KEYS[9 + i], token, tonumber(result)
      short_forms(ARGV[base + 3])
    elseif kind == 'dag' then  -- flows: the batch's members of one flow move it on, in this call (dag_settle.lua)
      dag_note(KEYS[9 + i], token, ARGV[base + 3], settled)
    elseif last_held then
      if kind == 'event' then  -- with its item, in this call (events.lua)
        local timeline = KEYS[9 + i]
        record_event(stream, keep, ttl, result, timeline ~= stream and timeline or nil, ARGV[base + 3])
      elseif kind == 'fair' then  -- [fair keys]
        fair_settled(ARGV[base + 3], token, ARGV[last_base], ARGV[last_base + 3], ARGV[last_base + 4], KEYS[4],
                     where, ARGV[1])  -- (where, now: an ordered key's retry is recorded in its key's list)
      elseif kind == 'where' and ARGV[base + 3] == '' then
        local held_by = 'running|' .. ARGV[base + 4] .. '|'
        if string.sub(redis.call('HGET', KEYS[9 + i], token) or '', 1, #held_by) == held_by then
          redis.call('HDEL', KEYS[9 + i], token)
        end
      elseif kind == 'where' then
        redis.call('HSET', KEYS[9 + i], token, ARGV[base + 3])
      elseif kind == 'uncancel' then
        redis.call('ZREM', KEYS[9 + i], token)
      elseif redis.call('GET', KEYS[9 + i]) == token then
        redis.call('DEL', KEYS[9 + i])
      end
    end
    held = nil
  elseif kind == 'release' then
    envelope = redis.call('HGET', KEYS[3], token)
    held = envelope ~= false
    if held then redis.call('HDEL', KEYS[3], token) end
  else
    held = call('HDEL', inflight, token) == 1
  end
  local rides = stream and (kind == 'ack' or kind == 'cancel') and ARGV[base + 3] ~= ''
  if held == nil then
    -- an after-effect of the previous item: nothing to report
  elseif not held then
    last_held = false  -- its after-effects were done by whoever removed the token
    if redis.call('ZSCORE', reaped, token) then
      replied = replied + 1
      out[replied] = 0
      counts['refused'] = (counts['refused'] or 0) + 1
    else
      replied = replied + 1
      out[replied] = 2
      counts['repeated'] = (counts['repeated'] or 0) + 1
    end
  else
    last_held, last_base = true, base
    settled[i] = true
    held_count = held_count + 1
    leases[held_count] = token
    if kind == 'retry' or kind == 'defer' then
      redis.call('ZADD', KEYS[4], ARGV[base + 4], ARGV[base + 3])
    elseif kind == 'dead' then
      -- Entries are keyed by task id; another task with the same id already there gets a distinct key.
      local entry_id = ARGV[base + 4]
      if redis.call('HSETNX', KEYS[5], entry_id, ARGV[base + 3]) == 0 then
        entry_id = entry_id .. '.' .. token
        redis.call('HSET', KEYS[5], entry_id, ARGV[base + 3])
      end
      -- Scored by time of death; the fraction keeps a batch's order, so the oldest are trimmed first.
      redis.call('ZADD', KEYS[6], tonumber(ARGV[1]) + i / 1000, entry_id)
      dead_added = true
    elseif kind == 'release' then
      push_level('LPUSH', envelope)
    end
    if result ~= '' then
      -- GET: its reply, nil (no earlier record), becomes a Lua false; SET's own, OK, a table per call.
      call('SET', KEYS[9 + i], result, 'EX', ttl, 'GET')
    end
    if rides then  -- record_event's XADD (events.lua), inlined: once per task; its timeline entry goes below
      local line = ARGV[base + 3]
      if #line < 32 then  -- a short event (a whole line is longer): completed here (see Events)
        local form = 1
        if forms_count > 1 and string.byte(line) < 32 then form, line = string.byte(line), sub(line, 2) end
        line = forms[2 * form - 1] .. '"' .. ARGV[base + 4] .. '"' .. forms[2 * form] .. line .. '}'
      end
      local id = call('XADD', stream, '*', 'event', line)
      if keep > 0 then
        outcomes[ridden + 1], outcomes[ridden + 2] = ARGV[base + 4], id .. ' ' .. line
        ridden = ridden + 2
      end
    end
    if kind == 'ack' or kind == 'cancel' or kind == 'dead' then
      gone_count = gone_count + 1
      gone[gone_count] = ARGV[base + 4]
    end
    counts[kind] = (counts[kind] or 0) + 1
    replied = replied + 1
    out[replied] = 1
  end
end
if stream then cap_stream(stream, maxlen) end  -- once per call, after its events (events.lua)
local moved_flows = #dag_noted > 0 and dag_settle_all()  -- flows: the members noted above (dag_settle.lua)
if #outcomes > 0 then  -- this period's hash, kept until the next period ends (at least the result TTL)
  local hash, width = KEYS[9 + n], tonumber(ttl)
  for j = 1, #outcomes, 1000 do
    redis.call('HSET', hash, unpack(outcomes, j, math.min(j + 999, #outcomes)))
  end
  redis.call('EXPIREAT', hash, (math.floor(tonumber(ARGV[1]) / 1000 / width) + 2) * width)
  redis.call('SET', KEYS[10 + n], ttl)
end
-- The settled tokens' leases go in one ZREM per thousand (a call per token costs more than the removal).
for j = 1, #leases, 1000 do
  redis.call('ZREM', KEYS[2], unpack(leases, j, math.min(j + 999, #leases)))
end
for j = 1, #gone, 1000 do
  redis.call('HDEL', where, unpack(gone, j, math.min(j + 999, #gone)))
end
local names = {ack = 'acked', cancel = 'cancelled', retry = 'retried', defer = 'deferred', dead = 'dead_lettered',
               release = 'released', refused = 'refused_acks', repeated = 'settles_repeated'}
for kind, count in pairs(counts) do
  redis.call('HINCRBY', KEYS[7], names[kind] or kind, count)
end
local minute = {ack = 'succeeded', cancel = 'cancelled', retry = 'retried', dead = 'dead'}
local counted = false
for kind, field in pairs(minute) do
  if counts[kind] then
    redis.call('HINCRBY', KEYS[8], field, counts[kind])
    counted = true
  end
end
-- Timings and hourly counts (charts of a day and a week): the same fields again, in this hour's hash.
local tail = #ARGV - 4
local timing = {duration_ms = ARGV[tail + 1], timed = ARGV[tail + 2], wait_ms = ARGV[tail + 3],
                waited = ARGV[tail + 4]}
for field, value in pairs(timing) do
  if value ~= '0' then
    redis.call('HINCRBY', KEYS[8], field, value)
    redis.call('HINCRBY', hourly, field, value)
    counted = true
  end
end
if counted then
  for kind, field in pairs(minute) do
    if counts[kind] then redis.call('HINCRBY', hourly, field, counts[kind]) end
  end
  redis.call('EXPIRE', hourly, ARGV[tail])
end
-- (end of the timings and hourly counts)
if counted then redis.call('EXPIRE', KEYS[8], ARGV[4]) end
if dead_added then
  local over = redis.call('ZCARD', KEYS[6]) - cap
  if over > 0 then
    local oldest = redis.call('ZPOPMIN', KEYS[6], over)
    for j = 1, #oldest, 2 do redis.call('HDEL', KEYS[5], oldest[j]) end
    redis.call('HINCRBY', KEYS[7], 'dead_trimmed', over)
  end
end
if moved_flows and #moved_flows > 0 then  -- flows whose state changed here: their caller announces them
  out[#out + 1] = '!flows'
  out[#out + 1] = moved_flows
end
return out
