-- Shared by the scripts that move a task (pulled in by `--@include whereabouts`): each task's whereabouts, one
-- field per task id in the queue's `where` hash, written in the same script as the move, so a lookup by id is one
-- HGET (core/whereabouts.py reads it; docs/operations.md describes the format). A record is text, '|'-separated:
--   ready|<level>|<since ms>|<how>        level high, default or low; how enqueued, promoted, recovered, requeued,
--                                         released, scheduled (a schedule's run), run_now or flow (flow_where.lua)
--   ready|<level>|<since ms>|<how>|<key>  the same for a task in its fair key's list (fair_base.lua: fair_where);
--                                         only such a task's record has this fifth field; how may also be sorted
--                                         (fair_claim.lua) or retrying/deferred (an ordered key's, fair_settled)
--   delayed|<reason>|<due ms>|<detail>    reason retrying (detail: next attempt/max attempts), scheduled (an eta),
--                                         held (held back by flow control; detail: the flow key)
--   running|<token>|<since ms>|<worker>   claimed by that worker with that attempt token
-- A settled task's field is deleted by the settle: its result record (kept `result_ttl`) says how it ended.
-- Writes are batched: `note` collects, `flush_where` sends one HSET per thousand records.

-- The id of an envelope, cheaply: GoPherQ writes "id" first, so an anchored match reads only the id's bytes.
-- Anything else (a raw push that puts "id" later, an id with escapes) is decoded, and only when it names an "id"
-- and is at most 64 KiB (a bigger one gets no record until the worker has parsed it: core/whereabouts.py has the
-- same rule, `claimed_id`).
local ID_FIRST = '^{"id":"([^"\\]*)"'  -- (claim.lua matches it itself, a function call less per task)
local function task_id(raw)
  local id = string.match(raw, ID_FIRST)
  if id then return id end
  if #raw > 65536 or not string.find(raw, '"id"', 1, true) then return nil end
  local ok, obj = pcall(cjson.decode, raw)
  if ok and type(obj) == 'table' and type(obj.id) == 'string' then return obj.id end
  return nil
end

local where_args = {}
local function note(id, record)
  if id then
    where_args[#where_args + 1] = id
    where_args[#where_args + 1] = record
  end
end

-- The first HSET also writes the field that keeps the hash a hash table rather than a listpack, whose every write
-- scans it whole (core/whereabouts.py: LAYOUT_FIELD, LAYOUT_VALUE): the value's length converts it at once.
local LAYOUT_VALUE = 'not a task: this value, over 64 bytes, keeps the hash a hash table (see core/whereabouts.py)'
local function flush_where(key)
  if #where_args > 0 then
    redis.call('HSET', key, '', LAYOUT_VALUE, unpack(where_args, 1, math.min(1000, #where_args)))
  end
  for j = 1001, #where_args, 1000 do
    redis.call('HSET', key, unpack(where_args, j, math.min(j + 999, #where_args)))
  end
  where_args = {}
end

-- The name of the priority level whose ready list is `key`, given the high and low lists' names.
local function level_name(key, high_key, low_key)
  if key == high_key then return 'high' end
  if key == low_key then return 'low' end
  return 'default'
end
