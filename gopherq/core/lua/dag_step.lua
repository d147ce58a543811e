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

-- Make waiting member `node` ready: its stored envelope goes to the head of its priority level's ready list (the
-- next claim of that level takes it, ahead of a backlog of tasks that became ready while its parents ran: a join
-- or a chain's next step is the continuation of work already under way), stamped `ready_at` now (ARGV[1], the
-- caller's time in ms), and its whereabouts say so ('flow'). A member with a fair key goes to the tail of its key's
-- list (flow_where.lua: flow_push).
local function dag_ready(flow, node, member)
  local envelope = dget(flow, 'e:' .. node)
  dset(flow, 'm:' .. node, 'r' .. string.sub(member, 2))
  if envelope then
    dset(flow, 'e:' .. node, false)
    -- ready from now: latency counts from here
    flow_push('LPUSH', restamp(envelope, tonumber(ARGV[1]), false), ARGV[1])
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

-- A member field's value split once per script call: value -> {was = its letter's byte, children = the text after
-- it, list = each child, then per outcome letter the value it becomes}. A fan-in's members all read 'r<join>': one
-- split serves them all.
local DAG_SPLIT = {}

local function dag_split(member)
  local split = DAG_SPLIT[member]
  if not split then
    local children = string.sub(member, 2)
    local list = {}
    for child in string.gmatch(children, '[^,]+') do list[#list + 1] = child end
    split = {was = string.byte(member), children = children, list = list}
    DAG_SPLIT[member] = split
  end
  return split
end

-- Whether a member whose field reads `member` counts outcome `outcome` ('s', 'f' or 'c'): only a ready member
-- becomes final; the one change after that is a failed member revived (requeued from the dead-letter queue) that
-- succeeds. Returns its split (see dag_split), the value its field takes, and whether it is such a revival; nil when
-- it does not count (it was counted already: an at-least-once re-execution, or a member absent).
local function dag_counts(member, outcome)
  if not member then return nil end
  local split = DAG_SPLIT[member] or dag_split(member)
  local revived = split.was == 102 and outcome == 's'  -- 102 'f'
  if split.was ~= 114 and not revived then return nil end  -- 114 'r'
  local now = split[outcome]
  if not now then
    now = outcome .. split.children
    split[outcome] = now
  end
  return split, now, revived
end

-- Move the flow's counters and its children's joins for `n` members that each counted `outcome` (dag_counts gave
-- `split` and `revived`), then judge each child join once. `n` > 1 only for members with at most one child, counted
-- one after another: their join's judgement after the last of them is the one it would have come to after each.
local function dag_apply(flow, split, outcome, revived, n)
  if not revived then dincr(flow, 'open', -n) end
  local list = split.list
  if #list == 0 then
    if revived then
      dincr(flow, 'fatal', -n)
    elseif outcome ~= 's' then
      dincr(flow, 'fatal', n)  -- a sink that failed: no join is there to tolerate it
    end
  end
  for k = 1, #list do  -- each child
    local child = list[k]
    local join = djoin(flow, child)
    if join then
      if revived then
        join.bad, join.ok = join.bad - n, join.ok + n
      else
        join.pending = join.pending - n
        if outcome == 's' then join.ok = join.ok + n else join.bad = join.bad + n end
      end
      djoin_changed(flow, child)
      dag_judge(flow, child, join)
    end
  end
end

-- Member `node` of `flow` reached final state `outcome` ('s', 'f' or 'c'), counted once (dag_counts). Returns true
-- when it counted, false when nothing changed; the caller then calls dag_state once for the flow (however many of
-- its members moved) and dag_flush.
local function dag_step(flow, node, outcome)
  local field = 'm:' .. node
  local split, now, revived = dag_counts(dget(flow, field), outcome)
  if not split then return false end
  dset(flow, field, now)
  dag_apply(flow, split, outcome, revived, 1)
  return true
end

-- dag_step for many members of one flow (their fields `fields` after the first `skip`, outcomes `outcomes`, in
-- batch order; their values read already, see dprefetch): a run of members with the same field value and outcome
-- and at most one child (a fan-in's children, in the usual case all of a batch's) moves the counters and judges
-- their join once. Returns true when any counted.
local function dag_steps(flow, fields, outcomes, skip)
  local c = dag_cache(flow)
  local values, list, listed = c.v, c.l, c.n
  local run, run_outcome, run_revived, n = nil, nil, nil, 0
  local any = false
  for k = skip + 1, #fields do
    local field, outcome = fields[k], outcomes[k - skip]
    local member = values[field]
    local split = member and DAG_SPLIT[member]
    local now = split and split.was == 114 and split[outcome]  -- the usual: a ready member, a split seen already
    local revived = false
    if not now then split, now, revived = dag_counts(member, outcome) end
    if split then
      values[field] = now  -- read again by a second item of the same task (a duplicate)
      listed = listed + 1
      list[listed] = field  -- written by dag_flush
      any = true
      if split == run and outcome == run_outcome then
        n = n + 1
      else
        if run then dag_apply(flow, run, run_outcome, run_revived, n) end
        run, run_outcome, run_revived, n = split, outcome, revived, 1
        if #split.list > 1 then  -- several joins: each judged after each member, in order
          dag_apply(flow, split, outcome, revived, 1)
          run = nil
        end
      end
    end
  end
  c.n = listed
  if run then dag_apply(flow, run, run_outcome, run_revived, n) end
  return any
end
