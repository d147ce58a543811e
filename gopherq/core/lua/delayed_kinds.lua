-- Read-only: why the tasks of a delayed set wait, for the inspection layer (core/inspect/waiting.py). A delayed
-- envelope is 'retrying' (a failed attempt waits for its next one), 'held' (flow control holds it back: rate,
-- concurrency or an open circuit) or 'scheduled' (an eta not reached). GoPherQ writes `"waiting_for":{"reason":...}`
-- just before the envelope's tail ("ready_at", "recoveries"; see Task.to_wire), so only the last TAIL bytes of each
-- member are searched; an envelope without it is a retry when it carries "last_error" (one written before
-- `waiting_for` existed), else scheduled. At most ARGV[2] members are looked at, soonest due first, in chunks.
-- KEYS: 1 delayed (zset)
-- ARGV: 1 mode ('count' or 'page'), 2 most members to look at, then for 'page': 3 kind, 4 offset, 5 limit
-- Returns: 'count': {retrying, scheduled, held, looked at};
--          'page': {{member, score, ...} of the kind from `offset` (at most `limit`), matches found, looked at}; a
--          page stops looking once it is full (its match count is then a lower bound)
local TAIL = 640
local MARK = '"waiting_for":{"reason":"'
local function kind_of(raw)
  local from = #raw - TAIL
  if from < 1 then from = 1 end
  local at = string.find(raw, MARK, from, true)
  if at then
    if string.sub(raw, at + #MARK, at + #MARK + 5) == 'retry"' then return 'retrying' end
    return 'held'
  end
  if string.find(raw, '"last_error":', 1, true) then return 'retrying' end
  return 'scheduled'
end
local mode, most = ARGV[1], tonumber(ARGV[2])
local want, skip, limit = ARGV[3], tonumber(ARGV[4] or '0'), tonumber(ARGV[5] or '0')
local counts = {retrying = 0, scheduled = 0, held = 0}
local items, matched, seen = {}, 0, 0
local chunk = 500
while seen < most do
  local asked = math.min(chunk, most - seen)
  local batch = redis.call('ZRANGE', KEYS[1], seen, seen + asked - 1, 'WITHSCORES')
  for j = 1, #batch, 2 do
    local kind = kind_of(batch[j])
    counts[kind] = counts[kind] + 1
    if mode == 'page' and kind == want then
      matched = matched + 1
      if matched > skip and #items < limit * 2 then
        items[#items + 1] = batch[j]
        items[#items + 1] = batch[j + 1]
      end
    end
  end
  seen = seen + #batch / 2
  if #batch / 2 < asked then break end
  if mode == 'page' and #items == limit * 2 then break end  -- the page is full: no need to look further
end
if mode == 'page' then return {items, matched, seen} end
return {counts.retrying, counts.scheduled, counts.held, seen}
