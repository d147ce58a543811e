-- Create a flow (a DAG of tasks) in one step, idempotently by flow id: its bookkeeping hash (see dag_step.lua) is
-- written and its roots pushed to their ready lists (their whereabouts recorded, 'flow': flow_where.lua), or, when a
-- flow of that id already exists, nothing is done.
-- KEYS: 1 the flow's hash, 2 the queue's flow index (zset: flow id scored by creation, ms), 3 the plain ready list,
--       4 the high-priority list, 5 the low-priority list
-- ARGV: 1 now (ms), 2 flow id, 3 the members, one line each: "<node>|<member field>|<join spec>|<hex length>"
--       (hex length: its envelope's; member field: 'r' or 'w', then its children, comma-separated; join spec:
--       '' for a root, ending in '+' for an open join, see dag_extend.lua), 4 the members' envelopes, one after
--       another in line order (pushed for a root, stored for the others). Packed in two arguments, not four per
--       member: a flow of 100,000 members is then two strings to send and read, not 400,000 (the client and Redis
--       spent most of a creation on those).
--       5 (optional) how many roots are not among them: they follow in dag_roots.lua calls, counted down in the
--       flow's `building` field (the joins' counts include them already; the reconciler leaves such a flow alone
--       and cancels it when its creation never finishes).
--       6 (optional) '1' when no root among them has a priority or a fair key: each goes to the plain list, its
--       bytes not searched (flow_where.lua: flow_gather).
-- Returns: 1 when created, 0 when a flow of that id exists, 2 when it exists and still waits for roots (a creation
-- sent again resumes with dag_roots.lua).
local ready, high, low = KEYS[3], KEYS[4], KEYS[5]
--@include levels
--@include flow_where
local flow = KEYS[1]
if redis.call('EXISTS', flow) == 1 then
  if redis.call('HEXISTS', flow, 'building') == 1 then return 2 end
  return 0
end
local later = tonumber(ARGV[5] or '0') or 0
local plain = ARGV[6] == '1'
local n = select(2, string.gsub(ARGV[3], '\n', '')) + later
redis.call('HSET', flow, 'id', ARGV[2], 'state', 'pending', 'open', n, 'fatal', 0, 'halt', 0, 'created', ARGV[1],
           'size', n)
if later > 0 then redis.call('HSET', flow, 'building', later) end
-- Written a thousand fields and pushed a thousand roots per call: a call per member costs more than the work.
local fields, nf = {}, 0
local function flush_fields()
  if nf > 0 then redis.call('HSET', flow, unpack(fields, 1, nf)) end
  fields, nf = {}, 0
end
local blob, offset = ARGV[4], 1
local prefix = ARGV[2] .. '.'  -- a member's task id is "<flow id>.<node>"
local roots, ids, nr = {}, {}, 0
for node, member, spec, size in string.gmatch(ARGV[3], '([^|\n]*)|([^|\n]*)|([^|\n]*)|(%x+)\n') do
  local next_offset = offset + tonumber(size, 16)  -- hex: strtoul, not a strtod per member
  local envelope = string.sub(blob, offset, next_offset - 1)
  offset = next_offset
  fields[nf + 1], fields[nf + 2] = 'm:' .. node, member
  nf = nf + 2
  if spec ~= '' then
    if string.sub(spec, -1) == '+' then
      spec = string.sub(spec, 1, -2)
      fields[nf + 1], fields[nf + 2] = 'o:' .. node, '1'
      nf = nf + 2
    end
    fields[nf + 1], fields[nf + 2] = 'j:' .. node, spec
    nf = nf + 2
  end
  if string.byte(member) == 114 then  -- 'r': a root, pushed below (its list, or its fair key's; its whereabouts)
    nr = nr + 1
    roots[nr], ids[nr] = envelope, prefix .. node
  else
    fields[nf + 1], fields[nf + 2] = 'e:' .. node, envelope
    nf = nf + 2
  end
  if nf >= 2000 then flush_fields() end
end
flush_fields()
local pushes = flow_gather_all(roots, ids, nr, ARGV[1], plain)
for key, list in pairs(pushes) do
  wake(key)
  for j = 1, #list, 1000 do redis.call('RPUSH', key, unpack(list, j, math.min(j + 999, #list))) end
end
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
flush_where(FLOW_WHERE)
return 1
