-- What the inspection layer reads of a queue's ready lists, in one call: for each priority level, its length, how
-- many wake markers it holds (levels.lua: they are not tasks), and the tasks at its head, up to ARGV[2] of them and
-- ARGV[3] bytes (always the first), from which the caller tells how long the oldest of them has been ready.
-- A head whose envelope names no time of its own ("created_at", "eta", "ready_at": a raw push) gets a first-seen
-- stamp in the heads hash, "<digest>:<ms>", kept while the same head stays at the front: its wait is measured from
-- the first inspection that saw it there. Writing that stamp is the only write, and it may fail (a read-only user):
-- the read goes on without it. Never part of the delivery path.
-- KEYS: 1 plain (default-level) list, 2 high list, 3 low list, 4 heads hash
-- ARGV: 1 now (ms), 2 most tasks per level, 3 most bytes per level
-- Returns: per level, in KEYS order: {length, markers, first-seen ms of an unstamped head or '', task1, task2, ...}
local WAKE = 'gopherq:wake'
local now, most, budget = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {'default', 'high', 'low'}

local function stamped(raw)
  return string.find(raw, '"created_at"', 1, true) or string.find(raw, '"ready_at"', 1, true)
    or string.find(raw, '"eta"', 1, true)
end

-- When the inspection first saw `head` at the front of level `field` (ms), recording it now if it is new there.
local function first_seen(field, head)
  local id = redis.sha1hex(string.sub(head, 1, 4096)) .. ':' .. #head
  local seen = redis.call('HGET', KEYS[4], field)
  if seen then
    local seen_id, at = string.match(seen, '^(.*):(%d+)$')
    if seen_id == id then return at end
  end
  redis.pcall('HSET', KEYS[4], field, id .. ':' .. now)
  return now
end

local out = {}
for level = 1, 3 do
  local key = KEYS[level]
  local length = redis.call('LLEN', key)
  local markers = 0
  local reply = {length, 0, ''}
  if length > 0 and level == 1 then
    -- A marker is pushed only into an empty plain list, so it sits near the head: the first 1000 entries suffice.
    markers = #redis.call('LPOS', key, WAKE, 'COUNT', 0, 'MAXLEN', 1000)
    reply[2] = markers
  end
  local bytes, index, taken = 0, 0, 0
  while taken < most and index < length and index < most + markers and (taken == 0 or bytes < budget) do
    local raw = redis.call('LINDEX', key, index)
    index = index + 1
    if not raw then break end
    if raw ~= WAKE then
      taken = taken + 1
      bytes = bytes + #raw
      reply[#reply + 1] = raw
      if taken == 1 and not stamped(raw) then reply[3] = first_seen(fields[level], raw) end
    end
  end
  if reply[3] == '' and redis.call('HEXISTS', KEYS[4], fields[level]) == 1 then
    redis.pcall('HDEL', KEYS[4], fields[level])
  end
  out[level] = reply
end
return out
