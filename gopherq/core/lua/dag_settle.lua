-- The settle script's part of flows (pulled into settle.lua by `--@include dag_settle`; needs dag_step and levels).
-- A settle batch with flow members ends with one 'dag' item per flow (item key: the flow's hash; token: the flow id;
-- data: its members' items, "<item index, hex>:m:<node>" comma-separated), after every item it names. Only a member
-- whose own item was settled in this call counts: a refused (fenced) or repeated settle moves no flow. The settle
-- loop notes them (`dag_note`); after the loop, `dag_settle_all` records their final outcomes in batch order and
-- makes ready every join they complete, in this same script call. Members of one flow are read with one HMGET and the
-- flow's changed fields written with one HSET (dag_fields.lua), whatever their number; a member costs the settle
-- call a few bytes, not an item of its own. (The worker sends a task's item here only when its id is
-- "<flow id>.<node>", as every member's is: core/outcomes.py, dag_of.)
local DAG_OUTCOME = {ack = 's', dead = 'f', cancel = 'c'}
-- Per flow with members settled in this call: {flow key, flow id, fields, outcomes}: the fields to read, the flow's
-- counters then its members' (DAG_COUNTERS of them), and the members' outcomes, in batch order.
local dag_noted = {}
local DAG_COUNTERS = 3

-- The members `packed` of flow `flow_id` (hash `flow`) whose items (`settled`: item index -> true) were settled
-- (each named by its field, "m:<node>", as the worker sends it: no string is made here per member).
local function dag_note(flow, flow_id, packed, settled)
  local fields, outcomes = {'state', 'open', 'fatal'}, {}
  local n = DAG_COUNTERS
  for index, field in string.gmatch(packed, '(%x+):([^,]+)') do
    local i = tonumber(index, 16)  -- strtoul: a decimal would cost a strtod per member
    if settled[i] then
      local outcome = DAG_OUTCOME[ARGV[5 + i * 5]]  -- none for a retry, deferral or release: not final
      if outcome then
        n = n + 1
        fields[n] = field
        outcomes[n - DAG_COUNTERS] = outcome
      end
    end
  end
  if n > DAG_COUNTERS then dag_noted[#dag_noted + 1] = {flow, flow_id, fields, outcomes} end
end

-- Record the noted members' outcomes; returns the ids of the flows whose state changed (for their announcement).
local function dag_settle_all()
  local changed_ids = {}
  for _, noted in ipairs(dag_noted) do
    local flow, fields = noted[1], noted[3]
    dprefetch(flow, fields)  -- one HMGET: the counters and the members
    if dag_steps(flow, fields, noted[4], DAG_COUNTERS) then
      local _, changed = dag_state(flow, true)
      if changed then changed_ids[#changed_ids + 1] = noted[2] end
    end
  end
  dag_flush()
  return changed_ids
end
