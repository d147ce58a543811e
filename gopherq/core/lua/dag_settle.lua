-- The settle script's part of flows (pulled into settle.lua by `--@include dag_settle`; needs dag_step and levels).
-- A task that is a flow member is followed in the settle batch by a 'dag' item (item key: its flow's hash; token:
-- the task id; result: its node; data: the flow id), which acts only when the task's own item was settled here: a
-- refused (fenced) or repeated settle moves no flow. The settle loop notes each such member (`dag_note`); after the
-- loop, `dag_settle_all` records their final outcomes in batch order and makes ready every join they complete, in
-- this same script call. Members of one flow are read with one HMGET and the flow's changed fields written with
-- one HSET (dag_fields.lua), whatever their number.
local DAG_OUTCOME = {ack = 's', dead = 'f', cancel = 'c'}
local dag_noted = {}  -- {flow key, node, outcome, flow id} per member settled in this call, in batch order

local function dag_note(flow, task_id, node, flow_id, kind)
  local outcome = DAG_OUTCOME[kind]
  if not outcome then return end  -- a retry, deferral or release is not final
  if flow_id .. '.' .. node ~= task_id then return end  -- not this flow's member (dag_step: nor a member at all)
  dag_noted[#dag_noted + 1] = {flow, node, outcome, flow_id}
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
