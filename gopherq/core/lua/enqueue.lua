-- Enqueue tasks that need more than a push, in one call: unique tasks (each one's lock is taken in the same step
-- as its push, so of any number of identical enqueues racing, exactly one gets in), tasks of another priority
-- level (which must wake a worker blocked on the plain list), tasks created idempotently by id (the HTTP API:
-- an id created within the window is not enqueued again), and tasks with a fair key (into their key's list).
-- KEYS: 1 the plain ready list, 2 the high-priority list, 3 the low-priority list, 4 the delayed set,
--       5.. per task in task order: its uniqueness lock when it has one, then its seen marker when it has one,
--       last: the whereabouts (hash; see whereabouts.lua)
-- ARGV: 1 the envelopes, concatenated; 2 the task ids, concatenated; 3 one line per task,
--       "<envelope bytes>,<id bytes>,<level>,<due>,<lock TTL>,<seen window>\n": level 'h', 'd' or 'l'; due time
--       (ms) or ''; lock TTL (ms) or '' (a task with a TTL takes the next key); seen window (s) or '' (a task with
--       a window takes the next key). Three arguments whatever the batch: redis-py's cost is per argument.
--       4: now (ms), when the tasks became ready (their whereabouts)
-- Returns: one value per task: '' when it was enqueued, or the id of the task it duplicates (the holder of its
--          lock, or itself when its id was seen): nothing was enqueued.
local ready, high, low = KEYS[1], KEYS[2], KEYS[3]
--@include levels
--@include whereabouts
local lists = {h = high, d = ready, l = low}
local names = {h = 'high', d = 'default', l = 'low'}
local out = {}
local key = 4
local pushes = {d = {}, h = {}, l = {}}  -- pushed per list at the end, a thousand at a time, in task order
local envelopes, ids, at_envelope, at_id = ARGV[1], ARGV[2], 1, 1
local SPEC = '(%d+),(%d+),(%a),([^,]*),([^,]*),([^\n]*)\n'
for envelope_len, id_len, level, due, ttl, seen in string.gmatch(ARGV[3], SPEC) do
  local envelope = string.sub(envelopes, at_envelope, at_envelope + envelope_len - 1)
  local id = string.sub(ids, at_id, at_id + id_len - 1)
  at_envelope, at_id = at_envelope + envelope_len, at_id + id_len
  local holder, lock, marker = '', nil, nil
  if ttl ~= '' then key = key + 1; lock = KEYS[key] end
  if seen ~= '' then key = key + 1; marker = KEYS[key] end
  if marker and not redis.call('SET', marker, '1', 'NX', 'EX', seen) then holder = id end
  if holder == '' and lock and not redis.call('SET', lock, id, 'NX', 'PX', ttl) then
    holder = redis.call('GET', lock)
    if marker then redis.call('DEL', marker) end  -- not created: the same id may be sent again
  end
  if holder == '' then
    if due ~= '' then
      redis.call('ZADD', KEYS[4], due, envelope)
      note(id, 'delayed|scheduled|' .. due .. '|')
    else
      local fair = fair_push('RPUSH', envelope)  -- [fair keys] a task with a fair key goes to its key's list
      if not fair then
        local batch = pushes[level]
        batch[#batch + 1] = envelope
      end
      note(id, 'ready|' .. names[level] .. '|' .. ARGV[4] .. '|enqueued' .. fair_where(fair))
    end
  end
  out[#out + 1] = holder
end
for _, level in ipairs({'d', 'h', 'l'}) do  -- the plain list first: a worker blocked on it then needs no marker
  local batch = pushes[level]
  if #batch > 0 then wake(lists[level]) end
  for j = 1, #batch, 1000 do
    redis.call('RPUSH', lists[level], unpack(batch, j, math.min(j + 999, #batch)))
  end
end
flush_where(KEYS[#KEYS])
return out
