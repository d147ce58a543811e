-- Flow members' whereabouts (pulled in by `--@include flow_where`; expects levels.lua and `ready`, `high`, `low`, the
-- queue's three ready lists). A member a flow script makes ready (a root at the flow's creation, a child added to an
-- open join, a join its parents' settles completed) gets its record, 'ready|<level>|<since ms>|flow' (with its fair
-- key: fair_base.lua's fair_where), in the same call as its push, so that a lookup by id is one HGET, as for any task.
-- The whereabouts hash is QueueKeys.where, of the queue's hash tag: derived here from the plain list's name (the
-- queue's name), as fair_base.lua derives its keys, so the flow scripts' callers need not pass it.
--@include whereabouts
local FLOW_WHERE = 'gopherq:{' .. ready .. '}:where'

-- The records of members ready since one time in one level's list: list key -> record, for `FLOW_SINCE` (a
-- creation writes thousands of the same record: built once).
local FLOW_RECORDS, FLOW_SINCE = {}, nil

-- The record of flow member `raw` (its task id `id` when the caller knows it) ready since `since` (ms) in list
-- `key` (its level's) or its fair key `fair`'s.
local function flow_note(raw, key, since, fair, id)
  if fair then
    note(id or task_id(raw), 'ready|' .. level_name(key, high, low) .. '|' .. since .. '|flow' .. fair_where(fair))
    return
  end
  if since ~= FLOW_SINCE then FLOW_RECORDS, FLOW_SINCE = {}, since end
  local record = FLOW_RECORDS[key]
  if not record then
    record = 'ready|' .. level_name(key, high, low) .. '|' .. since .. '|flow'
    FLOW_RECORDS[key] = record
  end
  note(id or task_id(raw), record)
end

-- push_level for one flow member, with its record written at once (one HSET: a member at a time). `command`
-- LPUSH (a join its parents just completed: dag_step.lua) puts it at the head of its level's list; one with a
-- fair key still goes to the tail of its key's list, behind the key's earlier tasks (an ordered key's order holds).
local function flow_push(command, raw, since)
  local key = level_key(raw)
  local fair = fair_push('RPUSH', raw)  -- [fair keys] a task with a fair key goes to its key's list
  if not fair then
    wake(key)
    redis.call(command, key, raw)
  end
  flow_note(raw, key, since, fair)
  flush_where(FLOW_WHERE)
end

-- A root among a flow's many (its creation): into its fair key's list at once, or gathered in `pushes` (level list
-- -> envelopes) for one push per list; its record noted under `id`, its task id (the caller flushes the records).
-- `plain`: the caller's word that no envelope of its call has a priority or a fair key (FlowStore.create knows its
-- tasks), so this one goes to the plain list without two searches of its bytes.
local function flow_gather(raw, pushes, since, id, plain)
  local key, fair = ready, false
  if not plain then
    key = level_key(raw)
    fair = fair_push('RPUSH', raw)  -- [fair keys] a task with a fair key goes to its key's list
  end
  if not fair then
    local list = pushes[key]
    if not list then list = {}; pushes[key] = list end
    list[#list + 1] = raw
  end
  flow_note(raw, key, since, fair, id)
end

-- The roots of one creation call (dag_create.lua, dag_roots.lua): `envelopes[1..n]`, their task ids `ids[1..n]`.
-- Returns them gathered per level list (list key -> envelopes) for one push per list, their records noted (the
-- caller flushes them). When `plain` (see flow_gather) they all go to the plain list with one record, built once:
-- no call and no search per root.
local function flow_gather_all(envelopes, ids, n, since, plain)
  local pushes = {}
  if not plain then
    for k = 1, n do flow_gather(envelopes[k], pushes, since, ids[k], false) end
    return pushes
  end
  if n > 0 then pushes[ready] = envelopes end
  local record = 'ready|default|' .. since .. '|flow'
  local w = #where_args
  for k = 1, n do
    where_args[w + 1], where_args[w + 2] = ids[k], record
    w = w + 2
  end
  return pushes
end
