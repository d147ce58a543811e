-- Shared by the scripts that move a flow (a DAG of tasks) on: the settle script (through dag_settle), the flow
-- reconciler and the seal script (pulled in by `--@include dag_step`). Expects levels.lua; a join made ready
-- gets its whereabouts record in the same call (flow_where.lua). The flow hash is read and written through
-- dag_fields.lua's cache: a script that uses these functions calls `dag_flush` before it returns.
--@include flow_where
--@include dag_fields
-- A flow's bookkeeping is one hash (QueueKeys.dag), in the queue's hash tag:
--   state   pending | running | succeeded | failed | cancelled     id      the flow id
--   open    members not yet final (waiting, ready, blocked)          fatal   failures no join tolerates (failed
--   m:<n>   member n: one state letter, then its children, comma-     sinks, blocked joins); > 0 means failed
--           separated: w waiting, r ready (queued or running),       e:<n>   the envelope of a waiting member
--           s succeeded, f failed (dead-lettered), c cancelled,
--           b blocked (its join cannot run: fail_fast or a quorum out of reach; a revived parent may unblock it)
--   j:<n>   join n: "<policy letter><quorum>:<pending>:<ok>:<bad>" (F fail_fast, A all_settled,
--           I ignore_failures, Q quorum); pending counts parents not yet final, ok and bad the final ones
--   halt    fail_fast joins now blocked: while > 0 the flow starts nothing new (what is ready gets cancelled)
--   o:<n>   present while join n is open: children may still be added (dag_extend.lua) until it is sealed
--   p:<n>   the children added to open join n, comma-separated (its parents beyond those its envelope lists)
-- The flow's state from its counters (`moved`: a member just became final, so a pending flow is running), and
-- whether it changed here. Called once per script call and flow, after its members moved (dag_step does not).
local function dag_state(flow, moved)
  local state, open, fatal = dget(flow, 'state'), tonumber(dget(flow, 'open')) or 0, tonumber(dget(flow, 'fatal')) or 0
  if state == 'cancelled' then return state, false end
  local new
  if fatal > 0 then new = 'failed' elseif open == 0 then new = 'succeeded' else new = 'running' end
  if new == 'running' and state == 'pending' and not moved then return state, false end
  if new == state then return new, false end
  dset(flow, 'state', new)
  if new ~= 'running' then dset(flow, 'finished', ARGV[1]) end
  return new, true
end

-- Make waiting member `node` ready: its stored envelope goes to its priority level's ready list, stamped
-- `ready_at` now (ARGV[1], the caller's time in ms), and its whereabouts say so ('flow').
local function dag_ready(flow, node, member)
  local envelope = dget(flow, 'e:' .. node)
  dset(flow, 'm:' .. node, 'r' .. string.sub(member, 2))
  if envelope then
    dset(flow, 'e:' .. node, false)
    -- ready from now: latency counts from here
    flow_push('RPUSH', restamp(envelope, tonumber(ARGV[1]), false), ARGV[1])
  end
end

-- Look at join `node` (`join`: its parsed spec, see dag_fields.lua: djoin) after one of its parents changed: make
-- it ready, block it, or unblock it. Its member field is read only when one of those may happen.
local function dag_judge(flow, node, join)
  join = join or djoin(flow, node)
  if not join then return end
  local policy, quorum, pending, ok, bad = join.policy, join.quorum, join.pending, join.ok, join.bad
  local go, stuck
  if policy == 'F' then
    stuck = bad > 0
    go = not stuck and pending <= 0
  elseif policy == 'Q' then
    go = ok >= quorum
    stuck = not go and ok + pending < quorum
  else
    go = pending <= 0
    stuck = false
  end
  if not go and not stuck then return end  -- the common case: parents still pending
  if go and dget(flow, 'o:' .. node) then return end  -- open: children may still come
  local member = dget(flow, 'm:' .. node)
  if not member then return end
  local letter = string.sub(member, 1, 1)
  if letter ~= 'w' and letter ~= 'b' then return end  -- it already ran, runs or was cancelled: counted once
  if go and letter == 'b' then
    dincr(flow, 'fatal', -1)
    if policy == 'F' then dincr(flow, 'halt', -1) end
    letter = 'w'
    member = 'w' .. string.sub(member, 2)
    dset(flow, 'm:' .. node, member)
  end
  if go then
    if dget(flow, 'state') ~= 'cancelled' and (tonumber(dget(flow, 'halt')) or 0) <= 0 then
      dag_ready(flow, node, member)
    end
  elseif stuck and letter == 'w' then
    dset(flow, 'm:' .. node, 'b' .. string.sub(member, 2))
    dincr(flow, 'fatal', 1)
    if policy == 'F' then dincr(flow, 'halt', 1) end
  end
end

-- Member `node` of `flow` reached final state `outcome` ('s', 'f' or 'c'). Counts each member once: only a
-- ready member becomes final; the one change after that is a failed member revived (requeued from the
-- dead-letter queue) that succeeds. Returns true when it counted, false when nothing changed; the caller then
-- calls dag_state once for the flow (however many of its members moved) and dag_flush.
local function dag_step(flow, node, outcome)
  local member = dget(flow, 'm:' .. node)
  if not member then return false end
  local was = string.sub(member, 1, 1)
  local revived = was == 'f' and outcome == 's'
  if was ~= 'r' and not revived then return false end
  local children = string.sub(member, 2)
  dset(flow, 'm:' .. node, outcome .. children)
  if not revived then dincr(flow, 'open', -1) end
  if children == '' then
    if revived then
      dincr(flow, 'fatal', -1)
    elseif outcome ~= 's' then
      dincr(flow, 'fatal', 1)  -- a sink that failed: no join is there to tolerate it
    end
  end
  local from = 1
  while true do  -- each child (comma-separated)
    local comma = string.find(children, ',', from, true)
    local child = string.sub(children, from, (comma or 0) - 1)
    local join = child ~= '' and djoin(flow, child)
    if join then
      if revived then
        join.bad, join.ok = join.bad - 1, join.ok + 1
      else
        join.pending = join.pending - 1
        if outcome == 's' then join.ok = join.ok + 1 else join.bad = join.bad + 1 end
      end
      djoin_changed(flow, child)
      dag_judge(flow, child, join)
    end
    if not comma then break end
    from = comma + 1
  end
  return true
end
