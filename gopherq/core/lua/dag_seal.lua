-- Seal an open join: no more children will be added (dag_extend.lua); it runs when its parents are final, under its
-- policy, as any join (judged here at once, in case they already are).
-- KEYS: 1 the flow's hash, 2 the plain ready list, 3 the high-priority list, 4 the low-priority list
-- ARGV: 1 now (ms), 2 the join's node
-- Returns: 1 when sealed here, 0 when it was not open (already sealed, or no such join).
local ready, high, low = KEYS[2], KEYS[3], KEYS[4]
--@include levels
--@include dag_step
local flow, join = KEYS[1], ARGV[2]
if redis.call('HDEL', flow, 'o:' .. join) == 0 then return 0 end
dag_judge(flow, join, nil)
dag_state(flow, false)
dag_flush()
return 1
