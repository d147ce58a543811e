-- A flow hash's fields as the flow scripts read and write them (pulled in by dag_step.lua): through a write-back
-- cache that lasts one script call, so that a settle recording many members of one flow reads each counter and
-- join spec once and writes each changed field once (one HSET per flow at the end, `dag_flush`), instead of a
-- read and a write per member. Every script that moves a flow calls `dag_flush` before it reads the hash directly
-- and before it returns; nothing else can see the hash in between (a script call is atomic).
-- flow key -> {v = field -> value (false: absent), d = field -> true when changed, l = fields changed by dag_steps
-- (a list: appending costs less than a hash insert; a field may be in it twice, and in d too: written once each
-- time, with its value then), n = the list's length}
local DAG = {}

local function dag_cache(flow)
  local c = DAG[flow]
  if not c then
    c = {v = {}, d = {}, l = {}, n = 0}
    DAG[flow] = c
  end
  return c
end

-- A field's value (false when absent).
local function dget(flow, field)
  local c = dag_cache(flow)
  local value = c.v[field]
  if value == nil then
    value = redis.call('HGET', flow, field)
    c.v[field] = value
  end
  return value
end

-- Read the fields not cached yet in one HMGET per thousand (e.g. the members a settle records).
local function dprefetch(flow, fields)
  local fresh = DAG[flow] == nil  -- nothing cached: every field is wanted (the usual: a settle's one item per flow)
  local c = dag_cache(flow)
  local wanted = fields
  if not fresh then
    wanted = {}
    for k = 1, #fields do
      local field = fields[k]
      if c.v[field] == nil then wanted[#wanted + 1] = field end
    end
  end
  for j = 1, #wanted, 1000 do
    local last = math.min(j + 999, #wanted)
    local values = redis.call('HMGET', flow, unpack(wanted, j, last))
    for k = j, last do c.v[wanted[k]] = values[k - j + 1] end
  end
end

-- Set a field (false deletes it).
local function dset(flow, field, value)
  local c = dag_cache(flow)
  c.v[field] = value
  c.d[field] = true
end

-- Add `by` to a counter field; its new value (kept a number until written: Redis writes an integer as digits).
local function dincr(flow, field, by)
  local value = (tonumber(dget(flow, field)) or 0) + by
  dset(flow, field, value)
  return value
end

-- Join `node`'s spec (see dag_step.lua) parsed once per call: {head, policy, quorum, pending, ok, bad}, or false
-- for a member that is no join. Change its counts in place and call `djoin_changed`: it is written back by
-- `dag_flush`, once however many parents moved it.
local JOINS = {}  -- flow key -> node -> parsed spec or false
local JOINS_CHANGED = {}  -- flow key -> node -> true

local function dsub(t, key)  -- t[key], a table made on first use
  local sub = t[key]
  if not sub then
    sub = {}
    t[key] = sub
  end
  return sub
end

local function djoin(flow, node)
  local joins = dsub(JOINS, flow)
  local join = joins[node]
  if join == nil then
    join = false
    local spec = dget(flow, 'j:' .. node)
    if spec then
      local head, policy, quorum, pending, ok, bad = string.match(spec, '^((%a)(%d+)):(%-?%d+):(%d+):(%d+)$')
      join = {head = head, policy = policy, quorum = tonumber(quorum), pending = tonumber(pending),
              ok = tonumber(ok), bad = tonumber(bad)}
    end
    joins[node] = join
  end
  return join
end

local function djoin_changed(flow, node)
  dsub(JOINS_CHANGED, flow)[node] = true
end

-- Write every changed field (one HSET, one HDEL per thousand fields and flow) and forget the cache.
local function dag_flush()
  for flow, changed in pairs(JOINS_CHANGED) do
    for node in pairs(changed) do
      local j = JOINS[flow][node]
      dset(flow, 'j:' .. node, j.head .. ':' .. string.format('%d:%d:%d', j.pending, j.ok, j.bad))
    end
  end
  JOINS, JOINS_CHANGED = {}, {}
  for flow, c in pairs(DAG) do
    local sets, dels, ns = {}, {}, 0
    local values, list = c.v, c.l
    for k = 1, c.n do
      local field = list[k]
      local value = values[field]
      if value then  -- (a field deleted since is in d)
        sets[ns + 1], sets[ns + 2] = field, value
        ns = ns + 2
      end
    end
    for field in pairs(c.d) do
      local value = values[field]
      if value then
        sets[ns + 1], sets[ns + 2] = field, value
        ns = ns + 2
      else
        dels[#dels + 1] = field
      end
    end
    for j = 1, #sets, 2000 do redis.call('HSET', flow, unpack(sets, j, math.min(j + 1999, #sets))) end
    for j = 1, #dels, 1000 do redis.call('HDEL', flow, unpack(dels, j, math.min(j + 999, #dels))) end
  end
  DAG = {}
end
