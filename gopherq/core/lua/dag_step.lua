-- Shared by the scripts that move a flow (a DAG of tasks) on: the settle script (through dag_settle), the flow
-- reconciler and the flow cancel script (pulled in by `--@include dag_step`). Expects levels.lua; a join made ready
-- gets its whereabouts record in the same call (flow_where.lua).
--@include flow_where
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
-- The flow's state from its counters (`moved`: a member just became final, so a pending flow is running).
local function dag_state(flow, moved)
  local fields = redis.call('HMGET', flow, 'state', 'open', 'fatal')
  local state, open, fatal = fields[1], tonumber(fields[2]) or 0, tonumber(fields[3]) or 0
  if state == 'cancelled' then return state end
  local new
  if fatal > 0 then new = 'failed' elseif open == 0 then new = 'succeeded' else new = 'running' end
  if new == 'running' and state == 'pending' and not moved then return state end
  if new ~= state then
    redis.call('HSET', flow, 'state', new)
    if new ~= 'running' then redis.call('HSET', flow, 'finished', ARGV[1]) end
  end
  return new
end

-- Make waiting member `node` ready: its stored envelope goes to its priority level's ready list, stamped
-- `ready_at` now (ARGV[1], the caller's time in ms), and its whereabouts say so ('flow').
local function dag_ready(flow, node, member)
  local envelope = redis.call('HGET', flow, 'e:' .. node)
  redis.call('HSET', flow, 'm:' .. node, 'r' .. string.sub(member, 2))
  if envelope then
    redis.call('HDEL', flow, 'e:' .. node)
    -- ready from now: latency counts from here
    flow_push('RPUSH', restamp(envelope, tonumber(ARGV[1]), false), ARGV[1])
  end
end

-- Look at join `node` (its spec `spec` as stored) after one of its parents changed: make it ready, block it, or
-- unblock it. Its member field is read only when one of those may happen.
local function dag_judge(flow, node, spec)
  spec = spec or redis.call('HGET', flow, 'j:' .. node)
  if not spec then return end
  local policy, quorum, pending, ok, bad = string.match(spec, '^(%a)(%d+):(%-?%d+):(%d+):(%d+)$')
  quorum, pending, ok, bad = tonumber(quorum), tonumber(pending), tonumber(ok), tonumber(bad)
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
  if go and redis.call('HEXISTS', flow, 'o:' .. node) == 1 then return end  -- open: children may still come
  local member = redis.call('HGET', flow, 'm:' .. node)
  if not member then return end
  local letter = string.sub(member, 1, 1)
  if letter ~= 'w' and letter ~= 'b' then return end  -- it already ran, runs or was cancelled: counted once
  if go and letter == 'b' then
    redis.call('HINCRBY', flow, 'fatal', -1)
    if policy == 'F' then redis.call('HINCRBY', flow, 'halt', -1) end
    letter = 'w'
    member = 'w' .. string.sub(member, 2)
    redis.call('HSET', flow, 'm:' .. node, member)
  end
  if go then
    local fields = redis.call('HMGET', flow, 'state', 'halt')
    if fields[1] ~= 'cancelled' and (tonumber(fields[2]) or 0) <= 0 then dag_ready(flow, node, member) end
  elseif stuck and letter == 'w' then
    redis.call('HSET', flow, 'm:' .. node, 'b' .. string.sub(member, 2))
    redis.call('HINCRBY', flow, 'fatal', 1)
    if policy == 'F' then redis.call('HINCRBY', flow, 'halt', 1) end
  end
end

-- Member `node` of `flow` reached final state `outcome` ('s', 'f' or 'c'). Counts each member once: only a
-- ready member becomes final; the one change after that is a failed member revived (requeued from the
-- dead-letter queue) that succeeds. Returns the flow's state, or false when nothing changed.
local function dag_step(flow, node, outcome)
  local member = redis.call('HGET', flow, 'm:' .. node)
  if not member then return false end
  local was = string.sub(member, 1, 1)
  local revived = was == 'f' and outcome == 's'
  if was ~= 'r' and not revived then return false end
  local children = string.sub(member, 2)
  redis.call('HSET', flow, 'm:' .. node, outcome .. children)
  if not revived then redis.call('HINCRBY', flow, 'open', -1) end
  if children == '' then
    if revived then
      redis.call('HINCRBY', flow, 'fatal', -1)
    elseif outcome ~= 's' then
      redis.call('HINCRBY', flow, 'fatal', 1)  -- a sink that failed: no join is there to tolerate it
    end
  end
  for child in string.gmatch(children, '[^,]+') do
    local spec = redis.call('HGET', flow, 'j:' .. child)
    if spec then
      local head, pending, ok, bad = string.match(spec, '^(%a%d+):(%-?%d+):(%d+):(%d+)$')
      pending, ok, bad = tonumber(pending), tonumber(ok), tonumber(bad)
      if revived then
        bad, ok = bad - 1, ok + 1
      else
        pending = pending - 1
        if outcome == 's' then ok = ok + 1 else bad = bad + 1 end
      end
      spec = head .. ':' .. pending .. ':' .. ok .. ':' .. bad
      redis.call('HSET', flow, 'j:' .. child, spec)
      dag_judge(flow, child, spec)
    end
  end
  return dag_state(flow, true)
end
