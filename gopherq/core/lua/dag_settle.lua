-- The settle script's part of flows (pulled into settle.lua by `--@include dag_settle`; needs dag_step and levels).
-- A settle batch with flow members ends with one 'dag' item per flow (item key: the flow's hash; token: the flow id;
-- data: its members' items, "<item index>:<node>" comma-separated), after every item it names. Only a member whose
-- own item was settled in this call counts: a refused (fenced) or repeated settle moves no flow. The settle loop
-- notes them (`dag_note`); after the loop, `dag_settle_all` records their final outcomes in batch order and makes
-- ready every join they complete, in this same script call. Members of one flow are read with one HMGET and the
-- flow's changed fields written with one HSET (dag_fields.lua), whatever their number; a member costs the settle
-- call a few bytes, not an item of its own. (The worker sends a task's item here only when its id is
-- "<flow id>.<node>", as every member's is: core/outcomes.py, dag_of.)
local DAG_OUTCOME = {ack = 's', dead = 'f', cancel = 'c'}
local dag_noted = {}  -- {flow key, node, outcome, flow id} per member settled in this call, in batch order

-- The members `packed` of flow `flow_id` (hash `flow`) whose items (`settled`: item index -> true) were settled.
local function dag_note(flow, flow_id, packed, settled)
  for index, node in string.gmatch(packed, '(%d+):([^,]+)') do
    local i = tonumber(index)
    if settled[i] then
      local outcome = DAG_OUTCOME[ARGV[5 + i * 5]]  -- none for a retry, deferral or release: not final
      if outcome then dag_noted[#dag_noted + 1] = {flow, node, outcome, flow_id} end
    end
  end
end

-- Record the noted members' outcomes; returns the ids of the flows whose state changed (for their announcement).
local function dag_settle_all()
  local fields = {}  -- flow key -> the member fields to read
  for _, noted in ipairs(dag_noted) do
    local list = fields[noted[1]]
    if not list then
      list = {'state', 'open', 'fatal'}
      fields[noted[1]] = list
    end
    list[#list + 1] = 'm:' .. noted[2]
  end
  for flow, list in pairs(fields) do dprefetch(flow, list) end
  local moved, order = {}, {}  -- flow key -> its id, for the flows a member moved; in batch order
  for _, noted in ipairs(dag_noted) do
    if dag_step(noted[1], noted[2], noted[3]) and not moved[noted[1]] then
      moved[noted[1]] = noted[4]
      order[#order + 1] = noted[1]
    end
  end
  local changed_ids = {}
  for _, flow in ipairs(order) do
    local _, changed = dag_state(flow, true)
    if changed then changed_ids[#changed_ids + 1] = moved[flow] end
  end
  dag_flush()
  return changed_ids
end
