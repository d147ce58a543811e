-- The settle script's part of flows (pulled into settle.lua by `--@include dag_settle`; needs dag_step and levels).
-- A task that is a flow member is followed in the settle batch by a 'dag' item (item key: its flow's hash; token:
-- the task id; result: its node; data: the flow id), which acts only when the task's own item was settled here: a refused (fenced)
-- or repeated settle moves no flow. The member's final outcome is recorded and every join it completes is made
-- ready in this same script call.
local DAG_OUTCOME = {ack = 's', dead = 'f', cancel = 'c'}

local function dag_settle(flow, task_id, node, flow_id, kind)
  local outcome = DAG_OUTCOME[kind]
  if not outcome then return end  -- a retry, deferral or release is not final
  if flow_id .. '.' .. node ~= task_id then return end  -- not this flow's member (dag_step: nor a member at all)
  dag_step(flow, node, outcome)
end
